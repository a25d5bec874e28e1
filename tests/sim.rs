//! Deterministic simulation of the data plane and the recovery protocol.
//!
//! One seed = one run of a job, in one thread, on tokio's paused clock: the real tasks — the
//! source (stage 0), the operators (built-ins and scripted stand-ins for executables, run
//! through the same executable-operator code) and the sink (stage K+1), all started on worker
//! hosts by `run_task` with the leader's `assignment` — their links, listeners, acceptance
//! rule and input logs (an in-memory store that can fail writes and, in most seeds, takes
//! virtual time per operation so other tasks run between a caller's store operations; the
//! sink's log is the committed output), connected by a simulated network (`sim/net.rs`). A small coordinator
//! plays the leader (which has no data plane): it places every task with the leader's
//! `Placement` and follows the leader's `recovery` rule, pushing route changes to each host
//! after its own random delay. The seed drives the faults: delayed and reordered frames
//! across connections, cut connections (some still delivering late frames), partitions that
//! heal (the leader declares the worker dead while its tasks run on as zombies), store write
//! failures, kills of any task attempt (source and sink included) at any await point, on the
//! same or another worker, repeated during recovery and aimed at a restarted task's
//! successor, and leader restarts (the job carries on: no task restarts, task ends wait for
//! the leader, the workers rejoin and get the placement again).
//!
//! The job ends when the sink's current attempt finished (the source never does), then drains
//! as the leader does. After each seed: the output is the object the sink wrote at the sink
//! path, or for a job that did not succeed the sink's committed lineage (what the leader's
//! cleanup writes); exactly-once → it equals the failure-free output as a multiset;
//! at-least-once → nothing is missing; at-most-once → nothing is duplicated; every job ends;
//! a job that succeeded wrote exactly its committed lineage; and what followers read of the
//! committed lineage at random moments and during every sink takeover (`committed_lineage`) is
//! a prefix of the output, never taken back.
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
use rainstorm::model::partition::tasks_of;
use rainstorm::model::spec::{Delivery, JobSpec, OperatorSpec, PathMode, StageSpec};
use rainstorm::model::tuple::Tuple;
use rainstorm::protocol::auth::{DataAuth, Secret};
use rainstorm::runtime::exec::{ScriptFn, Scripts};
use rainstorm::runtime::log::committed_lineage;
use rainstorm::runtime::sink::segment_text;
use rainstorm::runtime::store::Store;
use rainstorm::runtime::task::{run_task, TaskEnd, TaskEnv, TaskStatus};
use sim::net::SimNet;
use sim::rng::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
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

/// One simulated host: the leader (host 0: no data plane, only the route table it pushes) or
/// a worker (a data listener and the task attempts placed on it).
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

/// A task attempt's end as its worker reports it.
type Report = (TaskPos, u32, TaskEnd);

/// What a follower read as the sink's committed output at one moment.
type Sample = Result<Vec<u8>, String>;

struct Sim {
    rng: Rng,
    net: SimNet,
    store: Store,
    spec: JobSpec,
    job: JobId,
    hosts: Vec<Host>,
    /// Workers (host indices ≥ 1) the coordinator believes alive.
    alive: Vec<bool>,
    placement: Placement,
    /// Per task, the source (stage 0) and the sink (stage K+1) included: (host, current
    /// attempt).
    tasks: BTreeMap<TaskPos, (usize, u32)>,
    running: BTreeMap<(TaskPos, u32), Attempt>,
    epoch: u32,
    events: mpsc::UnboundedSender<Report>,
    /// Pending timed actions: (when, order set) → what.
    timers: BTreeMap<(Instant, u64), Timed>,
    timer_seq: u64,
    /// When the sink's current attempt finished: the job then drains and ends.
    sink_done_at: Option<Instant>,
    /// While the leader is down: when it comes back.
    leader_down: Option<Instant>,
    /// Task ends the workers hold while the leader is down (they retry until it has them).
    held: Vec<Report>,
    /// Followers' reads of the sink's committed output, in the order they completed.
    samples: Arc<Mutex<Vec<Sample>>>,
    restarts: u32,
    log: Vec<String>,
}

const LEADER: usize = 0;

/// How long the leader waits for a worker's heartbeat before declaring it dead (and for the
/// workers to rejoin after it restarted).
const DEAD_AFTER: Duration = Duration::from_millis(30);

