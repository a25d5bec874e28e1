//! The one place that builds a task's outgoing side: a link task per downstream task and the
//! router that partitions and batches into them. Tasks and the source both use it.

use crate::dataplane::link::{run_link, LinkEnd, LinkMsg, LinkSpec};
use crate::dataplane::meter::SendMeter;
use crate::dataplane::reroute::Switchboard;
use crate::dataplane::router::Router;
use crate::env::TaskEnv;
use crate::model::ids::{JobId, TaskPos};
use crate::model::partition::Partition;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Who sends, to how many downstream tasks, and how.
pub struct Outgoing {
    /// Job.
    pub job: JobId,
    /// The sending task.
    pub from: TaskPos,
    /// Its attempt.
    pub attempt: u32,
    /// Job epoch.
    pub epoch: u32,
    /// Downstream task count (stage `from.stage + 1`).
    pub downstream: u32,
    /// How outputs pick their key group.
    pub partition: Partition,
    /// Which downstream task owns each key group (and a switch in progress).
    pub board: Arc<Switchboard>,
    /// Re-send unacknowledged batches after a reconnect (all modes but at-most-once).
    pub resend: bool,
    /// Links keep serving after their end is acknowledged (the source; see `LinkSpec`).
    pub linger: bool,
    /// Told each link's index when its end of stream is first acknowledged.
    pub done: Option<mpsc::Sender<u32>>,
}

/// The running links of an outgoing side (the router that feeds them is handed out apart).
pub struct Links {
    /// The link tasks, joined by the owner.
    pub tasks: JoinSet<LinkEnd>,
    /// Stops every link.
    pub cancel: CancellationToken,
}

/// Spawns one link per downstream task (children of `cancel`) and the router over them, which
/// counts what it routes on `emitted` (tuples) and `meter` (bytes, waits for room).
pub fn spawn(
    env: &TaskEnv,
    out: Outgoing,
    emitted: Arc<AtomicU64>,
    meter: Arc<SendMeter>,
    cancel: &CancellationToken,
) -> (Router, Links) {
    let cancel = cancel.child_token();
    let mut tasks = JoinSet::new();
    let mut senders = Vec::with_capacity(out.downstream as usize);
    let mut settled = Vec::with_capacity(out.downstream as usize);
    for i in 0..out.downstream {
        let (tx, rx) = mpsc::channel::<LinkMsg>(env.cfg.queue_batches);
        senders.push(tx);
        let (held_tx, held_rx) = tokio::sync::watch::channel(0u64);
        settled.push(held_rx);
        let spec = LinkSpec {
            job: out.job.clone(),
            from: out.from,
            attempt: out.attempt,
            epoch: out.epoch,
            to: TaskPos {
                stage: out.from.stage + 1,
                index: i,
            },
            resend: out.resend,
            linger: out.linger,
            done: out.done.clone(),
            net: env.net.clone(),
            identity: env.identity.clone(),
            slots: env.slots.clone(),
            board: Some(out.board.clone()),
            settled: Some(held_tx),
            meter: Some(meter.clone()),
        };
        tasks.spawn(run_link(
            spec,
            env.cfg.clone(),
            rx,
            env.routes.watch(&out.job),
            cancel.clone(),
        ));
    }
    let router = Router::new(
        senders,
        out.partition,
        out.board,
        env.cfg.clone(),
        emitted,
        meter,
    )
    .with_settled(settled);
    (router, Links { tasks, cancel })
}

impl Links {
    /// Waits for every link to deliver its end of stream; the first that cannot says why.
    pub async fn drain(&mut self) -> Result<(), LinkEnd> {
        let mut outcome = Ok(());
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok(LinkEnd::Done) => {}
                Ok(other) => outcome = Err(other),
                Err(e) => {
                    tracing::warn!(error = %e, "link task panicked");
                    outcome = Err(LinkEnd::Cancelled);
                }
            }
        }
        outcome
    }

    /// Stops every link and waits for them.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
