//! The runtime of one task attempt on a worker: recover (exactly-once), then consume the inbox,
//! dedup, log, process, route; finish by draining — end of stream in, operator exit, end of
//! stream out and acknowledged. Every exit path returns exactly one [`TaskEnd`].

use crate::dataplane::inbound::{AckBoard, Inbound, Registry};
use crate::dataplane::input::{Accepted, InputState};
use crate::dataplane::link::{run_link, LinkEnd, LinkSpec};
use crate::dataplane::router::Router;
use crate::dataplane::routes::Routes;
use crate::dataplane::DataConfig;
use crate::model::ids::TaskPos;
use crate::model::spec::{Delivery, OperatorSpec};
use crate::model::tuple::Tuple;
use crate::protocol::control::{TaskAssignment, TaskState};
use crate::runtime::builtin::Builtin;
use crate::runtime::exec::{ExecError, ExecOperator};
use crate::runtime::log::{
    decode_segment, encode_batch_record, encode_record, recover_lineage, seal_segment,
    segment_path, LogError, LogRecord,
};
use crate::runtime::store::Store;
use bytes::BytesMut;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a task attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    /// Drained and acknowledged downstream.
    Finished,
    /// Failed, with the cause.
    Failed(String),
    /// Stopped by cancellation.
    Cancelled,
}

/// Live state of a task, read by heartbeats without touching the task.
#[derive(Default)]
pub struct TaskStatus {
    state: AtomicU8,
    /// Operator process id (0 = none).
    pub pid: AtomicU32,
    /// Tuples accepted.
    pub tuples_in: AtomicU64,
    /// Tuples emitted.
    pub tuples_out: Arc<AtomicU64>,
    /// Failure cause.
    pub error: Mutex<Option<String>>,
    /// Signalled when the state or pid changes (the worker announces a start on it).
    pub changed: tokio::sync::Notify,
}

impl TaskStatus {
    /// Current state.
    pub fn state(&self) -> TaskState {
        match self.state.load(Ordering::Relaxed) {
            0 => TaskState::Starting,
            1 => TaskState::Running,
            2 => TaskState::Finished,
            3 => TaskState::Failed,
            _ => TaskState::Cancelled,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: TaskState) {
        let v = match s {
            TaskState::Starting => 0,
            TaskState::Running => 1,
            TaskState::Finished => 2,
            TaskState::Failed => 3,
            TaskState::Cancelled => 4,
        };
        self.state.store(v, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Records the operator's process id.
    pub fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

/// What a task needs from its process.
#[derive(Clone)]
pub struct TaskEnv {
    /// Where tasks register to receive data.
    pub registry: Arc<Registry>,
    /// Where tasks find each other.
    pub routes: Arc<Routes>,
    /// Data-plane tunables.
    pub cfg: DataConfig,
    /// The store (logs).
    pub store: Store,
    /// Private scratch directory of this process (fetched files).
    pub work_dir: PathBuf,
}

enum Operator {
    Builtin(Builtin, Router, Vec<Tuple>),
    Exec(ExecOperator),
}

#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

impl From<ExecError> for Stop {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Closed => Stop::Cancelled,
            other => Stop::Failed(other.to_string()),
        }
    }
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        Stop::Failed(format!("input log: {e}"))
    }
}

impl Operator {
    async fn feed(&mut self, t: Tuple, emit_ns: u64) -> Result<(), Stop> {
        match self {
            Operator::Builtin(op, router, out) => {
                op.process(t, out);
                for t in out.drain(..) {
                    router.push(t, emit_ns).await.map_err(|_| Stop::Cancelled)?;
                }
                Ok(())
            }
            Operator::Exec(op) => Ok(op.feed(&t, emit_ns).await?),
        }
    }

    async fn idle(&mut self) -> Result<(), Stop> {
        match self {
            Operator::Builtin(_, router, _) => router.flush().await.map_err(|_| Stop::Cancelled),
            Operator::Exec(op) => Ok(op.idle().await?),
        }
    }

    async fn died(&mut self) -> Stop {
        match self {
            Operator::Builtin(..) => std::future::pending().await,
            Operator::Exec(op) => op.died().await.into(),
        }
    }

    async fn finish(self) -> Result<(), Stop> {
        let router = match self {
            Operator::Builtin(_, router, _) => router,
            Operator::Exec(op) => op.finish().await?,
        };
        router.finish().await.map_err(|_| Stop::Cancelled)
    }

