//! RainStorm: a distributed stream-processing engine. Pipelines of operators (built in, or
//! executables in any language) over a stream of lines, spread over a leader and workers,
//! exactly once. See `docs/architecture.md` for the map of crates and modules.
//!
//! Each layer is a crate of its own (`crates/`), so a layer cannot import one above it:
//! `model` ← `protocol` ← `dataplane` ← `store` ← `runtime` ← `worker`; `model` ← `protocol` ←
//! `coordinator` ← `leader` (with `store`); this crate holds the command line and re-exports
//! every layer under its name.

#![warn(missing_docs)]

pub mod cli;

pub use rainstorm_coordinator as coordinator;
pub use rainstorm_dataplane as dataplane;
pub use rainstorm_leader as leader;
pub use rainstorm_model as model;
pub use rainstorm_protocol as protocol;
pub use rainstorm_runtime as runtime;
pub use rainstorm_store as store;
pub use rainstorm_worker as worker;
