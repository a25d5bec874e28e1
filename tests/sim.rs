//! Deterministic simulation of the data plane and the recovery protocol.
//!
//! One seed = one run of a job, in one thread, on tokio's paused clock: the real source, links,
//! listeners, acceptance rule, tasks (built-ins and scripted stand-ins for executables, run
//! through the same executable-operator code), input logs (an in-memory store that can fail
//! writes) and sink, connected by a simulated network (`sim/net.rs`). A small coordinator
//! plays the leader: it places tasks with the leader's `Placement`, builds every attempt's
//! `assignment` and follows the leader's `recovery` rule, pushing route changes to each host
//! after its own random delay. The seed drives the faults: delayed and reordered frames
//! across connections, cut connections (some still delivering late frames), partitions that
//! heal (the leader declares the worker dead while its tasks run on as zombies), store write
//! failures, and kills of any task attempt at any await point, on the same or another worker,
//! repeated during recovery and aimed at a restarted task's successor.
//!
//! After each seed: exactly-once → the output equals the failure-free output as a multiset;
//! at-least-once → nothing is missing; at-most-once → nothing is duplicated; every job ends.
//!
//! `RAINSTORM_SIM_SEEDS=N` runs N seeds (default 2000); `RAINSTORM_SIM_SEED=S` replays one
//! seed with logs stamped with virtual time (`RAINSTORM_LOG=debug` for more, `sim=trace` adds
//! every connection and write of the simulated network) and prints the run's fingerprint
//! (`seed S trace …`): replays of a seed print the same one, and two replays' logs diff cleanly.
//! A replay is exact only with tokio's randomness seeded (`--cfg tokio_unstable`, see
//! `.cargo/config.toml`) and no order taken from a HashMap; `a_seed_replays_bit_for_bit` checks.

mod sim {
    pub mod net;
    pub mod rng;
}

use rainstorm::dataplane::inbound::Registry;
use rainstorm::dataplane::listener;
use rainstorm::dataplane::routes::Routes;
use rainstorm::dataplane::DataConfig;
use rainstorm::leader::placement::{assignment, recovery, Placement, Recovery};
use rainstorm::model::ids::{JobId, TaskKey, TaskPos};
use rainstorm::model::partition::{partition_into, tasks_of};
use rainstorm::model::spec::{Delivery, JobSpec, OperatorSpec, PathMode, StageSpec};
use rainstorm::model::tuple::Tuple;
use rainstorm::protocol::auth::{DataAuth, Secret};
use rainstorm::runtime::exec::{ScriptFn, Scripts};
use rainstorm::runtime::sink::{
    run_sink, CommitTarget, LatencyHist, SinkCommit, SinkProgress, SinkSpec, SinkTarget,
};
use rainstorm::runtime::source::{run_source, SourceSpec};
use rainstorm::runtime::store::Store;
use rainstorm::runtime::task::{run_task, TaskEnd, TaskEnv, TaskStatus};
use sim::net::SimNet;
use sim::rng::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CATS: [&str; 5] = ["oak", "elm", "ash", "fir", "yew"];

/// The pipelines a seed picks from, with their failure-free output computed independently.
#[derive(Clone, Copy, Debug)]
enum Pipeline {
    /// keep (scripted, drops ids divisible by 7, keys by category) → count-by category →
    /// upper (scripted).
    KeepCountUpper,
    /// count-by category → even (scripted, keeps even running counts).
    CountEven,
}

fn scripts() -> Scripts {
    let mut m: HashMap<String, ScriptFn> = HashMap::new();
    m.insert(
        "keep".into(),
        Arc::new(|| {
            Box::new(|t: Tuple| {
                let mut cols = t.value.split(',');
                let id: u64 = cols.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                let cat = cols.next().unwrap_or("").to_string();
                if id.is_multiple_of(7) {
                    vec![]
                } else {
                    vec![Tuple::new(cat, t.value)]
                }
            })
        }),
    );
    m.insert(
        "upper".into(),
        Arc::new(|| Box::new(|t: Tuple| vec![Tuple::new(t.key, t.value.to_uppercase())])),
    );
    m.insert(
        "even".into(),
        Arc::new(|| {
            Box::new(|t: Tuple| {
                let n: u64 = t
                    .value
                    .rsplit(',')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                if n.is_multiple_of(2) {
                    vec![t]
                } else {
                    vec![]
                }
            })
        }),
    );
    Scripts::new(m)
}

fn exec(path: &str) -> OperatorSpec {
    OperatorSpec::Exec {
        path: path.into(),
        args: vec![],
    }
}

fn count_by() -> OperatorSpec {
    OperatorSpec::Builtin {
        name: "count-by".into(),
        args: vec!["2".into()],
    }
}

