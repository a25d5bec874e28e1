//! Frames as they go on the wire, their length in front: what a link writes without a codec
//! (`dataplane::link::writer`), and batches a router fills in place as it routes.

use super::put_str;
use crate::model::tuple::Tuple;
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the length that goes before every frame's body on the wire.
pub const LEN_PREFIX: usize = 4;

/// Encodes a whole batch frame as it goes on the wire, its length first: a link writes it as
/// it is (`link::writer`), where a codec would copy every batch once more into its buffer.
pub fn encode_batch_wire(first_seq: u64, emit_ns: u64, tuples: &[Tuple]) -> Bytes {
    let size: usize = tuples.iter().map(|t| 8 + t.key.len() + t.value.len()).sum();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER + size);
    open_batch(&mut buf);
    for t in tuples {
        put_tuple(&mut buf, t);
    }
    seal_batch(buf, first_seq, emit_ns, tuples.len() as u32)
}

/// Bytes of a batch frame on the wire before its first tuple: length, tag, first sequence
/// number, emit time, count.
pub const BATCH_HEADER: usize = LEN_PREFIX + 1 + 8 + 8 + 4;

/// Starts a batch frame to fill in place: tuples are appended with [`put_tuple`] as they are
/// routed, and [`seal_batch`] writes the header once the link numbers them. A router that
/// encodes as it routes holds bytes, not tuples (a tuple can be a slice of a whole received
/// frame, which it would keep alive).
pub fn open_batch(buf: &mut BytesMut) {
    buf.clear();
    buf.put_bytes(0, BATCH_HEADER);
}

/// Appends one tuple to a batch begun by [`open_batch`].
pub fn put_tuple(buf: &mut BytesMut, t: &Tuple) {
    put_pair(buf, &t.key, &t.value);
}

/// Appends one tuple given as its key and value (a line the source has not made a
/// [`Tuple`] of) to a batch begun by [`open_batch`].
pub fn put_pair(buf: &mut BytesMut, key: &str, value: &str) {
    put_str(buf, key);
    put_str(buf, value);
}

/// Finishes a batch begun by [`open_batch`] holding `count` tuples, numbered from
/// `first_seq`: the frame as it goes on the wire.
pub fn seal_batch(mut buf: BytesMut, first_seq: u64, emit_ns: u64, count: u32) -> Bytes {
    let body = (buf.len() - LEN_PREFIX) as u32;
    let mut header = &mut buf[..BATCH_HEADER];
    header.put_u32(body);
    header.put_u8(2);
    header.put_u64(first_seq);
    header.put_u64(emit_ns);
    header.put_u32(count);
    buf.freeze()
}

/// A frame's body with its length in front, as [`codec`] would write it.
pub fn to_wire(body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(LEN_PREFIX + body.len());
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
    buf.freeze()
}
