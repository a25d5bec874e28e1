//! A job's `scaling` list: each rescale its core decided, when, why, and how it ended, with
//! the time the move took as the leader saw it (the core has no clock).

use crate::coordinator::{ScaleNote, ScalePhase};
use crate::protocol::control::ScaleInfo;
use std::time::SystemTime;

/// Rescales kept per job (the oldest go first).
const KEPT: usize = 200;

/// Records one step of a rescale in `list`.
pub fn record(list: &mut Vec<ScaleInfo>, note: &ScaleNote) {
    let now = crate::job::ms_since_epoch(SystemTime::now());
    let open = list
        .iter_mut()
        .rev()
        .find(|s| s.stage == note.stage && s.outcome == "in-progress");
    match (&note.phase, open) {
        (ScalePhase::Done, Some(s)) => {
            s.outcome = "done".into();
            s.to = note.to;
            s.took_ms = Some(now.saturating_sub(s.time_ms));
        }
        (ScalePhase::Aborted(why), Some(s)) => {
            s.outcome = "aborted".into();
            s.cause = Some(why.clone());
            s.took_ms = Some(now.saturating_sub(s.time_ms));
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
        }
        // The end of a rescale this leader did not see start (it was resumed).
        (_, None) => {}
    }
}