impl Pipeline {
    fn stages(self, rng: &Rng) -> Vec<StageSpec> {
        let n = |rng: &Rng| 1 + rng.below(3) as u32;
        match self {
            Pipeline::KeepCountUpper => vec![
                StageSpec {
                    tasks: n(rng),
                    operator: exec("keep"),
                },
                StageSpec {
                    tasks: n(rng),
                    operator: count_by(),
                },
                StageSpec {
                    tasks: n(rng),
                    operator: exec("upper"),
                },
            ],
            Pipeline::CountEven => vec![
                StageSpec {
                    tasks: n(rng),
                    operator: count_by(),
                },
                StageSpec {
                    tasks: n(rng),
                    operator: exec("even"),
                },
            ],
        }
    }

    /// The failure-free output, as a multiset, computed without the engine.
    fn reference(self, rows: &[(u64, &str)]) -> BTreeMap<String, i64> {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (id, cat) in rows {
            let line = match self {
                Pipeline::KeepCountUpper => {
                    if id.is_multiple_of(7) {
                        continue;
                    }
                    let c = counts.entry(cat).or_default();
                    *c += 1;
                    Some(format!("{cat},{c}").to_uppercase())
                }
                Pipeline::CountEven => {
                    let c = counts.entry(cat).or_default();
                    *c += 1;
                    c.is_multiple_of(2).then(|| format!("{cat},{c}"))
                }
            };
            if let Some(l) = line {
                *out.entry(l).or_insert(0) += 1;
            }
        }
        out
    }
}

/// One simulated host of the data plane.
struct Host {
    name: String,
    addr: String,
    env: TaskEnv,
}

/// A running task attempt.
struct Attempt {
    host: usize,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
    status: Arc<TaskStatus>,
}

struct Sim {
    rng: Rng,
    net: SimNet,
    spec: JobSpec,
    job: JobId,
    hosts: Vec<Host>,
    /// Workers (host indices ≥ 1) the coordinator believes alive.
    alive: Vec<bool>,
    placement: Placement,
    /// Per task: (host, current attempt).
    tasks: BTreeMap<TaskPos, (usize, u32)>,
    running: BTreeMap<(TaskPos, u32), Attempt>,
    epoch: u32,
    events: mpsc::UnboundedSender<(TaskPos, u32, TaskEnd)>,
    parts: Vec<JoinHandle<()>>,
    part_events: mpsc::UnboundedSender<(u32, &'static str, Result<(), String>)>,
    output: Arc<Mutex<Vec<u8>>>,
    /// The sink's commit record, which survives a leader crash (as the leader's data dir does).
    commit: Arc<Mutex<Option<SinkCommit>>>,
    restarts: u32,
    log: Vec<String>,
}

const LEADER: usize = 0;

/// Leader restarts simulated over the whole run (to show the fault is exercised).
static LEADER_RESTARTS: AtomicU64 = AtomicU64::new(0);

impl Sim {
    fn host_env(&self, i: usize) -> TaskEnv {
        self.hosts[i].env.clone()
    }

