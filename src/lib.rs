//! RainStorm: a distributed stream-processing engine. Pipelines of operators (built in, or
//! executables in any language) over a stream of lines, spread over a leader and workers,
//! exactly once. See `docs/architecture.md` for the map of modules.

#![warn(missing_docs)]

pub mod client;
pub mod data;
pub mod embedded;
pub mod ids;
pub mod leader;
pub mod log;
pub mod net;
pub mod ops;
pub mod proto;
pub mod spec;
pub mod store;
pub mod task;
pub mod tuple;
pub mod wire;
pub mod worker;