    async fn abort(self) {
        if let Operator::Exec(op) = self {
            op.abort().await;
        }
    }
}

/// A unit of accepted input on its way through the log: its encoded record, the ack it
/// releases once durable, and the tuples to feed afterwards.
struct Logged {
    record: BytesMut,
    mark: (u32, u64, bool),
    tuples: Vec<Tuple>,
    emit_ns: u64,
}

/// Group commit of the input log: records queue while the previous segment is being written;
/// each segment write acknowledges everything it holds and only then releases its tuples to
/// the operator. So every output a task emits derives from durably logged input, and a
/// replacement that replays the log regenerates exactly what was emitted — whatever order
/// unlogged input arrives in after the crash.
async fn log_writer(
    env: TaskEnv,
    key: crate::model::ids::TaskKey,
    attempt: u32,
    acks: Arc<AckBoard>,
    mut rx: mpsc::Receiver<Logged>,
    feed: mpsc::Sender<Vec<(Vec<Tuple>, u64)>>,
) -> Result<(), LogError> {
    const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
    let mut n: u64 = 0;
    let mut body = BytesMut::new();
    while let Some(first) = rx.recv().await {
        body.clear();
        let mut marks = Vec::new();
        let mut released = Vec::new();
        let mut take = |l: Logged, body: &mut BytesMut| {
            body.extend_from_slice(&l.record);
            marks.push(l.mark);
            if !l.tuples.is_empty() {
                released.push((l.tuples, l.emit_ns));
            }
        };
        take(first, &mut body);
        let linger = tokio::time::Instant::now()
            + std::time::Duration::from_micros(env.cfg.log_linger_us as u64);
        while body.len() < SEGMENT_BYTES {
            match rx.try_recv() {
                Ok(l) => take(l, &mut body),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(linger, rx.recv()).await {
                        Ok(Some(l)) => take(l, &mut body),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let seg = seal_segment(&body, marks.len() as u32);
        env.store.put(&segment_path(&key, attempt, n), seg).await?;
        n += 1;
        for (from, upto, eos) in &marks {
            acks.set(*from, *upto, *eos);
        }
        if !released.is_empty() && feed.send(released).await.is_err() {
            // The feeder stopped: the task is ending; its caller reports why.
            return Ok(());
        }
    }
    Ok(())
}

/// Resolves the local executable for an operator path (fetching it from the store in cluster
/// mode into `ops_dir`).
pub async fn resolve_exec(
    store: &Store,
    a: &TaskAssignment,
    path: &str,
    ops_dir: &std::path::Path,
) -> Result<PathBuf, String> {
    let local = PathBuf::from(path);
    if a.paths == crate::model::spec::PathMode::Local || (local.is_absolute() && local.exists()) {
        return Ok(local);
    }
    let clean = crate::runtime::store::clean_path(path).map_err(|e| e.to_string())?;
    let target = ops_dir.join(&a.key.job.0).join(&clean);
    if !target.exists() {
        let data = store
            .get(&clean)
            .await
            .map_err(|e| format!("fetching operator: {e}"))?;
        let t = target.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            crate::runtime::store::write_atomic(&t, &data)?;
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("installing operator {}: {e}", target.display()))?;
    }
    Ok(target)
}

/// Runs one task attempt to its end.
pub async fn run_task(
    env: TaskEnv,
    a: TaskAssignment,
    exec_path: Option<PathBuf>,
    status: Arc<TaskStatus>,
    cancel: CancellationToken,
) -> TaskEnd {
    let key = a.key.clone();
    let (inbox, acks, registration) = env.registry.register(key.clone(), env.cfg.queue_batches);
    env.routes.set_many(&key.job, a.routes_version, &a.routes);
    let mut links = JoinSet::new();
    let link_cancel = cancel.child_token();
    let mut senders = Vec::new();
    for i in 0..a.downstream {
        let (tx, rx) = mpsc::channel(env.cfg.queue_batches);
        senders.push(tx);
        let spec = LinkSpec {
            job: key.job.clone(),
            from: key.pos,
            attempt: a.attempt,
            to: TaskPos {
                stage: key.pos.stage + 1,
                index: i,
            },
            resend: a.delivery != Delivery::AtMostOnce,
            progress: None,
            floor: u64::from(a.epoch) << crate::dataplane::link::EPOCH_SHIFT,
        };
        links.spawn(run_link(
            spec,
            env.cfg.clone(),
            rx,
            env.routes.watch(&key.job),
            link_cancel.clone(),
        ));
    }
    let router = Router::new(
        senders,
        a.partition.clone(),
        env.cfg.clone(),
        status.tuples_out.clone(),
    );
    let op = match (&a.operator, exec_path) {
        (OperatorSpec::Builtin { name, args }, _) => match Builtin::from_spec(name, args) {
            Ok(b) => Operator::Builtin(b, router, Vec::new()),
            Err(e) => {
                return end(
                    &status,
                    TaskEnd::Failed(e),
                    links,
                    link_cancel,
                    registration,
                )
                .await
            }
        },
        (OperatorSpec::Exec { args, .. }, Some(path)) => {
            match ExecOperator::spawn(&path, args, router) {
                Ok(op) => {
                    status.set_pid(op.pid());
                    Operator::Exec(op)
                }
                Err(e) => {
                    return end(
                        &status,
                        TaskEnd::Failed(e.to_string()),
                        links,
                        link_cancel,
                        registration,
                    )
                    .await
                }
            }
        }
        (OperatorSpec::Exec { path, .. }, None) => {
            let e = TaskEnd::Failed(format!("operator {path} is not available on this worker"));
            return end(&status, e, links, link_cancel, registration).await;
        }
    };
    let mut bg = JoinSet::new();
    let result = drive(&env, &a, op, inbox, &acks, &status, &cancel, &mut bg).await;
    let outcome = match result {
        Ok(()) => {
            // Wait for every link to deliver its end of stream.
            let mut outcome = TaskEnd::Finished;
            while let Some(res) = links.join_next().await {
                match res {
                    Ok(LinkEnd::Done) => {}
                    Ok(LinkEnd::Cancelled) => outcome = TaskEnd::Cancelled,
                    Err(e) => outcome = TaskEnd::Failed(format!("link task: {e}")),
                }
            }
            outcome
        }
        Err(Stop::Cancelled) => TaskEnd::Cancelled,
        Err(Stop::Failed(e)) => TaskEnd::Failed(e),
    };
    bg.shutdown().await;
    end(&status, outcome, links, link_cancel, registration).await
}

async fn end(
    status: &TaskStatus,
    outcome: TaskEnd,
    mut links: JoinSet<LinkEnd>,
    link_cancel: CancellationToken,
    registration: crate::dataplane::inbound::Registration,
) -> TaskEnd {
    link_cancel.cancel();
    while links.join_next().await.is_some() {}
    drop(registration);
    match &outcome {
        TaskEnd::Finished => status.set_state(TaskState::Finished),
        TaskEnd::Failed(e) => {
            *status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            status.set_state(TaskState::Failed);
        }
        TaskEnd::Cancelled => status.set_state(TaskState::Cancelled),
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    env: &TaskEnv,
    a: &TaskAssignment,
    mut op: Operator,
    mut inbox: mpsc::Receiver<Inbound>,
    acks: &Arc<AckBoard>,
    status: &TaskStatus,
    cancel: &CancellationToken,
    bg: &mut JoinSet<Result<(), LogError>>,
) -> Result<(), Stop> {
    let exactly_once = a.delivery == Delivery::ExactlyOnce;
    // A first-stage task's only input is the source, so its consumption order is sequence
    // order and the source file is its log: it needs no input log of its own.
    let logged = exactly_once && a.key.pos.stage > 1;
    let mut input = InputState::with_floor(
        a.upstream,
        u64::from(a.epoch) << crate::dataplane::link::EPOCH_SHIFT,
    );
    let res = async {
        if let (false, Some(r)) = (logged, &a.source_replay) {
            replay_source(env, a, r, &mut op, &mut input, status).await?;
        }
        if logged {
            let lineage = recover_lineage(&env.store, &a.key, a.attempt).await?;
            let mut replayed = 0u64;
            for seg in &lineage {
                let data = env.store.get(seg).await.map_err(LogError::from)?;
                for rec in decode_segment(seg, data)? {
                    match rec {
                        LogRecord::Batch {
                            from,
                            first_seq,
                            emit_ns,
                            tuples,
                        } => {
                            let n = tuples.len() as u64;
                            for t in tuples {
                                op.feed(t, emit_ns).await?;
                            }
                            replayed += n;
                            input.advance(from, first_seq + n - 1);
                        }
                        LogRecord::Eos { from, last_seq } => {
                            input.end(from, last_seq);
                        }
                    }
                }
            }
            status.tuples_in.store(replayed, Ordering::Relaxed);
            if !lineage.is_empty() {
                info!(task = %a.key, attempt = a.attempt, segments = lineage.len(), tuples = replayed, "recovered from input log");
            }
        }
        for from in 0..input.links() {
            acks.set(from, input.hwm(from), input.ended(from));
        }
        Ok::<(), Stop>(())
    };
    if let Err(e) = tokio::select! { _ = cancel.cancelled() => Err(Stop::Cancelled), r = res => r }
    {
        op.abort().await;
        return Err(e);
    }
    status.set_state(TaskState::Running);

    let res = if logged {
        let (log_tx, log_rx) = mpsc::channel(16);
        let (feed_tx, feed_rx) = mpsc::channel(4);
        bg.spawn(log_writer(
            env.clone(),
            a.key.clone(),
            a.attempt,
            acks.clone(),
            log_rx,
            feed_tx,
        ));
        let receiving = receive_logged(&mut inbox, &mut input, log_tx, status, cancel, a);
        let feeding = feed_logged(&mut op, feed_rx, cancel);
        // Raced against cancellation as a whole: a write to an operator that stopped reading
        // blocks forever, and a stalled or cancelled task must still stop (and be killed).
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = async { tokio::try_join!(receiving, feeding).map(|_| ()) } => r,
        }
    } else {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Stop::Cancelled),
            r = consume(&mut op, &mut inbox, &mut input, acks, status, cancel, a) => r,
        }
    };
    if let Err(e) = res {
        op.abort().await;
        return Err(e);
    }
    while let Some(res) = bg.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                op.abort().await;
                return Err(e.into());
            }
            Err(e) => {
                op.abort().await;
                return Err(Stop::Failed(format!("log writer: {e}")));
            }
        }
    }
    // All inputs ended and were processed: let the operator drain and end its streams.
    tokio::select! {
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        r = op.finish() => r,
    }?;
    debug!(task = %a.key, "operator drained");
    Ok(())
}