    /// Pushes the placement to every host the coordinator can reach, each after its own delay.
    fn push_routes(&self) {
        let list = self.placement.list();
        let version = self.placement.version();
        for (i, h) in self.hosts.iter().enumerate() {
            if i != LEADER && !self.alive[i] {
                continue;
            }
            let delay = if i == LEADER {
                0
            } else {
                self.rng.below(15_000)
            };
            let routes = h.env.routes.clone();
            let job = self.job.clone();
            let list = list.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(delay)).await;
                routes.set_many(&job, version, &list);
            });
        }
    }

    fn start_task(&mut self, pos: TaskPos) {
        let (host, attempt) = self.tasks[&pos];
        let key = TaskKey {
            job: self.job.clone(),
            pos,
        };
        let a = assignment(&self.spec, &key, attempt, self.epoch, &self.placement);
        let env = self.host_env(host);
        let cancel = CancellationToken::new();
        let events = self.events.clone();
        let delay = self.rng.below(5_000);
        let c = cancel.clone();
        let status = Arc::new(TaskStatus::default());
        let st = status.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(delay)).await;
            let end = run_task(env, a, None, st, c).await;
            let _ = events.send((pos, attempt, end));
        });
        self.running.insert(
            (pos, attempt),
            Attempt {
                host,
                cancel,
                handle,
                status,
            },
        );
    }

    fn start_parts(&mut self) {
        let k = self.spec.stages.len() as u32;
        let env = self.host_env(LEADER);
        let epoch = self.epoch;
        let cancel = CancellationToken::new();
        let attempt = |stage| {
            self.placement
                .get(&TaskPos { stage, index: 0 })
                .map_or(0, |d| d.attempt)
        };
        let src = SourceSpec {
            attempt: attempt(0),
            job: self.job.clone(),
            path: self.spec.source_path.clone(),
            paths: PathMode::Store,
            name: self.spec.source_name.clone(),
            rate: self.spec.rate,
            downstream: tasks_of(&self.spec, 1),
            partition: partition_into(&self.spec, 1),
            resend: self.spec.delivery != Delivery::AtMostOnce,
            epoch,
        };
        let sink = SinkSpec {
            attempt: attempt(k + 1),
            commit: Some(CommitTarget::Memory(self.commit.clone())),
            key: TaskKey {
                job: self.job.clone(),
                pos: TaskPos {
                    stage: k + 1,
                    index: 0,
                },
            },
            upstream: tasks_of(&self.spec, k),
            target: SinkTarget::Memory(self.output.clone()),
            epoch,
            accept_gaps: self.spec.delivery == Delivery::AtMostOnce,
        };
        let (progress, _) = watch::channel(SinkProgress::default());
        let pe = self.part_events.clone();
        let c = cancel.clone();
        let e2 = env.clone();
        self.parts.push(tokio::spawn(async move {
            let r = run_sink(
                e2,
                sink,
                Arc::new(AtomicU64::new(0)),
                Arc::new(Mutex::new(LatencyHist::default())),
                progress,
                c,
            )
            .await;
            let _ = pe.send((epoch, "sink", r));
        }));
        let pe = self.part_events.clone();
        let c = cancel.clone();
        self.parts.push(tokio::spawn(async move {
            let r = run_source(env, src, Arc::new(AtomicU64::new(0)), c).await;
            let _ = pe.send((epoch, "source", r));
        }));
        let guard = cancel.clone().drop_guard();
        self.parts.push(tokio::spawn(async move {
            // Holds the epoch's cancel token until the part list is cleared.
            let _g = guard;
            std::future::pending::<()>().await
        }));
    }

    /// A restarted leader: new attempts of the source and the sink, pushed to every host.
    fn leader_back(&mut self) {
        let k = self.spec.stages.len() as u32;
        for stage in [0, k + 1] {
            let pos = TaskPos { stage, index: 0 };
            let attempt = self.placement.get(&pos).map_or(0, |d| d.attempt) + 1;
            self.placement
                .insert(pos, self.hosts[LEADER].addr.clone(), attempt);
        }
        self.log.push("leader back".into());
        LEADER_RESTARTS.fetch_add(1, Ordering::Relaxed);
        self.push_routes();
        self.start_parts();
    }

    fn stop_parts(&mut self) {
        for p in self.parts.drain(..) {
            p.abort();
        }
    }

    /// Picks a live worker for a task, preferring another than `avoid`, sometimes the same.
    fn pick_worker(&self, avoid: Option<usize>) -> Option<usize> {
        let live: Vec<usize> = (1..self.hosts.len()).filter(|i| self.alive[*i]).collect();
        if live.is_empty() {
            return None;
        }
        if let Some(a) = avoid {
            if self.alive[a] && self.rng.chance(0.3) {
                return Some(a);
            }
        }
        Some(live[self.rng.below(live.len() as u64) as usize])
    }

    fn restart_task(&mut self, pos: TaskPos) -> Result<(), String> {
        let (old_host, attempt) = self.tasks[&pos];
        let host = self
            .pick_worker(Some(old_host))
            .ok_or("no live worker to restart on")?;
        let attempt = attempt + 1;
        self.tasks.insert(pos, (host, attempt));
        self.placement
            .insert(pos, self.hosts[host].addr.clone(), attempt);
        self.restarts += 1;
        self.push_routes();
        self.start_task(pos);
        self.log.push(format!(
            "restart {pos} attempt {attempt} on {}",
            self.hosts[host].name
        ));
        Ok(())
    }

    fn restart_epoch(&mut self) -> Result<(), String> {
        self.stop_parts();
        for a in self.running.values() {
            if self.alive[a.host] {
                a.cancel.cancel();
            }
        }
        self.epoch += 1;
        let positions: Vec<TaskPos> = self.tasks.keys().copied().collect();
        for pos in positions {
            let (host, attempt) = self.tasks[&pos];
            let host = if self.alive[host] {
                host
            } else {
                self.pick_worker(None).ok_or("no live worker")?
            };
            self.tasks.insert(pos, (host, attempt + 1));
            self.placement
                .insert(pos, self.hosts[host].addr.clone(), attempt + 1);
        }
        self.restarts += 1;
        self.push_routes();
        self.start_parts();
        for pos in self.tasks.keys().copied().collect::<Vec<_>>() {
            self.start_task(pos);
        }
        self.log.push(format!("epoch {}", self.epoch));
        Ok(())
    }

    /// Reacts to a failed current attempt by the delivery mode's recovery rule.
    fn recover(&mut self, pos: TaskPos) -> Result<(), String> {
        match recovery(self.spec.delivery) {
            Recovery::RestartTask => self.restart_task(pos),
            Recovery::RestartEpoch => self.restart_epoch(),
            Recovery::Fail => Err(format!("task {pos} failed under at-most-once")),
        }
    }
}

