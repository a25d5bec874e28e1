//! The data plane: one listener per process (TCP, or the simulation's network), per-link connections carrying sequenced
//! batches, cumulative acks and end-of-stream markers, bounded windows and queues throughout.
//!
//! A tuple's trip: an operator's output goes to the [`router::Router`], which partitions it and
//! batches it per destination; each destination has a [`link`] task that numbers the batch,
//! keeps it in its window and writes it to the connection; the receiving process's
//! [`listener`] hands it to the destination task's bounded inbox (so backpressure reaches TCP);
//! the task judges it with [`acceptance::Acceptance`], processes it, and publishes its ack on the
//! [`inbound::AckBoard`], which the connection forwards back.

#![warn(missing_docs)]

use rainstorm_model as model;
use rainstorm_protocol as protocol;

pub mod acceptance;
pub mod clock;
pub mod inbound;
pub mod link;
pub mod listener;
pub mod local;
pub mod meter;
pub mod mux;
pub mod net;
pub mod reroute;
pub mod router;
pub mod routes;
pub mod transport;

/// Tunables of the data plane, shared by every link and task of a process.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// Tuples per batch before a batch is cut.
    pub batch_tuples: usize,
    /// Bytes per batch before a batch is cut.
    pub batch_bytes: usize,
    /// Unacknowledged bytes a link may have in flight before it stops taking batches.
    pub window_bytes: usize,
    /// Batches queued between a router and a link, and between a connection and a task.
    pub queue_batches: usize,
    /// How long a group commit of the input log waits for more records before writing
    /// (microseconds): fewer, larger segments under load, at most this much added latency.
    pub log_linger_us: usize,
    /// The least time between the starts of two segment writes of one task's input log
    /// (milliseconds): what bounds a logged task's store writes by time (at most 1000 / this
    /// a second while its links are far from their windows), at the cost of up to this much
    /// latency per logged stage. A commit that holds an input link's end goes out at once
    /// (once per link), so a job's last tuples do not wait it; so does one that holds half an
    /// input link's window (its sender would stop until the commit acknowledges it): writes
    /// are then bounded by bytes, each at least half a window. 0: a segment as soon as the
    /// previous one is written.
    pub log_commit_ms: usize,
    /// How many objects of one level a logged task's compaction merges into one (`docs/
    /// exactly-once.md`, "Compaction"): a log of `n` group commits keeps about
    /// `(fanin - 1) * log_fanin(n)` objects. 0 or 1: no compaction.
    pub log_compact_fanin: usize,
    /// The largest object a compaction writes (bytes): a run that would be larger stays as it
    /// is, so readers never hold more than this of one object in memory, and a merge (its
    /// inputs and its output) at most twice this (8 MiB: at 64 MiB a long job's merges
    /// grew the process by hundreds of megabytes, docs/benchmarks.md).
    pub log_compact_bytes: usize,
    /// How old a group commit must be before compaction may merge it (milliseconds; Kafka's
    /// `min.compaction.lag.ms`): a job that ends sooner rewrites nothing (its log is deleted
    /// with it), and a long job keeps at most this much of its newest commits unmerged
    /// besides its tiers (at 100 ms commits and the default 2 s, 20 objects). 0: merge as
    /// soon as a tier fills.
    pub log_compact_lag_ms: usize,
    /// Whether a sink spools its lineage's text for the output (1, the default) or reads its
    /// segments back from the store at the end (0: for a worker short of local disk).
    pub sink_spool: usize,
    /// How long a new connection to the data listener may take to prove the cluster secret
    /// in its Hello before it is closed (milliseconds).
    pub hello_deadline_ms: usize,
    /// Connections (links' streams or TCP connections) the data listener serves at once, and
    /// TCP connections it holds (more are closed as they come), and link connections this
    /// process's links hold open at once (more wait for one to close). A link connecting per
    /// link holds one descriptor at each end, so this bounds the data plane's descriptors at
    /// twice it; [`DataConfig::fit_to_fds`] lowers it to what the process may open. The leader
    /// admits no more links into the cluster than the smallest worker's cap.
    pub max_conns: usize,
    /// Whether this process's links share one TCP connection per peer process (1, the
    /// default: [`mux`]) or each open a TCP connection of its own (0). Only how this process
    /// connects: its listener takes both kinds from any peer.
    pub mux: usize,
    /// Whether links to a listener of this same process (an embedded cluster's workers, a
    /// worker's own tasks) go through in-memory pipes (1, the default: [`local`]) or through
    /// the network like any other (0).
    pub local: usize,
}

