//! Partitions a task's output across the next stage and cuts it into batches, one pending batch
//! per destination. Sending awaits the link's bounded queue, which is how backpressure travels
//! from a slow consumer back to the operator that feeds it.

use super::link::{LinkMsg, OutBatch};
use super::meter::SendMeter;
use super::reroute::{Switchboard, Verdict};
use super::DataConfig;
use crate::model::partition::{Partition, Partitioner};
use crate::model::tuple::Tuple;
use crate::protocol::frame::{open_batch, put_pair, BATCH_HEADER};
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Why a router could not take a tuple.
#[derive(Debug, thiserror::Error)]
pub enum Closed {
    /// The downstream links have gone (job cancelled or task stopping).
    #[error("downstream link closed")]
    Gone,
    /// One tuple is larger than a data-plane frame can carry: the task must fail, since no
    /// retry can ever deliver it. The number is its key's and value's bytes.
    #[error(
        "a tuple whose key and value hold {0} bytes is larger than the data plane carries ({MAX_TUPLE} bytes at most)"
    )]
    TooLarge(usize),
}

/// The largest tuple (key and value bytes) a batch frame can carry: the frame's limit less
/// room for a batch's header and the tuple's lengths.
pub const MAX_TUPLE: usize = crate::protocol::frame::MAX_FRAME - 1024;

/// The longest line an executable operator may write: a tuple of [`MAX_TUPLE`] bytes and
/// the tab between its key and its value. (Lines were bounded by `MAX_TUPLE` and the tuple
/// by `MAX_TUPLE` less its encoded lengths, 8 bytes: a line at the stated limit was refused,
/// quoting its size plus 7; hostile probe.)
pub const MAX_LINE: usize = MAX_TUPLE + 1;

/// Bytes a destination's first batch is allocated for (later ones: about the last one's).
const FIRST_BATCH_CAP: usize = 16 * 1024;

/// Outputs held back during a switch before it waits for the verdict instead (back-pressure).
const HOLD_MAX: usize = 8192;

/// Output side of a task.
pub struct Router {
    links: Vec<mpsc::Sender<LinkMsg>>,
    board: Arc<Switchboard>,
    /// Outputs waiting for a switch's verdict, with their emit time and key group, in order.
    held: Vec<(Tuple, u64, usize)>,
    /// Bumped by every verdict: the router then first sends every pending batch, so what it
    /// routed by the old map is on its way before anything goes by the new one (a task
    /// taking a key group over waits for its earlier owner to log the group's last tuples).
    verdicts: tokio::sync::watch::Receiver<u64>,
    /// Per destination, the batch being filled: encoded as it is routed
    /// (`protocol::frame::open_batch`), so no routed tuple waits here or in a link's queue.
    pending: Vec<BytesMut>,
    pending_count: Vec<u32>,
    pending_bytes: Vec<usize>,
    /// Per destination, what its next batch is allocated for: about its last batch's size.
    pending_cap: Vec<usize>,
    pending_emit: Vec<u64>,
    partitioner: Partitioner,
    cfg: DataConfig,
    emitted: Arc<AtomicU64>,
    meter: Arc<SendMeter>,
    /// Per destination, the tuples handed to its link.
    sent: Vec<u64>,
    /// Per destination, how many of them its receiver holds (`LinkSpec::settled`); empty
    /// when nobody waits on it (`settle` then only flushes).
    settled: Vec<tokio::sync::watch::Receiver<u64>>,
}

impl Router {
    /// A router over `links` (one per downstream task, in index order) that routes by the
    /// key-group maps of `board`, counting the tuples it sends on `emitted` (a batch at a
    /// time) and their bytes and its waits for room on `meter`.
    pub fn new(
        links: Vec<mpsc::Sender<LinkMsg>>,
        partition: Partition,
        board: Arc<Switchboard>,
        cfg: DataConfig,
        emitted: Arc<AtomicU64>,
        meter: Arc<SendMeter>,
    ) -> Self {
        let n = links.len();
        let verdicts = board.verdicts();
        Router {
            links,
            verdicts,
            board,
            held: Vec::new(),
            pending: (0..n).map(|_| BytesMut::new()).collect(),
            pending_count: vec![0; n],
            pending_bytes: vec![0; n],
            pending_cap: vec![FIRST_BATCH_CAP; n],
            pending_emit: vec![u64::MAX; n],
            partitioner: Partitioner::new(partition, 1),
            cfg,
            emitted,
            meter,
            sent: vec![0; n],
            settled: Vec::new(),
        }
    }

