//! RainStorm: a distributed stream-processing engine. Pipelines of operators (built in, or
//! executables in any language) over a stream of lines, spread over a leader and workers,
//! exactly once. See `docs/architecture.md` for the map of modules.
//!
//! The modules are layers that import one way only:
//! [`model`] ← [`protocol`] ← [`dataplane`] ← [`runtime`] ← [`leader`] | [`worker`] ← [`cli`],
//! with [`coordinator`] (the leader's decisions, without I/O) between [`protocol`] and [`leader`].

#![warn(missing_docs)]

pub mod cli;
pub mod coordinator;
pub mod dataplane;
pub mod leader;
pub mod model;
pub mod protocol;
pub mod runtime;
pub mod worker;
