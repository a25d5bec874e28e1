//! The workers' side of capacity: the slots running jobs hold on each worker (derived from
//! task records, never counted separately, so no exit path can leak one), and workers
//! leaving — draining, then left — with what each running job's core is told.

use super::state::State;
use crate::coordinator::Input;
use crate::model::ids::{JobId, WorkerId};
use crate::protocol::control::WorkerState;
use std::time::Instant;
use tokio::sync::mpsc;

impl State {
    /// Slots of `worker` the tasks of running jobs hold (those of `except` not counted):
    /// derived from task records, so a slot is free again however its task ended.
    pub fn slots_held(&self, worker: &WorkerId, except: Option<&JobId>) -> u32 {
        self.tasks
            .iter()
            .filter(|(k, t)| {
                &t.worker == worker && t.state.on_worker() && !t.standby && Some(&k.job) != except
            })
            .filter(|(k, _)| {
                self.jobs.get(&k.job).is_some_and(|j| {
                    j.events().is_some()
                        && crate::coordinator::capacity::takes_slot(&j.spec, k.pos.stage)
                })
            })
            .count() as u32
    }

    /// A worker starts draining: it takes no new task, and every running job is told so its
    /// core moves the tasks it has there. Nothing for a worker not alive or already draining.
    pub fn drain_worker(&mut self, id: &WorkerId) -> Vec<(mpsc::Sender<Input>, Input)> {
        match self.workers.get_mut(id) {
            Some(w) if w.state == WorkerState::Alive && !w.draining => w.draining = true,
            _ => return Vec::new(),
        }
        self.each_running_job(|| Input::WorkerDraining { worker: id.clone() })
    }

    /// A drained worker left: it is gone like a dead one (whatever it still ran is lost),
    /// but listed as `left`.
    pub fn worker_left(&mut self, id: &WorkerId) -> Vec<(mpsc::Sender<Input>, Input)> {
        let drained = match self.workers.get_mut(id) {
            Some(w) if w.state == WorkerState::Alive => {
                w.state = WorkerState::Dead;
                w.left = true;
                w.dead_since = Some(Instant::now());
                w.draining
            }
            _ => return Vec::new(),
        };
        // A drain that timed out leaves tasks behind: they move, as its other moves did.
        match drained {
            true => self.each_running_job(|| Input::DrainEnded { worker: id.clone() }),
            false => self.each_running_job(|| Input::WorkerLost { worker: id.clone() }),
        }
    }

    /// One input for every running job's core.
    fn each_running_job(&self, input: impl Fn() -> Input) -> Vec<(mpsc::Sender<Input>, Input)> {
        self.jobs
            .values()
            .filter_map(|j| j.events().cloned())
            .map(|tx| (tx, input()))
            .collect()
    }
}