/// Regenerates a restarted first-stage task's input from the source file: the tuples the
/// source routed to this task, up to the position its link had acknowledged.
async fn replay_source(
    env: &TaskEnv,
    a: &TaskAssignment,
    r: &crate::protocol::control::SourceReplay,
    op: &mut Operator,
    input: &mut InputState,
    status: &TaskStatus,
) -> Result<(), Stop> {
    let failed = |e: String| Stop::Failed(format!("replaying source {}: {e}", r.path));
    let local = match a.paths {
        crate::model::spec::PathMode::Local => PathBuf::from(&r.path),
        crate::model::spec::PathMode::Store => match env
            .store
            .local_path(&r.path)
            .map_err(|e| failed(e.to_string()))?
        {
            Some(p) => p,
            None => {
                let target = env
                    .work_dir
                    .join("replay")
                    .join(format!("{}-{}", a.key.job, a.key.pos));
                env.store
                    .fetch_to_file(&r.path, &target)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                target
            }
        },
    };
    let file = tokio::fs::File::open(&local)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut rd = crate::runtime::source::SourceReader::new(file, &r.name);
    let mut part = crate::model::partition::Partitioner::new(r.partition.clone(), r.tasks as usize);
    let me = a.key.pos.index as usize;
    let mut seq = 0u64;
    while seq < r.upto {
        let Some(t) = rd.next_tuple().await.map_err(|e| failed(e.to_string()))? else {
            break;
        };
        if part.pick(&t) == me {
            seq += 1;
            op.feed(t, crate::dataplane::now_ns()).await?;
        }
    }
    if seq < r.upto {
        return Err(failed(format!(
            "the file ended at tuple {seq}, before the acknowledged {}",
            r.upto
        )));
    }
    input.advance(0, seq);
    if r.ended {
        input.end(0, seq);
    }
    status.tuples_in.store(seq, Ordering::Relaxed);
    if a.paths == crate::model::spec::PathMode::Store
        && env.store.local_path(&r.path).ok().flatten().is_none()
    {
        if let Err(e) = tokio::fs::remove_file(&local).await {
            warn!(file = %local.display(), error = %e, "could not remove a fetched replay file");
        }
    }
    info!(task = %a.key, attempt = a.attempt, tuples = seq, ended = r.ended, "recovered from the source file");
    Ok(())
}

