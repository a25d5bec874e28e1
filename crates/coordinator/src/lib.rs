//! The coordinator core: every decision of a job's lifecycle, as code without I/O.
//!
//! A job's [`JobCore`] takes one [`Input`] at a time — start, resume after a leader restart,
//! a task's end, a lost or rejoining worker, a stalled task, a timer, a cancel — with a
//! [`Cluster`] view of the live workers, and returns the [`Action`]s that carry its decision
//! out: record this task's new attempt, persist the placement, start, stop, send routes, set a
//! timer, end the job. It holds no lock, reads no clock and touches no network or store.
//!
//! Two executors run the same core: the leader's job driver (`leader::driver`), which turns
//! actions into durable records and worker commands, and the deterministic simulation
//! (`tests/sim.rs`), which turns them into simulated tasks and route pushes under injected
//! faults. What the simulation proves is therefore the leader's own decision logic.
//!
//! The monitor's sweeps (which workers are silent, which tasks are stalled) are pure
//! functions too ([`sweep`]); what they find reaches each job's core as an input.

#![warn(missing_docs)]

use rainstorm_model as model;
use rainstorm_protocol as protocol;

mod adopt;
pub mod autoscale;
mod autoscaled;
pub mod capacity;
mod config;
mod event;
mod handover;
mod job;
pub mod placement;
mod readout;
pub mod record;
mod recover;
pub mod rescale;
mod restart_scale;
pub use protocol::routing;
mod standby;
mod start;
pub mod sweep;
mod switch;

pub use autoscale::{ScaleDecision, Scaler, StageLoad};
pub use config::CoreConfig;
pub use event::{Action, Cluster, Input, Outcome, Reported, ScaleNote, ScalePhase, Timer};
pub use job::{CoreTask, JobCore};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rescale;
