//! The store and what lives in it: objects (a local directory, any S3-compatible bucket, or the
//! leader's store API), input logs as fenced segments with their lineage, a job's output
//! assembled from its sink's log, and executables pinned by content hash (where an operator
//! may come from). Needs only the vocabulary (`model`) and the wire formats (`protocol`), so
//! the leader reads logs and writes outputs without the task runtime.

#![warn(missing_docs)]

use rainstorm_model as model;
use rainstorm_protocol as protocol;

pub mod client;
pub mod fetch;
pub mod log;
pub mod marker;
pub mod opcache;
pub mod output;
pub mod reach;
pub mod seal;
pub mod store;