/// Next inbox message, or why there is none; `on_idle` runs when the inbox is momentarily empty.
async fn next_input(
    inbox: &mut mpsc::Receiver<Inbound>,
    cancel: &CancellationToken,
) -> Result<Inbound, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        m = inbox.recv() => m.ok_or(Stop::Cancelled),
    }
}

/// The log entry of a link's end of stream (acked with the end flag once durable).
fn eos_record(from: u32, last_seq: u64) -> Logged {
    let mut record = BytesMut::new();
    encode_record(&mut record, &LogRecord::Eos { from, last_seq });
    Logged {
        record,
        mark: (from, last_seq, true),
        tuples: Vec::new(),
        emit_ns: 0,
    }
}

/// Exactly-once receive side: dedup, then hand accepted input to the log writer.
async fn receive_logged(
    inbox: &mut mpsc::Receiver<Inbound>,
    input: &mut InputState,
    log: mpsc::Sender<Logged>,
    status: &TaskStatus,
    cancel: &CancellationToken,
    a: &TaskAssignment,
) -> Result<(), Stop> {
    let gone = || Stop::Failed("input log writer stopped".into());
    while !input.all_ended() {
        match next_input(inbox, cancel).await? {
            Inbound::Batch {
                from,
                first_seq,
                emit_ns,
                mut tuples,
            } => {
                let (first_seq, last, ended_now) = match input.accept(from, first_seq, &mut tuples)
                {
                    Accepted::UnknownLink => {
                        warn!(task = %a.key, from, "batch from an unknown upstream task; dropped");
                        continue;
                    }
                    Accepted::Duplicate => continue,
                    Accepted::Fresh {
                        first_seq,
                        last_seq,
                        ended_now,
                    } => (first_seq, last_seq, ended_now),
                };
                status
                    .tuples_in
                    .fetch_add(tuples.len() as u64, Ordering::Relaxed);
                let mut record = BytesMut::new();
                encode_batch_record(&mut record, from, first_seq, emit_ns, &tuples);
                let l = Logged {
                    record,
                    mark: (from, last, false),
                    tuples,
                    emit_ns,
                };
                log.send(l).await.map_err(|_| gone())?;
                if ended_now {
                    // A pending end of stream just completed: log it behind the tuples.
                    log.send(eos_record(from, last)).await.map_err(|_| gone())?;
                }
            }
            Inbound::Eos { from, last_seq } => {
                if input.end(from, last_seq) {
                    log.send(eos_record(from, last_seq))
                        .await
                        .map_err(|_| gone())?;
                }
            }
        }
    }
    Ok(())
}