/// How long a job whose sink finished waits for its other tasks' ends (as `leader::outcome`).
const DRAIN: Duration = Duration::from_secs(10);

/// Leader restarts simulated over the whole run (to show the fault is exercised).
static LEADER_RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Restarted attempts of the source and of the sink over the whole run.
static SOURCE_RESTARTS: AtomicU64 = AtomicU64::new(0);
static SINK_RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Followers' reads checked against the output (non-empty ones), and jobs that failed (their
/// output is the committed lineage).
static SAMPLES_CHECKED: AtomicU64 = AtomicU64::new(0);
static JOBS_FAILED: AtomicU64 = AtomicU64::new(0);

impl Sim {
    fn host_env(&self, i: usize) -> TaskEnv {
        self.hosts[i].env.clone()
    }

    fn sink(&self) -> TaskPos {
        TaskPos {
            stage: self.spec.stages.len() as u32 + 1,
            index: 0,
        }
    }

    fn sink_key(&self) -> TaskKey {
        TaskKey {
            job: self.job.clone(),
            pos: self.sink(),
        }
    }

    /// Sets a timed action.
    fn at(&mut self, when: Instant, t: Timed) {
        self.timer_seq += 1;
        self.timers.insert((when, self.timer_seq), t);
    }

    /// Any task, the source and the sink included.
    fn random_task(&self) -> TaskPos {
        *self
            .tasks
            .keys()
            .nth(self.rng.below(self.tasks.len() as u64) as usize)
            .expect("tasks exist")
    }

