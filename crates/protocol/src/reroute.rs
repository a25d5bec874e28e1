//! What crosses the control plane when a stage is rescaled: the routing history an upstream
//! task is started with, the switch it is asked to make, and the point at which it made it.
//!
//! A rescale is two-phase. The leader asks every upstream task of the stage to switch to a
//! new key-group map (`Command::Reroute`); each records the point it
//! reached ([`SwitchPoint`]: outputs routed so far, tuples sent to each downstream task),
//! holds back the outputs whose group moves, and reports the point. Once the leader has made
//! every point durable it confirms the switch (held outputs go by the new map) or, if an
//! upstream task failed before its point was durable, aborts it (they go by the old map).
//! Nothing is ever routed by a map before the point it starts from is durable, so a replay
//! routes every output as the first run did.

use crate::model::groups::{GroupMap, RouteStep};
use serde::{Deserialize, Serialize};

/// Where an upstream task switched maps: how many outputs it had routed, and how many tuples
/// it had sent to each downstream task (indexed by position) by then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchPoint {
    /// Outputs routed before the switch.
    pub outputs: u64,
    /// Tuples sent to each downstream task before the switch.
    pub sent: Vec<u64>,
}

/// An upstream task's answer to a reroute: the version it switched to and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchReport {
    /// The downstream stage's routing version.
    pub version: u32,
    /// Where the task switched.
    pub point: SwitchPoint,
}

/// How a task's outputs pick their downstream task over its life: the maps it switched to,
/// from the output each took effect. (A switch that was never made durable is aborted when
/// its task fails, so a new attempt never inherits one half made.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRouting {
    /// The maps in force, by output number (empty: groups dealt evenly over the
    /// downstream tasks).
    #[serde(default)]
    pub steps: Vec<RouteStep>,
}

/// A switch an upstream task is asked to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRoute {
    /// The downstream stage's routing version.
    pub version: u32,
    /// The new map.
    pub map: GroupMap,
}