/// Exactly-once feed side: the operator sees input only once it is durable.
async fn feed_logged(
    op: &mut Operator,
    mut feed: mpsc::Receiver<Vec<(Vec<Tuple>, u64)>>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    loop {
        let group = match feed.try_recv() {
            Ok(g) => g,
            Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            Err(mpsc::error::TryRecvError::Empty) => {
                op.idle().await?;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Stop::Cancelled),
                    e = op.died() => return Err(e),
                    g = feed.recv() => match g {
                        Some(g) => g,
                        None => return Ok(()),
                    },
                }
            }
        };
        for (tuples, emit_ns) in group {
            for t in tuples {
                op.feed(t, emit_ns).await?;
            }
        }
    }
}

/// At-least-once / at-most-once: process as received, ack once processed.
async fn consume(
    op: &mut Operator,
    inbox: &mut mpsc::Receiver<Inbound>,
    input: &mut InputState,
    acks: &AckBoard,
    status: &TaskStatus,
    cancel: &CancellationToken,
    a: &TaskAssignment,
) -> Result<(), Stop> {
    while !input.all_ended() {
        let msg = match inbox.try_recv() {
            Ok(m) => m,
            Err(_) => {
                op.idle().await?;
                tokio::select! {
                    biased;
                    e = op.died() => return Err(e),
                    m = next_input(inbox, cancel) => m?,
                }
            }
        };
        match msg {
            Inbound::Batch {
                from,
                first_seq,
                emit_ns,
                mut tuples,
            } => {
                match input.accept(from, first_seq, &mut tuples) {
                    Accepted::UnknownLink => {
                        warn!(task = %a.key, from, "batch from an unknown upstream task; dropped");
                        continue;
                    }
                    Accepted::Duplicate => {}
                    Accepted::Fresh { .. } => {
                        status
                            .tuples_in
                            .fetch_add(tuples.len() as u64, Ordering::Relaxed);
                        for t in tuples {
                            op.feed(t, emit_ns).await?;
                        }
                    }
                }
                acks.set(from, input.hwm(from), input.ended(from));
            }
            Inbound::Eos { from, last_seq } => {
                if input.stale(last_seq) {
                    continue;
                }
                input.end_with(from, last_seq, a.delivery == Delivery::AtMostOnce);
                acks.set(from, input.hwm(from), input.ended(from));
            }
        }
    }
    Ok(())
}
