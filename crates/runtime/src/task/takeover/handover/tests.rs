//! The gaining side of a handover against a store that lands the losing task's two writes (its
//! move's state, then its final state) between the gaining task's two looks: the order in
//! which a real-process run restarted a running count from 1. The simulation gives every
//! store operation the same latency, which never makes that order.

use super::*;
use crate::faulty::FaultyStore;
use crate::model::groups::GroupMap;
use crate::model::ids::JobId;
use crate::model::partition::Partition;
use crate::protocol::routing::Inbound;
use crate::store::Store;
use crate::task::{TaskEnv, TaskStatus};
use std::sync::Arc;

fn key(index: u32) -> TaskKey {
    TaskKey {
        job: JobId("handover".into()),
        pos: TaskPos { stage: 2, index },
    }
}

fn json(s: &GroupState) -> Vec<u8> {
    serde_json::to_vec(s).unwrap()
}

#[tokio::test]
async fn a_move_s_state_written_between_the_gaining_task_s_two_looks_is_taken() {
    let faulty = Arc::new(FaultyStore::default());
    let env = TaskEnv {
        store: Store::objects(faulty.clone(), "faulty"),
        ..crate::task::tests::env(Default::default(), Arc::new(crate::exec::OsLauncher))
    };
    // Two tasks shrink to one: task 0 gains every group task 1 held.
    let mut routing = StageRouting::starting(GroupMap::even(2), 1);
    let version = routing.begin(GroupMap(vec![0; KEY_GROUPS]));
    let inbound = Inbound {
        partition: Partition::Key,
        routing,
    };
    let status = TaskStatus::default();
    let gaining = Takeover::new(&env, key(0), (&inbound, 0, 0), &status, None, (true, false));

    // Task 1 hands `k1` over with the move, then finishes holding nothing of it.
    let moved = GroupState {
        format: FORMAT,
        version,
        from: 1,
        groups: (0..KEY_GROUPS as u32).filter(|g| g % 2 == 1).collect(),
        counts: vec![("k1".into(), 59)],
    };
    let last = GroupState {
        format: FORMAT,
        version,
        from: 1,
        groups: Vec::new(),
        counts: Vec::new(),
    };
    let moved_at = handover_path(&key(1), version);
    let writes = vec![
        (moved_at.clone(), json(&moved)),
        (final_path(&key(1), 0), json(&last)),
    ];
    *faulty.after_miss.lock().unwrap() = Some((moved_at, writes));

    match gaining.read_handed(1, 1).await.unwrap() {
        Found::Moved(s) => assert_eq!(s, moved),
        Found::Final(s) => panic!(
            "took task 1's final state ({} entries), which no longer holds the groups it handed over",
            s.counts.len()
        ),
    }
}