enum Chaos {
    Kill,
    Cut,
    Partition,
    StoreFaults,
    /// The leader restarts a task it believes stalled; the old attempt stops a little later.
    Stall,
    /// A worker's control plane is cut: it is declared dead while its tasks keep running with
    /// a working data plane (zombies with stale routes) until it learns and rejoins.
    ControlCut,
    /// The leader dies (its source and sink with it, the sink possibly mid-commit) and comes
    /// back a little later: new attempts of both, the sink resuming from its commit record,
    /// while the tasks on the workers run on.
    LeaderCrash,
}

struct SeedResult {
    delivery: Delivery,
    outcome: Result<(), String>,
    output: BTreeMap<String, i64>,
    reference: BTreeMap<String, i64>,
    log: Vec<String>,
    /// A fingerprint of the run: the coordinator's log, the sink's output bytes in the order
    /// written, the virtual time the run took and the data-plane traffic (`sim::net`'s trace).
    /// A seed's replay gives the same one.
    trace: u64,
}

/// FNV-1a, 64 bits: a hash with no per-process seed, so fingerprints compare across runs.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

async fn run_seed(seed: u64) -> SeedResult {
    sim::net::trace_start();
    let rng = Rng::new(seed);
    let net = SimNet::new(rng.fork());
    let store = Store::memory();
    let n_rows = 60 + rng.below(240);
    let rows: Vec<(u64, &str)> = (1..=n_rows)
        .map(|id| (id, CATS[rng.below(CATS.len() as u64) as usize]))
        .collect();
    let text: String = rows.iter().map(|(id, c)| format!("{id},{c}\n")).collect();
    if let Err(e) = store.put("in.csv", text.into()).await {
        panic!("seeding the store: {e}");
    }
    let delivery = match rng.below(10) {
        0..=5 => Delivery::ExactlyOnce,
        6..=7 => Delivery::AtLeastOnce,
        _ => Delivery::AtMostOnce,
    };
    let pipeline = if rng.chance(0.5) {
        Pipeline::KeepCountUpper
    } else {
        Pipeline::CountEven
    };
    let spec = JobSpec {
        name: None,
        delivery,
        source_path: "in.csv".into(),
        source_name: "in.csv".into(),
        rate: n_rows as f64 * (1.0 + rng.below(3) as f64),
        sink_path: "out.txt".into(),
        stages: pipeline.stages(&rng),
        paths: PathMode::Store,
        keep_logs: false,
        autoscale: None,
    };
    let reference = pipeline.reference(&rows);
    let cfg = DataConfig {
        batch_tuples: 1 + rng.below(24) as usize,
        batch_bytes: 4096,
        window_bytes: 256 + rng.below(4096) as usize,
        queue_batches: 1 + rng.below(4) as usize,
        log_linger_us: rng.below(1000) as usize,
        ..DataConfig::default()
    };
    let scripts = scripts();
    // Every connection proves the cluster secret, as in a real cluster.
    let auth = DataAuth(Some(
        Secret::new(&format!("simulated-cluster-secret-{seed}"))
            .expect("a long secret")
            .data_key(),
    ));
    let n_workers = 2 + rng.below(3) as usize;
    let stop = CancellationToken::new();
    let mut hosts = Vec::new();
    let mut servers = Vec::new();
    for i in 0..=n_workers {
        let name = if i == LEADER {
            "L".to_string()
        } else {
            format!("w{i}")
        };
        let addr = format!("{name}:7000");
        let env = TaskEnv {
            registry: Arc::new(Registry::default()),
            routes: Arc::new(Routes::default()),
            cfg: cfg.clone(),
            store: store.clone(),
            work_dir: std::env::temp_dir(),
            net: net.host(&name),
            scripts: scripts.clone(),
            auth: auth.clone(),
        };
        let acceptor = net.listen(&name, &addr);
        servers.push(tokio::spawn(listener::serve(
            acceptor,
            env.registry.clone(),
            env.routes.clone(),
            env.auth.clone(),
            listener::Limits::of(&cfg),
            stop.clone(),
        )));
        hosts.push(Host { name, addr, env });
    }
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (pe_tx, mut pe_rx) = mpsc::unbounded_channel();
    let job = JobId("job-1".into());
    let k = spec.stages.len() as u32;
    let mut sim = Sim {
        rng: rng.fork(),
        net: net.clone(),
        job: job.clone(),
        alive: vec![true; hosts.len()],
        hosts,
        placement: Placement::default(),
        tasks: BTreeMap::new(),
        running: BTreeMap::new(),
        epoch: 0,
        events: ev_tx,
        parts: Vec::new(),
        part_events: pe_tx,
        output: Arc::default(),
        commit: Arc::default(),
        restarts: 0,
        log: vec![format!(
            "{delivery:?} {pipeline:?} rows={n_rows} workers={n_workers} {:?} cfg={cfg:?}",
            spec.stages.iter().map(|s| s.tasks).collect::<Vec<_>>()
        )],
        spec,
    };
    sim.placement.insert(
        TaskPos { stage: 0, index: 0 },
        sim.hosts[LEADER].addr.clone(),
        0,
    );
    sim.placement.insert(
        TaskPos {
            stage: k + 1,
            index: 0,
        },
        sim.hosts[LEADER].addr.clone(),
        0,
    );
    let mut next = 0usize;
    for stage in 1..=k {
        for index in 0..tasks_of(&sim.spec, stage) {
            let host = 1 + next % n_workers;
            next += 1;
            let pos = TaskPos { stage, index };
            sim.tasks.insert(pos, (host, 0));
            sim.placement.insert(pos, sim.hosts[host].addr.clone(), 0);
        }
    }
    // The first placement reaches every host before anything starts, as with Start commands.
    for h in &sim.hosts {
        h.env
            .routes
            .set_many(&job, sim.placement.version(), &sim.placement.list());
    }
    sim.start_parts();
    for pos in sim.tasks.keys().copied().collect::<Vec<_>>() {
        sim.start_task(pos);
    }

    // The fault plan: event times over the job's expected run (about a second or less).
    let n_events = rng.below(9);
    let mut plan: Vec<(u64, Chaos)> = (0..n_events)
        .map(|_| {
            let at = rng.below(1_500_000);
            let kind = match rng.below(16) {
                0..=4 => Chaos::Kill,
                5..=6 => Chaos::Cut,
                7..=8 => Chaos::Partition,
                9 => Chaos::StoreFaults,
                10..=11 => Chaos::Stall,
                12..=13 => Chaos::ControlCut,
                _ => Chaos::LeaderCrash,
            };
            (at, kind)
        })
        .collect();
    plan.sort_by_key(|(at, _)| *at);
    let mut plan = plan.into_iter().peekable();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    let dead_after = Duration::from_millis(30);
    // Pending timed actions: (when, what).
    let mut timers: BTreeMap<(Instant, u64), Timed> = BTreeMap::new();
    let mut timer_seq = 0u64;
    let mut sink_done_at: Option<Instant> = None;
    let outcome: Result<(), String> = loop {
        if let Some(at) = sink_done_at {
            let all_finished = sim
                .tasks
                .iter()
                .all(|(pos, (_, a))| !sim.running.contains_key(&(*pos, *a)));
            if all_finished || Instant::now() >= at + Duration::from_secs(10) {
                break Ok(());
            }
        }
        let next_plan = plan.peek().map(|(at, _)| t0 + Duration::from_micros(*at));
        let next_timer = timers.keys().next().map(|(t, _)| *t);
        let drained = sink_done_at.map(|t| t + Duration::from_secs(10));
        let wake = [next_plan, next_timer, drained, Some(deadline)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline);
        tokio::select! {
            biased;
            Some((pos, attempt, end)) = ev_rx.recv() => {
                let current = sim.tasks.get(&pos).map(|(_, a)| *a) == Some(attempt);
                sim.running.remove(&(pos, attempt));
                if !current {
                    continue;
                }
                match end {
                    TaskEnd::Finished => {
                        sim.log.push(format!("{pos} attempt {attempt} finished"));
                        // As the leader does: a restarted upstream learns it has nothing left
                        // to deliver to a finished task.
                        if sim.placement.finish(pos, attempt) {
                            sim.push_routes();
                        }
                    }
                    TaskEnd::Failed(e) => {
                        sim.log.push(format!("{pos} attempt {attempt} failed: {e}"));
                        if sim.restarts > 60 {
                            break Err(format!("too many restarts; last: {pos}: {e}"));
                        }
                        if let Err(e) = sim.recover(pos) {
                            break Err(e);
                        }
                        if sim.rng.chance(0.3) {
                            // Aim at the successor while it recovers.
                            let at = Instant::now() + Duration::from_micros(sim.rng.below(4000));
                            timer_seq += 1;
                            timers.insert((at, timer_seq), Timed::KillTask(pos));
                        }
                    }
                    TaskEnd::Cancelled => {
                        sim.log.push(format!("{pos} attempt {attempt} cancelled"));
                        if let Err(e) = sim.recover(pos) {
                            break Err(e);
                        }
                    }
                }
            }
            Some((epoch, part, res)) = pe_rx.recv() => {
                if epoch != sim.epoch {
                    continue;
                }
                match (part, res) {
                    ("sink", Ok(())) => sink_done_at = Some(Instant::now()),
                    ("source", Ok(())) => {}
                    (_, Err(e)) => break Err(format!("{part} failed: {e}")),
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= deadline {
                    for ((pos, attempt), a) in &sim.running {
                        sim.log.push(format!(
                            "still running: {pos} attempt {attempt} on {}: {:?} in={} out={}",
                            sim.hosts[a.host].name,
                            a.status.state(),
                            a.status.tuples_in.load(Ordering::Relaxed),
                            a.status.tuples_out.load(Ordering::Relaxed)
                        ));
                    }
                    break Err("the job did not terminate".into());
                }
                while let Some((at, _)) = plan.peek() {
                    if t0 + Duration::from_micros(*at) > now {
                        break;
                    }
                    let Some((_, kind)) = plan.next() else { break };
                    match kind {
                        Chaos::Kill => {
                            let pos = *sim
                                .tasks
                                .keys()
                                .nth(sim.rng.below(sim.tasks.len() as u64) as usize)
                                .expect("tasks exist");
                            timer_seq += 1;
                            timers.insert((now, timer_seq), Timed::KillTask(pos));
                        }
                        Chaos::Cut => {
                            sim.net.cut_random(&sim.rng);
                        }
                        Chaos::Partition => {
                            let w = 1 + sim.rng.below(n_workers as u64) as usize;
                            if sim.alive[w] && sim.alive.iter().skip(1).filter(|a| **a).count() > 1 {
                                sim.net.partition(&sim.hosts[w].name, &sim.rng);
                                sim.log.push(format!("partition {}", sim.hosts[w].name));
                                let heal = now + Duration::from_micros(5_000 + sim.rng.below(200_000));
                                timer_seq += 1;
                                timers.insert((now + dead_after, timer_seq), Timed::DeclareDead(w, heal));
                                timer_seq += 1;
                                timers.insert((heal, timer_seq), Timed::Heal(w));
                            }
                        }
                        Chaos::Stall => {
                            let pos = *sim
                                .tasks
                                .keys()
                                .nth(sim.rng.below(sim.tasks.len() as u64) as usize)
                                .expect("tasks exist");
                            let (host, attempt) = sim.tasks[&pos];
                            if sim.alive[host] && sim.spec.delivery == Delivery::ExactlyOnce {
                                if let Some(a) = sim.running.remove(&(pos, attempt)) {
                                    sim.log.push(format!("stalled {pos} attempt {attempt}"));
                                    let at = now + Duration::from_micros(sim.rng.below(30_000));
                                    timer_seq += 1;
                                    timers.insert((at, timer_seq), Timed::Stop(a.cancel.clone()));
                                    sim.running.insert((pos, attempt + 2_000_000), a);
                                    if let Err(e) = sim.recover(pos) {
                                        sim.log.push(format!("recovery failed: {e}"));
                                    }
                                }
                            }
                        }
                        Chaos::ControlCut => {
                            let w = 1 + sim.rng.below(n_workers as u64) as usize;
                            if sim.alive[w] && sim.alive.iter().skip(1).filter(|a| **a).count() > 1 {
                                sim.log.push(format!("control plane of {} cut", sim.hosts[w].name));
                                let learn = now + Duration::from_micros(20_000 + sim.rng.below(200_000));
                                timer_seq += 1;
                                timers.insert((now, timer_seq), Timed::DeclareDead(w, learn));
                                timer_seq += 1;
                                timers.insert((learn, timer_seq), Timed::Rejoin(w));
                            }
                        }
                        Chaos::LeaderCrash => {
                            if !sim.parts.is_empty() && sink_done_at.is_none() {
                                sim.log.push("leader crash".into());
                                sim.stop_parts();
                                let back = now + Duration::from_micros(1_000 + sim.rng.below(60_000));
                                timer_seq += 1;
                                timers.insert((back, timer_seq), Timed::LeaderBack(sim.epoch));
                            }
                        }
                        Chaos::StoreFaults => {
                            if let Store::Memory(m) = &store {
                                let n = if sim.rng.chance(0.2) { 12 } else { 1 + sim.rng.below(4) as u32 };
                                m.fail_puts.store(n, Ordering::Relaxed);
                                sim.log.push(format!("store fails the next {n} writes"));
                            }
                        }
                    }
                }
                while let Some(((at, _), _)) = timers.first_key_value() {
                    if *at > now {
                        break;
                    }
                    let Some((_, t)) = timers.pop_first() else { break };
                    match t {
                        Timed::LeaderBack(epoch) => {
                            // An epoch restart in the meantime already started new parts.
                            if epoch == sim.epoch && sim.parts.is_empty() {
                                sim.leader_back();
                            }
                        }
                        Timed::Stop(c) => c.cancel(),
                        Timed::KillTask(pos) => {
                            let (_, attempt) = sim.tasks[&pos];
                            if let Some(a) = sim.running.remove(&(pos, attempt)) {
                                if !sim.alive[a.host] {
                                    sim.running.insert((pos, attempt), a);
                                    continue;
                                }
                                a.handle.abort();
                                sim.log.push(format!("kill {pos} attempt {attempt}"));
                                // Its worker reports the crash, as a real one does.
                                let _ = sim.events.send((pos, attempt, TaskEnd::Failed("killed".into())));
                            }
                        }
                        Timed::DeclareDead(w, heal) => {
                            if heal <= now {
                                continue;
                            }
                            sim.alive[w] = false;
                            sim.log.push(format!("{} declared dead", sim.hosts[w].name));
                            let lost: Vec<TaskPos> = sim
                                .tasks
                                .iter()
                                .filter(|(_, (h, _))| *h == w)
                                .map(|(p, _)| *p)
                                .collect();
                            for pos in lost {
                                // Its attempts run on as zombies until the worker learns.
                                let (_, attempt) = sim.tasks[&pos];
                                if let Some(a) = sim.running.remove(&(pos, attempt)) {
                                    sim.running.insert((pos, attempt + 1_000_000), a);
                                }
                                if sim.alive.iter().skip(1).all(|a| !a) {
                                    break;
                                }
                                if let Err(e) = sim.recover(pos) {
                                    sim.log.push(format!("recovery failed: {e}"));
                                }
                            }
                        }
                        Timed::Heal(w) => {
                            sim.net.heal(&sim.hosts[w].name);
                            sim.log.push(format!("heal {}", sim.hosts[w].name));
                            if !sim.alive[w] {
                                // The worker learns it was declared dead (its next heartbeat
                                // says so) a little later: it stops its zombies and rejoins.
                                let at = now + Duration::from_micros(sim.rng.below(20_000));
                                timer_seq += 1;
                                timers.insert((at, timer_seq), Timed::Rejoin(w));
                            }
                        }
                        Timed::Rejoin(w) => {
                            for a in sim.running.values() {
                                if a.host == w {
                                    a.cancel.cancel();
                                }
                            }
                            sim.alive[w] = true;
                            sim.push_routes();
                            sim.log.push(format!("{} rejoined", sim.hosts[w].name));
                        }
                    }
                }
            }
        }
    };
    for a in sim.running.values() {
        a.cancel.cancel();
    }
    sim.stop_parts();
    stop.cancel();
    for (_, a) in std::mem::take(&mut sim.running) {
        a.handle.abort();
    }
    for s in servers {
        s.abort();
    }
    let raw = sim.output.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut trace = 0xcbf2_9ce4_8422_2325;
    for l in &sim.log {
        trace = fnv(trace, l.as_bytes());
        trace = fnv(trace, b"\n");
    }
    trace = fnv(trace, &raw);
    trace = fnv(trace, &(t0.elapsed().as_nanos() as u64).to_le_bytes());
    trace = fnv(trace, &sim::net::trace_hash().to_le_bytes());
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut output = BTreeMap::new();
    for l in text.lines() {
        *output.entry(l.to_string()).or_insert(0) += 1;
    }
    SeedResult {
        delivery,
        outcome,
        output,
        reference,
        log: sim.log,
        trace,
    }
}

enum Timed {
    LeaderBack(u32),
    KillTask(TaskPos),
    Stop(CancellationToken),
    DeclareDead(usize, Instant),
    Heal(usize),
    Rejoin(usize),
}

/// Checks a seed's result against its delivery mode's invariant.
fn check(r: &SeedResult) -> Result<(), String> {
    let diff = |a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| {
        let mut missing = Vec::new();
        for (k, n) in a {
            let m = b.get(k).copied().unwrap_or(0);
            if m < *n {
                missing.push(format!("{k} ×{}", n - m));
            }
        }
        missing
    };
    let missing = diff(&r.reference, &r.output);
    let extra = diff(&r.output, &r.reference);
    let show = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    match r.delivery {
        Delivery::ExactlyOnce | Delivery::AtLeastOnce => {
            if let Err(e) = &r.outcome {
                return Err(format!("the job did not succeed: {e}"));
            }
            if !missing.is_empty() {
                return Err(format!(
                    "{} lines missing: {}",
                    missing.len(),
                    show(&missing)
                ));
            }
            if r.delivery == Delivery::ExactlyOnce && !extra.is_empty() {
                return Err(format!(
                    "{} lines duplicated: {}",
                    extra.len(),
                    show(&extra)
                ));
            }
        }
        Delivery::AtMostOnce => {
            if !extra.is_empty() {
                return Err(format!(
                    "{} lines duplicated: {}",
                    extra.len(),
                    show(&extra)
                ));
            }
        }
    }
    Ok(())
}

fn run_one(seed: u64) -> Result<(), String> {
    run_traced(seed).1
}

/// Runs one seed on a fresh runtime: its trace fingerprint and its check.
fn run_traced(seed: u64) -> (u64, Result<(), String>) {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    b.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => return (0, Err(format!("runtime: {e}"))),
    };
    let r = rt.block_on(run_seed(seed));
    let checked = check(&r).map_err(|e| format!("{e}\n  run: {}", r.log.join("\n       ")));
    (r.trace, checked)
}

