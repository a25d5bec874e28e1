//! An open connection of a link, where it goes, and the one way a link writes to it: a write
//! that gives up when the destination moves or restarts, so a write blocked on a partitioned
//! host never keeps a link from following its destination.

use super::writer::FrameWriter;
use crate::model::ids::TaskPos;
use crate::routes::RouteTable;
use crate::transport::ConnRead;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// A link's connection to one attempt of its destination.
pub(super) struct Connection {
    /// Frames from the receiver (acks, rejects).
    pub(super) rd: FramedRead<ConnRead, LengthDelimitedCodec>,
    /// Frames to the receiver (batches, end of stream), each with its length in front.
    pub(super) wr: FrameWriter,
    /// Where it goes: the destination's address and attempt when it was opened.
    pub(super) dest: (String, u32),
    /// Its place in the process's budget of link connections, given back on drop.
    pub(super) _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Where the destination runs now (address and attempt), if placed and not finished.
pub(super) fn dest_of(routes: &RouteTable, to: &TaskPos) -> Option<(String, u32)> {
    routes
        .get(to)
        .filter(|d| !d.finished)
        .map(|d| (d.addr.clone(), d.attempt))
}

/// Whether the destination has finished: it holds this link's whole stream acknowledged.
pub(super) fn finished(routes: &RouteTable, to: &TaskPos) -> bool {
    routes.get(to).is_some_and(|d| d.finished)
}

/// Writes frames (each with its length in front: `encode_batch_wire`, `to_wire`) and
/// flushes; gives up (Err) on cancellation or when the destination moves or
/// restarts. A write to a partitioned host can block for minutes (no reset ever comes), so a
/// blocked write must not keep a link from following its destination to a new attempt.
pub(super) async fn send(
    c: &mut Connection,
    frames: impl IntoIterator<Item = Bytes>,
    cancel: &CancellationToken,
    routes: &mut watch::Receiver<RouteTable>,
    to: &TaskPos,
) -> Result<(), ()> {
    let wr = &mut c.wr;
    let dest = &c.dest;
    let write = async {
        for f in frames {
            wr.feed(f)?;
        }
        wr.flush().await
    };
    let moved = async {
        loop {
            if routes.changed().await.is_err() {
                return;
            }
            if dest_of(&routes.borrow(), to).as_ref() != Some(dest) {
                return;
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => Err(()),
        _ = moved => {
            debug!(%to, "destination moved during a write; reconnecting");
            Err(())
        }
        r = write => r.map_err(|e: std::io::Error| debug!(error = %e, "link write failed")),
    }
}