    /// Has [`settle`](Self::settle) wait on what each link reports its receiver holds (one
    /// per link, in index order, as each `LinkSpec::settled` publishes it).
    pub fn with_settled(mut self, settled: Vec<tokio::sync::watch::Receiver<u64>>) -> Self {
        self.settled = settled;
        self
    }

    /// Sends everything routed so far (held outputs too, once their switch is decided) and
    /// waits until every receiver holds it. A task hands a key group's state on only after
    /// this: what it emitted for the group is then ahead, at the next stage, of anything the
    /// group's next owner emits (each key's outputs stay in order through a rescale).
    pub async fn settle(&mut self) -> Result<(), Closed> {
        if !self.held.is_empty() {
            self.board.wait_decided().await;
        }
        self.flush().await?;
        for (rx, want) in self.settled.iter_mut().zip(&self.sent) {
            rx.wait_for(|held| *held >= *want)
                .await
                .map_err(|_| Closed::Gone)?;
        }
        Ok(())
    }

    /// Routes one tuple; sends its destination's batch if that batch is full.
    pub async fn push(&mut self, t: Tuple, emit_ns: u64) -> Result<(), Closed> {
        let text = t.key.len() + t.value.len();
        if text > MAX_TUPLE {
            return Err(Closed::TooLarge(text));
        }
        let (g, t) = self.partitioner.route(t);
        self.before_route().await?;
        match self.board.route(g, !self.held.is_empty()) {
            Verdict::To(i) => self.place(i, t, emit_ns).await,
            Verdict::Hold => self.hold(t, emit_ns, g).await,
        }
    }

    /// What comes before routing an output: after a new verdict every pending batch goes
    /// first, and held outputs whose switch is decided go before anything new.
    async fn before_route(&mut self) -> Result<(), Closed> {
        if self.verdicts.has_changed().unwrap_or(false) {
            self.verdicts.mark_unchanged();
            self.send_all().await?;
        }
        if !self.held.is_empty() {
            self.release().await?;
        }
        Ok(())
    }

    /// Holds an output of key group `g` until its switch is decided; past [`HOLD_MAX`]
    /// held, waits for the verdict (back-pressure).
    async fn hold(&mut self, t: Tuple, emit_ns: u64, g: usize) -> Result<(), Closed> {
        self.held.push((t, emit_ns, g));
        if self.held.len() >= HOLD_MAX {
            self.board.wait_decided().await;
            self.release().await?;
        }
        Ok(())
    }

    /// Routes one tuple given as its key and value, without a [`Tuple`] made of it: how the
    /// source routes its lines, borrowed from its read buffer, so a line costs neither an
    /// allocation nor a reference count (a tenth of a 1M-line job's CPU went to the reference
    /// counts of lines sliced from shared chunks). The same routing as [`Router::push`]; a
    /// partition that must cut the value, and an output held during a switch, take the
    /// [`Tuple`] path.
    pub async fn push_pair(&mut self, key: &str, value: &str, emit_ns: u64) -> Result<(), Closed> {
        let hash = crate::model::tuple::stable_hash(key.as_bytes());
        self.push_hashed_pair(key, hash, value, emit_ns).await
    }

    /// [`Router::push_pair`] of a key whose `stable_hash` the caller has (the source's keys
    /// share a prefix it hashes once).
    pub async fn push_hashed_pair(
        &mut self,
        key: &str,
        hash: u64,
        value: &str,
        emit_ns: u64,
    ) -> Result<(), Closed> {
        let text = key.len() + value.len();
        if text > MAX_TUPLE {
            return Err(Closed::TooLarge(text));
        }
        let Some((g, send_key)) = self.partitioner.route_hash(hash) else {
            return self.push(Tuple::new(key, value), emit_ns).await;
        };
        self.before_route().await?;
        let key = if send_key { key } else { "" };
        match self.board.route(g, !self.held.is_empty()) {
            Verdict::To(i) => self.place_pair(i, key, value, emit_ns).await,
            Verdict::Hold => self.hold(Tuple::new(key, value), emit_ns, g).await,
        }
    }

