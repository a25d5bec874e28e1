//! Commands cross the control plane as JSON, inside a tagged enum: what goes in comes out.

use rainstorm_model::groups::GroupMap;
use rainstorm_model::ids::JobId;
use rainstorm_protocol::control::Command;
use rainstorm_protocol::reroute::SwitchPoint;
use rainstorm_protocol::routing::StageRouting;

#[test]
fn a_routing_with_switch_points_crosses_the_control_plane_in_a_command() {
    let mut r = StageRouting::starting(GroupMap::even(1), 0);
    r.begin(GroupMap::even(2));
    if let Some(v) = r.pending_mut() {
        v.at.insert(
            3,
            SwitchPoint {
                outputs: 9,
                sent: vec![4, 5],
            },
        );
        v.done = true;
    }
    let cmd = Command::Inbound {
        job: JobId("j".into()),
        stage: 2,
        routing: r.clone(),
    };
    let text = serde_json::to_string(&cmd).unwrap();
    match serde_json::from_str::<Command>(&text) {
        Ok(Command::Inbound { routing, .. }) => assert_eq!(routing, r),
        other => panic!("{other:?} from {text}"),
    }
}
