//! The one receive loop of every receiver — tasks of every delivery mode and the sink. It
//! takes the inbox's messages in order, asks the [`Acceptance`] rule what each one means, and
//! hands the result to an [`Intake`]: feed an operator, append to the input log, or write the
//! sink file. Nothing about dedup, gaps, ends of stream or staleness is decided anywhere else.

use super::operator::Stop;
use super::TaskStatus;
use crate::dataplane::acceptance::{reset_on_gap, Acceptance, Verdict};
use crate::dataplane::inbound::{AckBoard, Inbound};
use crate::model::ids::TaskKey;
use crate::model::tuple::Tuple;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Accepted input: tuples `first_seq..=last_seq` of link `from`, in order and new to this
/// attempt.
pub(crate) struct Accepted {
    /// The link (the upstream task's index).
    pub(crate) from: u32,
    /// Sequence number of the first tuple.
    pub(crate) first_seq: u64,
    /// Sequence number of the last tuple.
    pub(crate) last_seq: u64,
    /// When the batch was emitted.
    pub(crate) emit_ns: u64,
    /// The tuples.
    pub(crate) tuples: Vec<Tuple>,
}

/// Input the sender holds acknowledged but this attempt never saw: tuples `after+1..=upto` of
/// link `from`, followed by its end of stream if `ended`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unseen {
    /// The link (the upstream task's index).
    pub(crate) from: u32,
    /// The last tuple this attempt holds.
    pub(crate) after: u64,
    /// The last tuple the sender holds acknowledged.
    pub(crate) upto: u64,
    /// Whether the sender holds the link's end of stream acknowledged too.
    pub(crate) ended: bool,
}

impl Unseen {
    /// The failure of a receiver (`what`) that cannot regenerate this input.
    pub(crate) fn cannot_regenerate(&self, what: &str) -> Stop {
        Stop::Failed(format!(
            "link {} is acknowledged up to {}, which this {what} cannot regenerate",
            self.from, self.upto
        ))
    }
}

/// What a receiver does with accepted input.
pub(crate) trait Intake {
    /// Accepted tuples.
    async fn fresh(&mut self, batch: Accepted) -> Result<(), Stop>;

    /// Link `from` ended behind tuple `last_seq`.
    async fn ended(&mut self, from: u32, last_seq: u64) -> Result<(), Stop>;

    /// Rebuilds the `unseen` input, counting each tuple (and its bytes) on `progress` as it
    /// goes (a long regeneration is progress, not a stall). Only receivers built as
    /// regenerable are asked.
    async fn regenerate(&mut self, unseen: Unseen, progress: &TaskStatus) -> Result<(), Stop> {
        let _ = progress;
        Err(unseen.cannot_regenerate("receiver"))
    }

    /// The inbox is momentarily empty: push out what is buffered.
    async fn idle(&mut self) -> Result<(), Stop>;

    /// Resolves when the consumer needs a turn while no input comes: `Err` if it failed on
    /// its own (an operator process died), `Ok` when its stage's routing changed (it takes
    /// its turn in [`Intake::idle`], outside the race with the inbox: a task may now hand
    /// key groups' state over, which must not be dropped halfway).
    async fn interrupted(&mut self) -> Result<(), Stop> {
        std::future::pending().await
    }

    /// Whether acceptance is acknowledged as soon as the intake returns (false: a log writer
    /// acknowledges once the input is durable).
    fn acks_on_accept(&self) -> bool;
}

