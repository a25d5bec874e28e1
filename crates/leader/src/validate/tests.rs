//! Unit tests of the link rule's cluster half.

use super::*;
use crate::job::JobRec;
use crate::model::ids::JobId;
use crate::model::spec::StageSpec;
use crate::protocol::api::JobStatus;
use crate::protocol::auth::Identity;

fn job(tasks: &[u32]) -> JobSpec {
    JobSpec::sample(
        tasks
            .iter()
            .map(|&t| StageSpec {
                tasks: t,
                operator: OperatorSpec::Builtin {
                    name: "identity".into(),
                    args: vec![],
                },
                autoscale: Default::default(),
                stateless: false,
            })
            .collect(),
    )
}

fn worker(st: &mut State, id: &str, conns: u64, alive: bool) {
    let key = Identity::from_seed([7; 32]).unwrap().public();
    let id = WorkerId(id.into());
    st.add_worker(id.clone(), "127.0.0.1:1".into(), key, None, conns, 8);
    if let Some(w) = st.workers.get_mut(&id) {
        // Its registration was used (it polled): it counts.
        w.heard = true;
    }
    if !alive {
        if let Some(w) = st.workers.get_mut(&id) {
            w.state = WorkerState::Dead;
        }
    }
}

#[test]
fn the_room_is_the_smallest_live_worker_less_the_running_jobs() {
    let mut st = State::default();
    assert_eq!(link_room(&st), None, "no live worker, no rule");
    worker(&mut st, "w1", 4096, true);
    worker(&mut st, "w2", 1000, true);
    worker(&mut st, "w3", 10, false);
    // A registration never used does not count, however small its cap.
    st.add_worker(
        WorkerId("w4".into()),
        "127.0.0.1:4".into(),
        Identity::from_seed([8; 32]).unwrap().public(),
        None,
        1,
        8,
    );
    // A running job counts whole (3 + 9 + 3); an ended one not at all.
    st.add_job(JobId("job-1".into()), JobRec::detached(job(&[3, 3])));
    let mut ended = JobRec::detached(job(&[50, 50]));
    ended.end(JobStatus::Failed, None, std::time::SystemTime::now());
    st.add_job(JobId("job-2".into()), ended);
    let room = link_room(&st).unwrap();
    assert_eq!(
        room,
        LinkRoom {
            cap: 1000,
            worker: WorkerId("w2".into()),
            used: 15
        }
    );
    // 985 links are free: 30 + 30·31 + 31 = 991 is not, 29 + 29·31 + 31 = 959 is.
    assert!(links_fit(&job(&[29, 31]), Some(&room)).is_empty());
    let p = links_fit(&job(&[30, 31]), Some(&room));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].field.as_str(), p[0].value.as_str()),
        ("stages[*].tasks", "30, 31")
    );
    for part in [
        "991 data links",
        "room for 985 more",
        "(1000, worker w2",
        "hold 15",
    ] {
        assert!(p[0].message.contains(part), "{part:?} missing: {}", p[0]);
    }
    assert!(links_fit(&job(&[256]), None).is_empty());
}
