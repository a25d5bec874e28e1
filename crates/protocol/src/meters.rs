//! What a worker measures about each task attempt beyond its tuple counts, carried to the
//! leader in every report: bytes, where the attempt's time goes (processing, waiting for
//! downstream room), and the durations of its input-log commits and (a sink) of its tuples'
//! trip from the source. Counters are cumulative over the attempt, so a lost heartbeat loses
//! no measurement: the leader derives rates and shares from the difference of two reports.

use crate::model::hist::Hist;
use serde::{Deserialize, Serialize};

/// An attempt's meters as of one report (all zero from a worker that does not measure).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskMeters {
    /// Key and value bytes of the tuples accepted.
    pub bytes_in: u64,
    /// Key and value bytes of the tuples emitted.
    pub bytes_out: u64,
    /// Time spent processing input: feeding the operator and the operator working (a sink:
    /// writing its log), less the time blocked downstream, ns.
    pub busy_ns: u64,
    /// Time blocked handing output downstream because a link's queue was full (its window of
    /// unacknowledged batches is full: the receiver is slower), ns.
    pub backpressure_ns: u64,
    /// Time since the attempt started, ns: the whole the shares above are taken of.
    pub uptime_ns: u64,
    /// Durations of the input log's segment writes (logged tasks only).
    pub log_commit: Option<Hist>,
    /// Source-to-sink latency of the tuples a sink accepted (sink tasks only).
    pub latency: Option<Hist>,
    /// A source: bytes of its file read so far (lines and their line ends), so a follower
    /// can show how much of the input is done.
    pub source_read: u64,
    /// A source: its file's size when the attempt opened it (unknown if it could not be
    /// looked up).
    pub source_size: Option<u64>,
}