/// Receives until every incoming link has ended.
pub(crate) async fn receive<I: Intake>(
    task: &TaskKey,
    inbox: &mut mpsc::Receiver<Inbound>,
    acc: &mut Acceptance,
    intake: &mut I,
    acks: &AckBoard,
    status: &TaskStatus,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let tuples_in = &status.tuples_in;
    // Per link, the sender attempt whose connection was taken last: nothing of an older one
    // is taken after it (a restarted sender learns how far its predecessors got).
    let mut senders: std::collections::BTreeMap<u32, u32> = Default::default();
    while !acc.all_ended() {
        let msg = match inbox.try_recv() {
            Ok(m) => m,
            Err(_) => {
                intake.idle().await?;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Stop::Cancelled),
                    r = intake.interrupted() => {
                        r?;
                        intake.idle().await?;
                        continue;
                    }
                    m = inbox.recv() => m.ok_or(Stop::Cancelled)?,
                }
            }
        };
        tracing::trace!(%task, msg = ?MsgSummary(&msg), "inbox");
        let from = match msg {
            Inbound::Connected {
                from,
                acked,
                eos_acked,
                conn,
            } => {
                if senders.get(&from).is_some_and(|a| *a > conn.attempt()) {
                    continue;
                }
                senders.insert(from, conn.attempt());
                let verdict = acc.connected(from, acked, eos_acked);
                acks.seen(from, conn.attempt(), acc.hwm(from));
                match verdict {
                    Verdict::Regenerate { after, upto, ended } => {
                        let unseen = Unseen {
                            from,
                            after,
                            upto,
                            ended,
                        };
                        intake.regenerate(unseen, status).await?;
                        acc.regenerated(from, upto, ended);
                        if ended {
                            intake.ended(from, upto).await?;
                        }
                    }
                    // Every attempt recovers the same log, so none can mend it: the job fails.
                    Verdict::Lost { have, acked } => {
                        return Err(Stop::Unrecoverable(format!(
                            "input log holds less than was acknowledged: link {from} is \
                             acknowledged up to {acked} but the log this attempt recovered holds \
                             only {have} (objects of the log deleted from the store?); refusing \
                             to lose tuples"
                        )))
                    }
                    Verdict::Ended { last_seq } => intake.ended(from, last_seq).await?,
                    Verdict::UnknownLink => {
                        tracing::warn!(%task, from, "connection from an unknown upstream task");
                        continue;
                    }
                    _ => {}
                }
                from
            }
            Inbound::Batch {
                conn,
                from,
                first_seq,
                emit_ns,
                mut tuples,
            } => {
                if senders.get(&from).is_some_and(|a| *a > conn.attempt()) {
                    continue;
                }
                match acc.batch(from, first_seq, &mut tuples) {
                    Verdict::Fresh {
                        first_seq,
                        last_seq,
                    } => {
                        tuples_in.fetch_add(tuples.len() as u64, Ordering::Relaxed);
                        let bytes: usize = tuples.iter().map(|t| t.key.len() + t.value.len()).sum();
                        status.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
                        let batch = Accepted {
                            from,
                            first_seq,
                            last_seq,
                            emit_ns,
                            tuples,
                        };
                        intake.fresh(batch).await?;
                    }
                    v @ Verdict::Gap { .. } => {
                        reset_on_gap(&conn, task, from, &v);
                        continue;
                    }
                    Verdict::UnknownLink => {
                        tracing::warn!(%task, from, "batch from an unknown upstream task; dropped");
                        continue;
                    }
                    _ => {}
                }
                from
            }
            Inbound::Eos {
                conn,
                from,
                last_seq,
            } => {
                if senders.get(&from).is_some_and(|a| *a > conn.attempt()) {
                    continue;
                }
                match acc.end(from, last_seq) {
                    Verdict::Ended { last_seq } => intake.ended(from, last_seq).await?,
                    v @ Verdict::Gap { .. } => {
                        reset_on_gap(&conn, task, from, &v);
                        continue;
                    }
                    Verdict::UnknownLink => {
                        tracing::warn!(%task, from, "end of stream from an unknown upstream task");
                        continue;
                    }
                    _ => {}
                }
                from
            }
        };
        if intake.acks_on_accept() {
            acks.set(from, acc.hwm(from), acc.ended(from));
        }
    }
    Ok(())
}

/// A one-line description of an inbox message for trace logs (without the tuples).
struct MsgSummary<'a>(&'a Inbound);

impl std::fmt::Debug for MsgSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Inbound::Connected {
                from,
                acked,
                eos_acked,
                ..
            } => write!(f, "connected from {from} acked {acked} eos {eos_acked}"),
            Inbound::Batch {
                from,
                first_seq,
                tuples,
                ..
            } => write!(f, "batch from {from} seq {first_seq}+{}", tuples.len()),
            Inbound::Eos { from, last_seq, .. } => write!(f, "eos from {from} at {last_seq}"),
        }
    }
}