    fn live_workers(&self) -> usize {
        self.alive.iter().skip(1).filter(|a| **a).count()
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

    /// Starts the current attempt of a task (source, operator or sink alike) on its worker.
    fn start_task(&mut self, pos: TaskPos) {
        let (host, attempt) = self.tasks[&pos];
        if attempt > 0 && pos.stage == 0 {
            SOURCE_RESTARTS.fetch_add(1, Ordering::Relaxed);
        } else if attempt > 0 && pos == self.sink() {
            SINK_RESTARTS.fetch_add(1, Ordering::Relaxed);
            // Followers also read while the new attempt takes over (its fences, listing and
            // manifest in flight, a zombie predecessor perhaps still writing).
            for _ in 0..4 {
                let after = Duration::from_micros(self.rng.below(6_000));
                self.at(Instant::now() + after, Timed::Sample);
            }
        }
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

    /// A new epoch: every task, the source and the sink included, restarts at a new attempt
    /// (on its worker if alive); the sink's log keeps what it committed.
    fn restart_epoch(&mut self) -> Result<(), String> {
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
        self.sink_done_at = None;
        self.push_routes();
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

    /// A recovery the leader starts on its own (a worker declared dead, a task it believes
    /// stalled): under at-most-once the job ends; otherwise a task that finds no live worker
    /// is recovered when its worker rejoins (its zombie is then stopped and reports).
    fn recover_lost(&mut self, pos: TaskPos) -> Result<(), String> {
        match self.recover(pos) {
            Err(e) if recovery(self.spec.delivery) == Recovery::Fail => Err(e),
            Err(e) => {
                self.log.push(format!("recovery failed: {e}"));
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Reacts to a task end the leader hears of, as `leader::outcome` does; an error ends the
    /// job.
    fn on_end(&mut self, (pos, attempt, end): Report) -> Result<(), String> {
        let current = self.tasks.get(&pos).map(|(_, a)| *a) == Some(attempt);
        if !current {
            return Ok(());
        }
        match end {
            TaskEnd::Finished => {
                self.log.push(format!("{pos} attempt {attempt} finished"));
                // As the leader does: a restarted upstream learns it has nothing left to
                // deliver to a finished task.
                if self.placement.finish(pos, attempt) {
                    self.push_routes();
                }
                if pos == self.sink() {
                    // The sink holds every end of stream and wrote the output.
                    self.sink_done_at = Some(Instant::now());
                }
            }
            TaskEnd::Failed(e) => {
                self.log
                    .push(format!("{pos} attempt {attempt} failed: {e}"));
                if self.restarts > 60 {
                    return Err(format!("too many restarts; last: {pos}: {e}"));
                }
                self.recover(pos)?;
                if self.rng.chance(0.3) {
                    // Aim at the successor while it recovers.
                    let at = Instant::now() + Duration::from_micros(self.rng.below(4000));
                    self.at(at, Timed::KillTask(pos));
                }
            }
            TaskEnd::Cancelled => {
                self.log.push(format!("{pos} attempt {attempt} cancelled"));
                self.recover(pos)?;
            }
        }
        Ok(())
    }

    /// A follower reads the sink's committed output (in its own task, racing the writers).
    fn sample(&self) {
        let store = self.store.clone();
        let key = self.sink_key();
        let samples = self.samples.clone();
        tokio::spawn(async move {
            if let Some(s) = committed_text(&store, &key).await.transpose() {
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        });
    }

    /// Injects one fault of the plan; an error ends the job.
    fn chaos(&mut self, kind: Chaos, now: Instant) -> Result<(), String> {
        let n_workers = self.hosts.len() - 1;
        match kind {
            Chaos::Kill => {
                let pos = self.random_task();
                self.at(now, Timed::KillTask(pos));
            }
            Chaos::Cut => {
                self.net.cut_random(&self.rng);
            }
            Chaos::Partition => {
                let w = 1 + self.rng.below(n_workers as u64) as usize;
                if self.alive[w] && self.live_workers() > 1 {
                    self.net.partition(&self.hosts[w].name, &self.rng);
                    self.log.push(format!("partition {}", self.hosts[w].name));
                    let heal = now + Duration::from_micros(5_000 + self.rng.below(200_000));
                    self.at(now + DEAD_AFTER, Timed::DeclareDead(w, heal));
                    self.at(heal, Timed::Heal(w));
                }
            }
            Chaos::Stall => {
                let pos = self.random_task();
                let (host, attempt) = self.tasks[&pos];
                if self.leader_down.is_none()
                    && self.alive[host]
                    && self.spec.delivery == Delivery::ExactlyOnce
                {
                    if let Some(a) = self.running.remove(&(pos, attempt)) {
                        self.log.push(format!("stalled {pos} attempt {attempt}"));
                        let at = now + Duration::from_micros(self.rng.below(30_000));
                        self.at(at, Timed::Stop(a.cancel.clone()));
                        self.running.insert((pos, attempt + 2_000_000), a);
                        self.recover_lost(pos)?;
                    }
                }
            }
            Chaos::ControlCut => {
                let w = 1 + self.rng.below(n_workers as u64) as usize;
                if self.alive[w] && self.live_workers() > 1 {
                    self.log
                        .push(format!("control plane of {} cut", self.hosts[w].name));
                    let learn = now + Duration::from_micros(20_000 + self.rng.below(200_000));
                    self.at(now, Timed::DeclareDead(w, learn));
                    self.at(learn, Timed::Rejoin(w));
                }
            }
            Chaos::LeaderCrash => {
                if self.leader_down.is_none() && self.sink_done_at.is_none() {
                    let back = now + Duration::from_micros(1_000 + self.rng.below(60_000));
                    self.log.push("leader crash".into());
                    self.leader_down = Some(back);
                    self.at(back, Timed::LeaderBack);
                }
            }
            Chaos::StoreFaults => {
                if let Store::Memory(m) = &self.store {
                    let n = if self.rng.chance(0.2) {
                        12
                    } else {
                        1 + self.rng.below(4) as u32
                    };
                    m.fail_puts.store(n, Ordering::Relaxed);
                    self.log.push(format!("store fails the next {n} writes"));
                }
            }
        }
        Ok(())
    }

    /// Carries out a timed action; an error ends the job.
    fn fire(&mut self, t: Timed, now: Instant) -> Result<(), String> {
        match t {
            Timed::LeaderBack => {
                // As `leader::cleanup::restore_jobs` and `api::control::adopt`: the job carries
                // on from its recorded placement (no task restarts), every worker rejoins with
                // its attempts and gets the placement again, and the ends it held reach the
                // driver as if they had just happened.
                self.leader_down = None;
                self.log.push("leader back".into());
                LEADER_RESTARTS.fetch_add(1, Ordering::Relaxed);
                self.push_routes();
                for r in std::mem::take(&mut self.held) {
                    self.on_end(r)?;
                }
            }
            Timed::Stop(c) => c.cancel(),
            Timed::Sample => self.sample(),
            Timed::KillTask(pos) => {
                let (_, attempt) = self.tasks[&pos];
                if let Some(a) = self.running.remove(&(pos, attempt)) {
                    if !self.alive[a.host] {
                        self.running.insert((pos, attempt), a);
                        return Ok(());
                    }
                    a.handle.abort();
                    self.log.push(format!("kill {pos} attempt {attempt}"));
                    // Its worker reports the crash, as a real one does.
                    let _ = self
                        .events
                        .send((pos, attempt, TaskEnd::Failed("killed".into())));
                }
            }
            Timed::DeclareDead(w, heal) => {
                if heal <= now || !self.alive[w] {
                    return Ok(());
                }
                if let Some(back) = self.leader_down {
                    // Nobody declares anything while the leader is down; the restarted leader
                    // gives every worker a heartbeat timeout to rejoin.
                    self.at(back + DEAD_AFTER, Timed::DeclareDead(w, heal));
                    return Ok(());
                }
                self.alive[w] = false;
                self.log
                    .push(format!("{} declared dead", self.hosts[w].name));
                let lost: Vec<TaskPos> = self
                    .tasks
                    .iter()
                    .filter(|(_, (h, _))| *h == w)
                    .map(|(p, _)| *p)
                    .collect();
                for pos in lost {
                    // Its attempts run on as zombies until the worker learns.
                    let (_, attempt) = self.tasks[&pos];
                    if let Some(a) = self.running.remove(&(pos, attempt)) {
                        self.running.insert((pos, attempt + 1_000_000), a);
                    }
                    if self.live_workers() == 0 {
                        break;
                    }
                    self.recover_lost(pos)?;
                }
            }
            Timed::Heal(w) => {
                self.net.heal(&self.hosts[w].name);
                self.log.push(format!("heal {}", self.hosts[w].name));
                if !self.alive[w] {
                    // The worker learns it was declared dead (its next heartbeat says so) a
                    // little later: it stops its zombies and rejoins.
                    let at = now + Duration::from_micros(self.rng.below(20_000));
                    self.at(at, Timed::Rejoin(w));
                }
            }
            Timed::Rejoin(w) => {
                if self.alive[w] {
                    return Ok(());
                }
                if let Some(back) = self.leader_down {
                    self.at(back, Timed::Rejoin(w));
                    return Ok(());
                }
                for a in self.running.values() {
                    if a.host == w {
                        a.cancel.cancel();
                    }
                }
                self.alive[w] = true;
                self.push_routes();
                self.log.push(format!("{} rejoined", self.hosts[w].name));
            }
        }
        Ok(())
    }
}

/// The text a follower may print of a task's committed log right now (`None` while a
/// successor takes over), as the leader serves it.
async fn committed_text(store: &Store, key: &TaskKey) -> Result<Option<Vec<u8>>, String> {
    let Some(lineage) = committed_lineage(store, key)
        .await
        .map_err(|e| format!("committed lineage: {e}"))?
    else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for seg in &lineage {
        let data = store
            .get(seg)
            .await
            .map_err(|e| format!("reading {seg}: {e}"))?;
        let text = segment_text(seg, data).map_err(|e| format!("decoding {seg}: {e}"))?;
        out.extend_from_slice(&text);
    }
    Ok(Some(out))
}

/// What `leader::cleanup` writes as the output of a job that did not succeed: the sink's
/// committed lineage, waiting briefly for a takeover to settle.
async fn committed_output(store: &Store, key: &TaskKey) -> Result<Vec<u8>, String> {
    for _ in 0..20 {
        if let Some(text) = committed_text(store, key).await? {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the sink's log stayed in a takeover".into())
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
    /// The leader dies and comes back a little later, carrying the job on: no task restarts
    /// (the source and the sink are tasks on workers like the others). While it is down
    /// nothing is recovered or declared dead, and the workers hold the ends they report; when
    /// it is back they rejoin, get the placement again and deliver what they held, and a
    /// worker still cut off is declared dead a heartbeat timeout later.
    LeaderCrash,
}

struct SeedResult {
    delivery: Delivery,
    outcome: Result<(), String>,
    /// The object at the sink path once the job ended, if any.
    written: Option<Vec<u8>>,
    /// The sink's committed output once the job ended (what cleanup writes for a job that
    /// did not succeed).
    committed: Result<Vec<u8>, String>,
    /// Followers' reads during the run.
    samples: Vec<Sample>,
    reference: BTreeMap<String, i64>,
    log: Vec<String>,
    /// A fingerprint of the run: the coordinator's log, the output bytes, the virtual time the
    /// run took and the data-plane traffic (`sim::net`'s trace). A seed's replay gives the
    /// same one.
    trace: u64,
}

impl SeedResult {
    /// The job's output: the sink's file for a job that succeeded, what cleanup writes (the
    /// committed lineage) for one that did not.
    fn output(&self) -> Result<&[u8], String> {
        match (&self.outcome, &self.written) {
            (Ok(()), Some(w)) => Ok(w),
            (Ok(()), None) => Err("the sink finished but its output is missing".into()),
            (Err(_), _) => self.committed.as_deref().map_err(|e| e.clone()),
        }
    }
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
    // Store operations take virtual time in most seeds, so other tasks run between a caller's
    // operations as against a real store: a zombie's segment write and its fence check, a
    // successor's fences, listing and manifest, a follower's listing and its fence check.
    if let Store::Memory(m) = &store {
        let us = [0, 20, 100, 400][rng.below(4) as usize];
        m.latency_us.store(us, Ordering::Relaxed);
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
        if i != LEADER {
            // No tuple passes through the leader: only workers listen for data.
            let acceptor = net.listen(&name, &addr);
            servers.push(tokio::spawn(listener::serve(
                acceptor,
                env.registry.clone(),
                env.routes.clone(),
                env.auth.clone(),
                listener::Limits::of(&cfg),
                stop.clone(),
            )));
        }
        hosts.push(Host { name, addr, env });
    }
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let job = JobId("job-1".into());
    let k = spec.stages.len() as u32;
    let mut sim = Sim {
        rng: rng.fork(),
        net: net.clone(),
        store: store.clone(),
        job: job.clone(),
        alive: vec![true; hosts.len()],
        hosts,
        placement: Placement::default(),
        tasks: BTreeMap::new(),
        running: BTreeMap::new(),
        epoch: 0,
        events: ev_tx,
        timers: BTreeMap::new(),
        timer_seq: 0,
        sink_done_at: None,
        leader_down: None,
        held: Vec::new(),
        samples: Arc::default(),
        restarts: 0,
        log: vec![format!(
            "{delivery:?} {pipeline:?} rows={n_rows} workers={n_workers} {:?} cfg={cfg:?}",
            spec.stages.iter().map(|s| s.tasks).collect::<Vec<_>>()
        )],
        spec,
    };
    // Every task — source, operators, sink — on the workers, round robin from a random one.
    let mut next = rng.below(n_workers as u64) as usize;
    for stage in 0..=k + 1 {
        let n = if stage == 0 || stage == k + 1 {
            1
        } else {
            tasks_of(&sim.spec, stage)
        };
        for index in 0..n {
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
    // Followers read the committed output at random moments.
    for _ in 0..3 + rng.below(6) {
        let at = t0 + Duration::from_micros(rng.below(1_500_000));
        sim.at(at, Timed::Sample);
    }
    let outcome: Result<(), String> = loop {
        if let Some(at) = sim.sink_done_at {
            // The source never ends (it serves restarted first-stage tasks until stopped).
            let drained = sim
                .tasks
                .iter()
                .filter(|(pos, _)| pos.stage > 0)
                .all(|(pos, (_, a))| !sim.running.contains_key(&(*pos, *a)));
            if drained || Instant::now() >= at + DRAIN {
                break Ok(());
            }
        }
        let next_plan = plan.peek().map(|(at, _)| t0 + Duration::from_micros(*at));
        let next_timer = sim.timers.keys().next().map(|(t, _)| *t);
        let drained = sim.sink_done_at.map(|t| t + DRAIN);
        let wake = [next_plan, next_timer, drained, Some(deadline)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline);
        tokio::select! {
            biased;
            Some(report) = ev_rx.recv() => {
                sim.running.remove(&(report.0, report.1));
                if sim.leader_down.is_some() {
                    sim.held.push(report);
                    continue;
                }
                if let Err(e) = sim.on_end(report) {
                    break Err(e);
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
                let mut res = Ok(());
                while let Some((at, _)) = plan.peek() {
                    if t0 + Duration::from_micros(*at) > now {
                        break;
                    }
                    let Some((_, kind)) = plan.next() else { break };
                    sim.sample();
                    res = sim.chaos(kind, now);
                    if res.is_err() {
                        break;
                    }
                }
                while res.is_ok() {
                    match sim.timers.first_key_value() {
                        Some(((at, _), _)) if *at <= now => {}
                        _ => break,
                    }
                    let Some((_, t)) = sim.timers.pop_first() else { break };
                    res = sim.fire(t, now);
                }
                if let Err(e) = res {
                    break Err(e);
                }
            }
        }
    };
    // The end of the job, as `leader::cleanup`: every task of it stopped (the source too).
    for a in sim.running.values() {
        a.cancel.cancel();
    }
    stop.cancel();
    for (_, a) in std::mem::take(&mut sim.running) {
        a.handle.abort();
    }
    for s in servers {
        s.abort();
    }
    let written = store
        .get(&sim.spec.sink_path)
        .await
        .ok()
        .map(|b| b.to_vec());
    let committed = committed_output(&store, &sim.sink_key()).await;
    let samples = std::mem::take(&mut *sim.samples.lock().unwrap_or_else(|p| p.into_inner()));
    let mut trace = 0xcbf2_9ce4_8422_2325;
    for l in &sim.log {
        trace = fnv(trace, l.as_bytes());
        trace = fnv(trace, b"\n");
    }
    trace = fnv(trace, written.as_deref().unwrap_or_default());
    trace = fnv(trace, committed.as_deref().unwrap_or_default());
    for s in &samples {
        trace = fnv(
            trace,
            &(s.as_ref().map_or(0, |s| s.len()) as u64).to_le_bytes(),
        );
    }
    trace = fnv(trace, &(t0.elapsed().as_nanos() as u64).to_le_bytes());
    trace = fnv(trace, &sim::net::trace_hash().to_le_bytes());
    SeedResult {
        delivery,
        outcome,
        written,
        committed,
        samples,
        reference,
        log: sim.log,
        trace,
    }
}

enum Timed {
    LeaderBack,
    KillTask(TaskPos),
    Stop(CancellationToken),
    DeclareDead(usize, Instant),
    Heal(usize),
    Rejoin(usize),
    /// A follower reads the sink's committed output.
    Sample,
}

/// Checks a seed's result against its delivery mode's invariant, and every follower's read
/// against the final output.
fn check(r: &SeedResult) -> Result<(), String> {
    let raw = r.output()?;
    let mut output: BTreeMap<String, i64> = BTreeMap::new();
    for l in String::from_utf8_lossy(raw).lines() {
        *output.entry(l.to_string()).or_insert(0) += 1;
    }
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
    let missing = diff(&r.reference, &output);
    let extra = diff(&output, &r.reference);
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
    if r.outcome.is_err() {
        JOBS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    if r.outcome.is_ok() {
        // What followers printed last is the output file.
        match &r.committed {
            Ok(c) if c.as_slice() == raw => {}
            Ok(c) => {
                return Err(format!(
                    "the output ({} bytes) differs from the sink's committed lineage ({} bytes)",
                    raw.len(),
                    c.len()
                ))
            }
            Err(e) => return Err(format!("the sink's committed lineage: {e}")),
        }
    }
    // A follower prints the committed output as it grows: never taken back.
    for (i, s) in r.samples.iter().enumerate() {
        match s {
            Ok(s) if raw.starts_with(s) => {
                if !s.is_empty() {
                    SAMPLES_CHECKED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(s) => {
                let at = s
                    .iter()
                    .zip(raw)
                    .position(|(a, b)| a != b)
                    .unwrap_or(s.len().min(raw.len()));
                return Err(format!(
                    "follower read {i} ({} bytes) is not a prefix of the output ({} bytes): they differ at byte {at}",
                    s.len(),
                    raw.len()
                ));
            }
            Err(e) => return Err(format!("follower read {i} failed: {e}")),
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
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{seeds} seeds passed ({} simulated leader restarts, {} source and {} sink restarts, \
         {} jobs failed under at-most-once, {} follower reads checked)",
        n(&LEADER_RESTARTS),
        n(&SOURCE_RESTARTS),
        n(&SINK_RESTARTS),
        n(&JOBS_FAILED),
        n(&SAMPLES_CHECKED)
    );
}
