//! A job's `scaling` list: each rescale its core decided, when, why, and how it ended, with
//! the time the move took as the leader saw it (the core has no clock); and how many ended
//! each way, which `/metrics` counts.

use crate::coordinator::{Action, ScaleNote, ScalePhase};
use crate::job::Scaling;
use crate::model::ids::{JobId, TaskKey};
use crate::protocol::control::Command;
use crate::protocol::control::ScaleInfo;
use crate::state::State;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Rescales kept per job (the oldest go first).
const KEPT: usize = 200;

/// Records what a job's core decided about its tasks' key groups, under the lock its decision
/// was made under: which tasks stand by (their slots are free at once for the next decision
/// of any job) and the steps of its rescales.
pub fn decided(st: &mut State, job: &JobId, action: &Action) {
    match action {
        Action::Standby(set) => {
            for (k, t) in st.tasks.iter_mut().filter(|(k, _)| &k.job == job) {
                t.standby = set.contains(&k.pos);
            }
        }
        Action::Scaling(note) => {
            if let Some(j) = st.jobs.get_mut(job) {
                j.scaling.record(note);
            }
        }
        _ => {}
    }
}

impl Scaling {
    /// A job's list as an earlier leader recorded it, its ended rescales counted again. A
    /// rescale still in progress stays open if the job carries on (`running`: its end, if the
    /// resumed core reports one, closes it); in a job that ended it is aborted.
    pub fn restored(mut list: Vec<ScaleInfo>, running: bool) -> Scaling {
        let over = list.len().saturating_sub(KEPT);
        list.drain(..over);
        let mut ended = BTreeMap::new();
        for s in &mut list {
            if s.outcome == "in-progress" && !running {
                s.outcome = "aborted".into();
                s.cause = Some("the leader restarted while it was under way".into());
            }
            let outcome = match s.outcome.as_str() {
                "done" => "done",
                "aborted" => "aborted",
                "refused" => "refused",
                _ => continue,
            };
            *ended.entry((s.stage, outcome)).or_default() += 1;
        }
        Scaling { list, ended }
    }

    /// Records one step of a rescale.
    pub fn record(&mut self, note: &ScaleNote) {
        let now = crate::job::ms_since_epoch(SystemTime::now());
        let ended = self.step(note, now);
        if let Some(outcome) = ended {
            *self.ended.entry((note.stage, outcome)).or_default() += 1;
        }
    }

    /// Puts one step in the list at time `now`; returns the outcome if it ended a rescale.
    fn step(&mut self, note: &ScaleNote, now: u64) -> Option<&'static str> {
        let list = &mut self.list;
        let open = list
            .iter_mut()
            .rev()
            .find(|s| s.stage == note.stage && s.outcome == "in-progress");
        let (open, ended) = match (&note.phase, open) {
            (ScalePhase::Done, Some(s)) => {
                s.to = note.to;
                (s, "done")
            }
            (ScalePhase::Aborted(why), Some(s)) => {
                s.cause = Some(why.clone());
                (s, "aborted")
            }
            (ScalePhase::Started | ScalePhase::Refused(_), _) => {
                let (outcome, cause) = match &note.phase {
                    ScalePhase::Refused(why) => ("refused", Some(why.clone())),
                    _ => ("in-progress", None),
                };
                list.push(ScaleInfo {
                    time_ms: now,
                    stage: note.stage,
                    from: note.from,
                    to: note.to,
                    rate: note.rate.map(|r| (r * 10.0).round() / 10.0),
                    reason: note.reason.clone(),
                    outcome: outcome.into(),
                    cause,
                    took_ms: None,
                });
                if list.len() > KEPT {
                    list.remove(0);
                }
                return (outcome == "refused").then_some(outcome);
            }
            // The end of a rescale this leader did not see start (it was resumed).
            (_, None) => return None,
        };
        open.outcome = ended.into();
        open.took_ms = Some(now.saturating_sub(open.time_ms));
        Some(ended)
    }
}

/// Queues a rescale's commands for the workers: a switch of an upstream task's outputs, the
/// verdict on one, a stage's routing for the tasks that take key groups over.
pub fn command(st: &mut State, job: &JobId, action: Action) {
    let key = |pos| TaskKey {
        job: job.clone(),
        pos,
    };
    match action {
        Action::Reroute {
            worker,
            pos,
            attempt,
            route,
        } => {
            let key = key(pos);
            st.command(
                &worker,
                Command::Reroute {
                    key,
                    attempt,
                    route,
                },
            );
        }
        Action::Rerouted {
            worker,
            pos,
            attempt,
            version,
            confirm,
        } => {
            let key = key(pos);
            let cmd = Command::Rerouted {
                key,
                attempt,
                version,
                confirm,
            };
            st.command(&worker, cmd);
        }
        Action::Inbound {
            workers,
            stage,
            routing,
        } => {
            for w in workers {
                let (job, routing) = (job.clone(), routing.clone());
                st.command(
                    &w,
                    Command::Inbound {
                        job,
                        stage,
                        routing,
                    },
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
