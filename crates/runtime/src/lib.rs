//! What runs a task attempt on a worker: the attempt lifecycle, built-in and executable
//! operators, the source and the sink, the input log and the store it lives in.

#![warn(missing_docs)]

use rainstorm_dataplane as dataplane;
use rainstorm_model as model;
use rainstorm_protocol as protocol;

pub mod builtin;
pub mod commit_clock;
pub mod env;
pub mod exec;
pub mod links;
pub mod sink;
pub mod source;
pub mod task;

pub use rainstorm_store::{client, fetch, log, marker, opcache, reach, seal, store};

/// The fault-injecting store of the tests (it lives with them).
#[cfg(test)]
#[path = "../../../tests/support/faulty_store.rs"]
mod faulty;
