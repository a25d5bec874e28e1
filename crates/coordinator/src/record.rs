//! What a running job's coordinator keeps durable: its epoch and its placement (every task's
//! worker, address, attempt and whether it finished). The leader writes it before any change
//! of it takes effect, and a restarted leader resumes the job from it
//! ([`crate::Input::Resume`]).

use crate::model::ids::{TaskPos, WorkerId};
use crate::protocol::control::Dest;
use serde::{Deserialize, Serialize};

/// A running job's placement, written before any change of it takes effect (before a Start
/// or a Routes command leaves the leader), so a restarted leader never hands out an attempt
/// number or a placement version twice.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// The job epoch (at-least-once restarts bump it).
    pub epoch: u32,
    /// The placement version (workers apply only newer ones).
    pub version: u64,
    /// Every task, the source (stage 0) and the sink (stage K+1) included.
    pub tasks: Vec<PlacedTask>,
    /// The key-group maps of every stage that was rescaled, by stage.
    #[serde(default)]
    pub routing: std::collections::BTreeMap<u32, crate::routing::StageRouting>,
    /// The latest routing version each task reported its lost key groups' state handed over
    /// for (the state is in the store by then). A leader that takes over knows it, so a stage
    /// whose losing task has moved since need not wait for the new attempt to hand it over
    /// again before it may be rescaled (a probe's rescales were refused ~35 s after drains
    /// and leader restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handed: Vec<(TaskPos, u32)>,
}

/// One task of a running job's placement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlacedTask {
    /// Position.
    pub pos: TaskPos,
    /// The worker running it (none: the leader itself, for the source and the sink).
    pub worker: Option<WorkerId>,
    /// Where it runs: address, attempt, finished.
    pub dest: Dest,
}