/// A seed replays exactly: the same coordinator log, the same output bytes in the same order,
/// the same virtual run time and the same data-plane traffic (every write's time, connection
/// and size). Two runs in one process still differ in everything a process-wide seed would
/// hide, e.g. each HashMap's hasher keys, so this catches an order taken from a HashMap.
///
/// Needs tokio's randomness seeded (`--cfg tokio_unstable`, set by `.cargo/config.toml`; a
/// `RUSTFLAGS` in the environment replaces it): without it `select!` picks its first branch at
/// random and `watch` receivers wake in a random order, so no seed replays.
#[test]
#[cfg_attr(
    not(tokio_unstable),
    ignore = "needs --cfg tokio_unstable (.cargo/config.toml) to seed tokio's randomness"
)]
fn a_seed_replays_bit_for_bit() {
    if std::env::var_os("RAINSTORM_SIM_SEED").is_some() {
        // A replay with logs was asked for; keep its output to itself.
        return;
    }
    // Seeds that did not replay before the ack boards were ordered (1, 3, 4) and a few more.
    for seed in [1, 3, 4, 17, 8206, 9, 23, 42] {
        let (first, _) = run_traced(seed);
        for _ in 0..2 {
            let (again, _) = run_traced(seed);
            assert_eq!(again, first, "seed {seed} ran differently on a replay");
        }
    }
}

