//! Adoption: a restarted leader resumes a job from its durable placement, expecting every
//! task back from its worker, and takes back the attempts a rejoining worker reports — after
//! a leader restart, or after the worker was declared dead and learned it.

use super::event::{Action, Cluster, Outcome, Reported, Timer};
use super::job::{CoreTask, JobCore};
use super::placement::Placement;
use super::record::RunState;
use crate::model::ids::{TaskPos, WorkerId};
use crate::model::spec::StageRole;
use crate::protocol::control::TaskState;
use std::collections::BTreeSet;
use tracing::info;

impl JobCore {
    /// Takes over a job an earlier leader ran: its epoch and placement as recorded, every
    /// task expected back from its worker (adopted when the worker rejoins, lost if it has
    /// not within `adopt_after`).
    pub(super) fn resume(&mut self, run: RunState, out: &mut Vec<Action>) -> Result<(), Outcome> {
        // A placement recorded before sources and sinks ran on workers has them on no worker.
        if let Some(t) = run.tasks.iter().find(|t| {
            t.worker.is_none() && !matches!(self.spec.role_of(t.pos.stage), StageRole::Operator(_))
        }) {
            return Err(Outcome::Failed(format!(
                "task {} was placed by a leader that ran sources and sinks itself; resubmit the job",
                t.pos
            )));
        }
        self.epoch = run.epoch;
        self.routing = run.routing.clone();
        self.handed = run.handed.iter().copied().collect();
        // Placed by the earlier leader: a later look for capacity places only waiting tasks.
        self.placed = true;
        self.placement = Placement::restored(
            run.version,
            run.tasks.iter().map(|t| (t.pos, t.dest.clone())),
        );
        for t in run.tasks {
            let Some(worker) = t.worker else { continue };
            let state = if t.dest.finished {
                TaskState::Finished
            } else {
                TaskState::Starting
            };
            self.tasks.insert(
                t.pos,
                CoreTask {
                    worker: worker.clone(),
                    attempt: t.dest.attempt,
                    state,
                    done: false,
                    adopting: !t.dest.finished,
                },
            );
            out.push(Action::Assign {
                pos: t.pos,
                worker,
                attempt: t.dest.attempt,
                state,
            });
        }
        // Upstream tasks may hold outputs for a verdict the earlier leader never gave.
        self.abort_all_switches("the leader restarted", out);
        out.push(Action::Persist(self.run_state()));
        out.push(self.standby_action());
        out.push(Action::SetTimer(Timer::Adopt, self.cfg.adopt_after));
        self.arm_timeout(out);
        // A sink that finished before the leader went away reports nothing more: the job
        // drains from here as it would have from that report.
        let sink = TaskPos {
            stage: self.spec.sink_stage(),
            index: 0,
        };
        if self
            .tasks
            .get(&sink)
            .is_some_and(|t| t.state == TaskState::Finished)
        {
            self.sink_done = true;
            out.push(Action::SetTimer(Timer::Drain, self.cfg.drain_after));
        }
        info!(job = %self.id, epoch = self.epoch, "resuming a job the previous leader ran");
        Ok(())
    }

    /// A worker rejoined: attempts it reports that the job still counts on carry on (an end
    /// it reports counts as if it had just happened); any other it still runs is stopped; a
    /// task expected back from it that it does not report was lost while the leader was away.
    /// It also gets the job's placement.
    pub(super) fn rejoined(
        &mut self,
        worker: WorkerId,
        reports: Vec<Reported>,
        cluster: &Cluster,
        out: &mut Vec<Action>,
    ) -> Result<(), Outcome> {
        let mut seen = BTreeSet::new();
        let mut ends = Vec::new();
        for r in reports {
            let current = self
                .tasks
                .get(&r.pos)
                .is_some_and(|t| t.attempt == r.attempt && t.worker == worker);
            if !current {
                if !r.state.is_terminal() {
                    out.push(Action::Stop {
                        worker: worker.clone(),
                        pos: r.pos,
                        attempt: r.attempt,
                    });
                }
                continue;
            }
            seen.insert(r.pos);
            if let Some(t) = self.tasks.get_mut(&r.pos) {
                t.adopting = false;
            }
            if r.state.is_terminal() {
                ends.push(r);
            }
        }
        let gone: Vec<(TaskPos, u32)> = self
            .tasks
            .iter()
            .filter(|(p, t)| t.worker == worker && t.adopting && !seen.contains(*p))
            .map(|(p, t)| (*p, t.attempt))
            .collect();
        if self.tasks.values().any(|t| t.worker == worker) {
            out.push(Action::Routes {
                workers: vec![worker.clone()],
                version: self.placement.version(),
                routes: self.placement.list(),
            });
        }
        self.resend_verdicts(&worker, out);
        for r in ends {
            self.ended_attempt(r.pos, r.attempt, r.state, r.error, cluster, out)?;
        }
        let cause = "the task was gone when its worker rejoined the leader";
        self.fail_each(gone, cause, cluster, out)
    }
}
