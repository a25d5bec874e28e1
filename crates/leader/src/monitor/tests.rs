//! Unit tests of `monitor`: which dead workers are forgotten.

use super::*;
use crate::job::JobRec;
use crate::model::ids::TaskPos;
use crate::model::spec::{JobSpec, OperatorSpec, StageSpec};
use crate::protocol::auth::PeerKey;
use crate::protocol::control::TaskState;
use crate::state::TaskRec;

fn w(n: u32) -> WorkerId {
    WorkerId(format!("w{n}"))
}

/// A worker that is dead since `ago` before `now` (alive if `None`), heard from or not.
fn worker(st: &mut State, n: u32, heard: bool, dead: Option<Duration>, now: Instant) {
    let key = PeerKey::from_slice(&[n as u8; 32]).unwrap();
    st.add_worker(w(n), format!("127.0.0.1:{n}"), key, None, 4096, 8);
    st.known_workers.insert(w(n), key);
    let rec = st.workers.get_mut(&w(n)).unwrap();
    rec.heard = heard;
    if let Some(ago) = dead {
        rec.state = WorkerState::Dead;
        rec.dead_since = Some(now - ago);
    }
}

#[test]
fn unused_registrations_go_at_once_dead_workers_after_a_while_never_one_a_running_task_is_on() {
    let now = Instant::now() + Duration::from_secs(3600);
    let after = Duration::from_secs(300);
    let mut st = State::default();
    worker(&mut st, 1, true, None, now); // alive
    worker(&mut st, 2, false, Some(Duration::ZERO), now); // never used, just dead
    worker(&mut st, 3, true, Some(Duration::from_secs(10)), now); // dead a little while
    worker(&mut st, 4, true, Some(Duration::from_secs(600)), now); // dead long ago
    worker(&mut st, 5, true, Some(Duration::from_secs(600)), now); // ... with a task on it
    worker(&mut st, 6, false, Some(Duration::ZERO), now); // never used, with a task on it
    worker(&mut st, 7, true, Some(Duration::from_secs(600)), now); // an ended job's task only
    let spec = JobSpec::sample(vec![StageSpec {
        tasks: 2,
        operator: OperatorSpec::Builtin {
            name: "identity".into(),
            args: vec![],
        },
        autoscale: Default::default(),
        stateless: false,
    }]);
    let running = JobId("job-1".into());
    st.add_job(running.clone(), JobRec::detached(spec.clone()));
    let mut ended = JobRec::detached(spec.clone());
    ended.end(
        crate::protocol::control::JobStatus::Succeeded,
        None,
        std::time::SystemTime::now(),
    );
    st.add_job(JobId("job-2".into()), ended);
    for (job, index, on) in [("job-1", 0, 5), ("job-1", 1, 6), ("job-2", 0, 7)] {
        let key = TaskKey {
            job: JobId(job.into()),
            pos: TaskPos { stage: 1, index },
        };
        let t = TaskRec::placed(w(on), 0, TaskState::Failed, &spec, 1);
        st.tasks.insert(key, t);
    }
    let unused = forget_dead_workers(&mut st, now, after);
    assert_eq!(unused, [w(2)]);
    let left: Vec<&str> = st.workers.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(left, ["w1", "w3", "w5", "w6"]);
    // Only the unused registration's identity is forgotten: a worker that ran can rejoin.
    assert!(!st.known_workers.contains_key(&w(2)));
    assert!(st.known_workers.contains_key(&w(4)) && st.known_workers.contains_key(&w(7)));
    // Once its job no longer runs, a dead worker's tasks keep it no longer.
    st.jobs.remove(&running);
    let unused = forget_dead_workers(&mut st, now, after);
    assert_eq!(unused, [w(6)]);
    let left: Vec<&str> = st.workers.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(left, ["w1", "w3"]);
}
