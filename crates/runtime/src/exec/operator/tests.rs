//! What an executable's output is stamped with, for the sink's end-to-end latency.

use super::*;
use crate::dataplane::link::LinkMsg;
use crate::dataplane::meter::SendMeter;
use crate::dataplane::reroute::Switchboard;
use crate::exec::{Launch, OsLauncher};
use crate::model::partition::Partition;
use std::path::Path;
use tokio::sync::mpsc;

/// Inputs fed together reach the process together, so whatever it writes first may derive
/// from the oldest of them: it is charged that one's wait, not the newest one's (which would
/// leave out the time the older ones queued, and understate the latency).
#[tokio::test]
async fn an_output_is_charged_the_wait_of_the_oldest_input_fed_before_it() {
    let launched = OsLauncher.launch(Path::new("cat"), &[]).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let router = Router::new(
        vec![tx],
        Partition::Key,
        Arc::new(Switchboard::new(Vec::new(), 1, false)),
        Default::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    );
    let mut op = ExecOperator::start(launched, router);
    for (i, emit_ns) in [100, 200, 300].into_iter().enumerate() {
        op.feed(&Tuple::new(format!("k{i}"), "v"), emit_ns)
            .await
            .unwrap();
    }
    // Until now the lines sat in the operator's stdin buffer: `cat` sees all three at once.
    op.idle().await.unwrap();
    let Some(LinkMsg::Batch(first)) = rx.recv().await else {
        panic!("no batch from the operator's output");
    };
    assert_eq!(first.emit_ns, 100, "the first output's stamp");
    op.abort().await;
}