/// Log lines stamped with the run's virtual time, so that two replays' logs compare.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>12.6}", sim::net::trace_elapsed().as_secs_f64())
    }
}

#[test]
fn simulated_faults_never_break_the_delivery_guarantees() {
    if let Ok(seed) = std::env::var("RAINSTORM_SIM_SEED") {
        let seed: u64 = seed.parse().expect("RAINSTORM_SIM_SEED is a number");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RAINSTORM_LOG")
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .with_timer(VirtualTime)
            .try_init();
        #[cfg(not(tokio_unstable))]
        eprintln!(
            "warning: built without --cfg tokio_unstable (a RUSTFLAGS in the environment replaces \
             .cargo/config.toml's): tokio's randomness is not seeded and this replay is not exact"
        );
        let (trace, r) = run_traced(seed);
        // Replays of one seed print the same fingerprint.
        eprintln!("seed {seed} trace {trace:016x}");
        if let Err(e) = r {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let seeds: u64 = std::env::var("RAINSTORM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(2)
        .min(seeds.max(1));
    let failures: Vec<(u64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut seed = t;
                    while seed < seeds {
                        if let Err(e) = run_one(seed) {
                            bad.push((seed, e));
                        }
                        seed += threads;
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    if !failures.is_empty() {
        let mut msg = format!("{} of {seeds} seeds failed\n", failures.len());
        for (seed, e) in failures.iter().take(5) {
            msg.push_str(&format!(
                "\nseed {seed}: {e}\n  replay: RAINSTORM_SIM_SEED={seed} cargo test --test sim -- --nocapture\n"
            ));
        }
        panic!("{msg}");
    }
    eprintln!(
        "{seeds} seeds passed ({} simulated leader restarts)",
        LEADER_RESTARTS.load(Ordering::Relaxed)
    );
}