/// See [`DataConfig::log_commit_ms`] (`docs/benchmarks.md`: what it costs and saves).
pub const DEFAULT_LOG_COMMIT_MS: usize = 100;

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            batch_tuples: 1024,
            batch_bytes: 256 * 1024,
            window_bytes: 2 * 1024 * 1024,
            queue_batches: 8,
            log_linger_us: 2000,
            log_commit_ms: DEFAULT_LOG_COMMIT_MS,
            log_compact_fanin: 8,
            log_compact_bytes: 8 << 20,
            log_compact_lag_ms: 2000,
            sink_spool: 1,
            hello_deadline_ms: 10_000,
            max_conns: model::check::MAX_LINKS as usize,
            mux: 1,
            local: 1,
        }
    }
}

impl DataConfig {
    /// Defaults, overridden by `RAINSTORM_BATCH_TUPLES`, `RAINSTORM_BATCH_BYTES`,
    /// `RAINSTORM_WINDOW_BYTES`, `RAINSTORM_QUEUE_BATCHES`, `RAINSTORM_LOG_LINGER_US`,
    /// `RAINSTORM_LOG_COMMIT_MS`, `RAINSTORM_LOG_COMPACT_FANIN`, `RAINSTORM_LOG_COMPACT_BYTES`,
    /// `RAINSTORM_LOG_COMPACT_LAG_MS`,
    /// `RAINSTORM_HELLO_DEADLINE_MS`, `RAINSTORM_MAX_DATA_CONNS`, `RAINSTORM_DATA_MUX` and
    /// `RAINSTORM_DATA_LOCAL` when set (bad values are reported and ignored).
    pub fn from_env() -> Self {
        let mut c = DataConfig::default();
        let vars: [(&str, &mut usize); 14] = [
            ("RAINSTORM_DATA_MUX", &mut c.mux),
            ("RAINSTORM_DATA_LOCAL", &mut c.local),
            ("RAINSTORM_SINK_SPOOL", &mut c.sink_spool),
            ("RAINSTORM_LOG_COMPACT_FANIN", &mut c.log_compact_fanin),
            ("RAINSTORM_LOG_COMPACT_BYTES", &mut c.log_compact_bytes),
            ("RAINSTORM_LOG_COMPACT_LAG_MS", &mut c.log_compact_lag_ms),
            ("RAINSTORM_LOG_LINGER_US", &mut c.log_linger_us),
            ("RAINSTORM_LOG_COMMIT_MS", &mut c.log_commit_ms),
            ("RAINSTORM_BATCH_TUPLES", &mut c.batch_tuples),
            ("RAINSTORM_BATCH_BYTES", &mut c.batch_bytes),
            ("RAINSTORM_WINDOW_BYTES", &mut c.window_bytes),
            ("RAINSTORM_QUEUE_BATCHES", &mut c.queue_batches),
            ("RAINSTORM_HELLO_DEADLINE_MS", &mut c.hello_deadline_ms),
            ("RAINSTORM_MAX_DATA_CONNS", &mut c.max_conns),
        ];
        for (name, slot) in vars {
            if let Ok(v) = std::env::var(name) {
                match v.parse::<usize>() {
                    Ok(n)
                        if n > 0
                            || name.starts_with("RAINSTORM_LOG_")
                            || name == "RAINSTORM_SINK_SPOOL"
                            || name == "RAINSTORM_DATA_MUX"
                            || name == "RAINSTORM_DATA_LOCAL" =>
                    {
                        *slot = n
                    }
                    _ => {
                        tracing::warn!(%name, value = %v, "ignoring a data-plane setting that is not a positive integer")
                    }
                }
            }
        }
        c
    }
}

/// Descriptors of a process kept out of the data plane's reach, out of `limit`: a quarter, at
/// least 256. They keep the control plane (heartbeats, command polls, events), the store,
/// operators' pipes and files working however many links are open.
pub fn fd_reserve(limit: u64) -> u64 {
    (limit / 4).max(256)
}

impl DataConfig {
    /// This config with `max_conns` lowered so that the data plane fits in `fds` descriptors
    /// (the process's limit, or its share of it): the listener's connections and the links'
    /// connections, each at most `max_conns`, plus [`fd_reserve`] for everything else. At
    /// least 1, so a tiny limit still runs a tiny job.
    pub fn fit_to_fds(mut self, fds: u64) -> DataConfig {
        let room = fds.saturating_sub(fd_reserve(fds)) / 2;
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        self.max_conns = self.max_conns.min(room).max(1);
        self
    }
}

pub use clock::now_ns;
