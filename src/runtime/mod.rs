//! What runs a task attempt on a worker: the attempt lifecycle, built-in and executable
//! operators, the source and the sink, the input log and the store it lives in.

pub mod builtin;
pub mod exec;
pub mod fetch;
pub mod links;
pub mod log;
pub mod opcache;
pub mod sink;
pub mod source;
pub mod store;
pub mod task;
