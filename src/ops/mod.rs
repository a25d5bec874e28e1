//! Operators: the built-ins that run inside a worker, the executable-process runner, and the CSV
//! line handling they share.

pub mod builtin;
pub mod csvline;
pub mod exec;
