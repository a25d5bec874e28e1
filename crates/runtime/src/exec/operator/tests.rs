use super::*;
use crate::dataplane::meter::SendMeter;
use crate::dataplane::reroute::Switchboard;
use crate::exec::{Launch, OsLauncher};
use crate::model::partition::Partition;
use std::time::Duration;
use tokio::sync::mpsc;

fn router() -> (Router, mpsc::Receiver<crate::dataplane::link::LinkMsg>) {
    let (tx, rx) = mpsc::channel(1024);
    let router = Router::new(
        vec![tx],
        Partition::Key,
        Arc::new(Switchboard::new(Vec::new(), 1, false)),
        Default::default(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(SendMeter::default()),
    );
    (router, rx)
}

/// `head -n 5` fed 1,500 lines of 150 bytes (more than its pipe holds, less than the task
/// buffers) with no pause in between, then finished: it exits 0 once it has its lines, and
/// the rest is discarded. The task wedged there, writing the rest into a pipe whose only
/// reader left was its own counter of unread input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_that_exits_0_with_input_still_buffered_finishes() {
    let args = ["-n".to_string(), "5".to_string()];
    let launched = OsLauncher
        .launch(std::path::Path::new("head"), &args)
        .unwrap();
    let (router, mut out) = router();
    let drained = tokio::spawn(async move { while out.recv().await.is_some() {} });
    let discarded = Arc::new(AtomicU64::new(0));
    let working = Arc::new(Stopwatch::default());
    let mut op = ExecOperator::counting(launched, router, (discarded.clone(), working.clone()));
    let value = "v".repeat(140);
    for i in 0..1_500 {
        op.feed(&Tuple::new(format!("k{i:05}"), value.as_str()), 1)
            .await
            .unwrap();
    }
    let finished = tokio::time::timeout(Duration::from_secs(60), op.finish()).await;
    let router = finished
        .expect("the task wedged finishing its operator")
        .unwrap();
    drop(router);
    drained.await.unwrap();
    let lost = discarded.load(Ordering::Relaxed);
    assert!((1..=1_495).contains(&lost), "{lost} discarded");
    assert!(!working.is_running());
}