    /// Routes the held outputs, in order, once their switch is decided.
    async fn release(&mut self) -> Result<(), Closed> {
        let mut done = 0;
        while let Some((_, _, g)) = self.held.get(done) {
            let Some(i) = self.board.route_held(*g) else {
                break;
            };
            let (t, emit_ns, _) = std::mem::take(&mut self.held[done]);
            self.place(i, t, emit_ns).await?;
            done += 1;
        }
        self.held.drain(..done);
        Ok(())
    }

    /// Adds `t` to destination `i`'s batch; sends the batch when full.
    async fn place(&mut self, i: usize, t: Tuple, emit_ns: u64) -> Result<(), Closed> {
        self.place_pair(i, &t.key, &t.value, emit_ns).await
    }

    /// Adds the tuple `(key, value)` to destination `i`'s batch; sends the batch when full.
    async fn place_pair(
        &mut self,
        i: usize,
        key: &str,
        value: &str,
        emit_ns: u64,
    ) -> Result<(), Closed> {
        let size = key.len() + value.len() + 8;
        if self.pending_count[i] > 0 && self.pending_bytes[i] + size > MAX_TUPLE {
            // Never let one batch grow past what a frame can carry.
            self.send(i).await?;
        }
        if self.pending_count[i] == 0 {
            let buf = &mut self.pending[i];
            buf.reserve(self.pending_cap[i].max(BATCH_HEADER + size));
            open_batch(buf);
        }
        self.pending_bytes[i] += size;
        self.pending_emit[i] = self.pending_emit[i].min(emit_ns);
        put_pair(&mut self.pending[i], key, value);
        self.pending_count[i] += 1;
        if self.pending_count[i] as usize >= self.cfg.batch_tuples
            || self.pending_bytes[i] >= self.cfg.batch_bytes
        {
            self.send(i).await?;
        }
        Ok(())
    }

    async fn send(&mut self, i: usize) -> Result<(), Closed> {
        if self.pending_count[i] == 0 {
            return Ok(());
        }
        let frame = std::mem::take(&mut self.pending[i]);
        let full = self.cfg.batch_bytes + BATCH_HEADER + 8 * 1024;
        // (`clamp` would panic under a batch size set below the first batch's.)
        self.pending_cap[i] = (frame.len() + frame.len() / 8)
            .min(full)
            .max(FIRST_BATCH_CAP.min(full));
        let count = std::mem::take(&mut self.pending_count[i]);
        self.sent[i] += u64::from(count);
        // Counted a batch at a time, not a tuple at a time (an atomic add per tuple per hop):
        // what a report shows is at most a batch per destination behind, until a flush.
        self.emitted.fetch_add(u64::from(count), Ordering::Relaxed);
        let emit_ns = std::mem::replace(&mut self.pending_emit[i], u64::MAX);
        // Key and value bytes: the 8 bytes a tuple is counted with for batch sizes are not data.
        let bytes = self.pending_bytes[i] - 8 * count as usize;
        self.pending_bytes[i] = 0;
        let batch = OutBatch {
            frame,
            count,
            emit_ns,
        };
        self.deliver(i, LinkMsg::Batch(batch)).await?;
        self.meter.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Hands a message to link `i`, timing the wait as back-pressure if its queue is full.
    async fn deliver(&self, i: usize, msg: LinkMsg) -> Result<(), Closed> {
        match self.links[i].try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Closed::Gone),
            Err(TrySendError::Full(msg)) => {
                let _blocked = self.meter.blocked.run();
                self.links[i].send(msg).await.map_err(|_| Closed::Gone)
            }
        }
    }

    /// Sends every partial batch: called when the input runs dry, so latency stays low under
    /// light load while batches stay large under heavy load.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        if !self.held.is_empty() {
            self.send_all().await?;
            self.release().await?;
        }
        self.send_all().await
    }

    /// Sends every pending batch.
    async fn send_all(&mut self) -> Result<(), Closed> {
        for i in 0..self.links.len() {
            self.send(i).await?;
        }
        Ok(())
    }

    /// Flushes and tells every link the stream is complete (each then sends its end of
    /// stream). Dropping a router without `finish` abandons the links instead.
    pub async fn finish(mut self) -> Result<(), Closed> {
        // A switch in progress is decided before the stream ends: held outputs are part of it.
        self.board.wait_decided().await;
        self.flush().await?;
        for i in 0..self.links.len() {
            self.deliver(i, LinkMsg::End).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
