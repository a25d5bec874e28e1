//! The data plane's frame format.
//!
//! Every TCP connection carries one link `(job, from task) → (job, to task)`. Frames are
//! length-delimited (4-byte big-endian length, by `tokio_util`'s codec; a link writes its
//! batches with the length already in front, [`encode_batch_wire`]) and start with a tag byte:
//!
//! | tag | frame  | body                                                                     |
//! |-----|--------|--------------------------------------------------------------------------|
//! | 1   | Hello  | job (str); from stage, index, attempt; to stage, index, attempt; epoch (u32 each); acked u64; eos acked u8 |
//! | 2   | Batch  | first_seq u64, emit_ns u64, count u32, then count × (key str, value str)  |
//! | 3   | Eos    | last_seq u64: the link's end of stream, behind its last batch              |
//! | 4   | Ack    | upto u64, eos u8: cumulative — everything ≤ upto is accepted (durably, under exactly-once) |
//! | 5   | Reject | retry u8, reason (str): the destination cannot take this link now         |
//! | 6   | Challenge | 16 random bytes: the listener's first frame on every connection        |
//!
//! Strings are a u32 length and UTF-8 bytes. Sequence numbers start at 1 per link; a link's
//! tuples are numbered, not its batches, so dedup works tuple by tuple whatever the batching.
//! Acks are cumulative, so a late or repeated ack is harmless.
//!
//! The listener speaks first, with a Challenge; the Hello carries a signature of that challenge
//! and of itself by the sending worker's own key (`protocol::auth::Identity`), which the
//! receiver checks against the key its route table names for that sender attempt: only the
//! worker running the sender attempt can open its link, and a Hello cannot be replayed on
//! another connection.
//!
//! A Hello fences both ends: it names the exact sender attempt, the exact receiver attempt it
//! expects and the job epoch, and the listener delivers only to that receiver attempt. It also
//! says how far the link is already acknowledged (`acked`, `eos_acked`): everything at or below
//! it will never be sent again, so a receiver that has less must regenerate it (a first-stage
//! task replays its share of the source file) or fail loudly — it is never skipped.

use crate::model::tuple::{Text, Tuple};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Largest frame either side accepts; a batch is cut well below it.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Largest frame a listener accepts before the Hello is authenticated: an unauthenticated
/// peer cannot make it buffer more than this.
pub const MAX_HELLO: usize = 64 * 1024;

/// A malformed frame: the connection is reset and the link resumes from its last ack.
#[derive(Debug, Error)]
pub enum WireError {
    /// The frame ended before its fields did.
    #[error("truncated frame")]
    Truncated,
    /// Unknown tag byte.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// A string field is not UTF-8.
    #[error("invalid utf-8 in frame")]
    Utf8,
}

/// The first frame of a connection: which link, which attempts at both ends, and how far the
/// link is already acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Job id.
    pub job: String,
    /// Sending task's stage.
    pub from_stage: u32,
    /// Sending task's index.
    pub from_index: u32,
    /// Sending task's attempt (receivers reject attempts older than their route table's).
    pub from_attempt: u32,
    /// Receiving task's stage.
    pub to_stage: u32,
    /// Receiving task's index.
    pub to_index: u32,
    /// The receiver attempt the sender's route table names: only that attempt may take it.
    pub to_attempt: u32,
    /// Job epoch of the sender (at-least-once restarts bump it).
    pub epoch: u32,
    /// Highest sequence number already acknowledged on this link (never re-sent).
    pub acked: u64,
    /// The link's end of stream is already acknowledged.
    pub eos_acked: bool,
    /// The sending worker's Ed25519 signature of the listener's challenge and of this Hello
    /// (with an empty proof).
    pub proof: Vec<u8>,
}

impl Hello {
    /// The bytes the proof covers: this Hello encoded with an empty proof.
    pub fn signed_body(&self) -> Bytes {
        Frame::Hello(Hello {
            proof: Vec::new(),
            ..self.clone()
        })
        .encode()
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// First frame on a connection: names the link.
    Hello(Hello),
    /// Tuples numbered `first_seq ..`.
    Batch {
        /// Sequence number of the first tuple.
        first_seq: u64,
        /// Oldest source emit time (ns since the Unix epoch) among the tuples, for latency.
        emit_ns: u64,
        /// The tuples.
        tuples: Vec<Tuple>,
    },
    /// End of stream after tuple `last_seq`.
    Eos {
        /// Last sequence number the link ever carries.
        last_seq: u64,
    },
    /// Cumulative acknowledgement.
    Ack {
        /// Every tuple with a sequence number ≤ `upto` is accepted.
        upto: u64,
        /// The end of stream is accepted too.
        eos: bool,
        /// The receiver holds the link up to `seen` (accepted, durable or not) as of taking
        /// the connection of sender attempt `by − 1` (0: none yet): after that it takes
        /// nothing from an older attempt, so a restarted sender knows how far its
        /// predecessors got.
        seen: u64,
        /// See `seen`.
        by: u32,
    },
    /// The listener's challenge: the Hello must be signed over these bytes.
    Challenge([u8; 16]),
    /// The destination refuses the link (unknown or finished task).
    Reject {
        /// Whether the sender should try again later (the task may be starting or restarting).
        retry: bool,
        /// Human-readable reason, for logs.
        reason: String,
    },
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn get_u32(buf: &mut Bytes) -> Result<u32, WireError> {
    if buf.remaining() < 4 {
        return Err(WireError::Truncated);
    }
    Ok(buf.get_u32())
}

fn get_u8(buf: &mut Bytes) -> Result<u8, WireError> {
    if buf.remaining() < 1 {
        return Err(WireError::Truncated);
    }
    Ok(buf.get_u8())
}

fn get_u64(buf: &mut Bytes) -> Result<u64, WireError> {
    if buf.remaining() < 8 {
        return Err(WireError::Truncated);
    }
    Ok(buf.get_u64())
}

fn get_bytes(buf: &mut Bytes) -> Result<Vec<u8>, WireError> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(WireError::Truncated);
    }
    Ok(buf.split_to(len).to_vec())
}

/// A string of a tuple: a slice of the frame, checked to be UTF-8, not a copy.
fn get_text(buf: &mut Bytes) -> Result<Text, WireError> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(WireError::Truncated);
    }
    Text::try_from(buf.split_to(len)).map_err(|_| WireError::Utf8)
}

fn get_str(buf: &mut Bytes) -> Result<String, WireError> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(WireError::Truncated);
    }
    let bytes = buf.split_to(len);
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Utf8)
}

mod wire;
pub use wire::{
    encode_batch_wire, open_batch, put_pair, put_tuple, seal_batch, to_wire, BATCH_HEADER,
    LEN_PREFIX,
};

/// Encodes the body of a batch frame straight from tuples, so a sender never builds a `Frame`.
pub fn encode_batch(first_seq: u64, emit_ns: u64, tuples: &[Tuple]) -> Bytes {
    encode_batch_wire(first_seq, emit_ns, tuples).slice(LEN_PREFIX..)
}

/// Decodes the tuples of a batch body (after `first_seq`, `emit_ns`); shared with the input log.
pub fn decode_tuples(buf: &mut Bytes) -> Result<Vec<Tuple>, WireError> {
    let n = get_u32(buf)? as usize;
    let mut tuples = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let key = get_text(buf)?;
        let value = get_text(buf)?;
        tuples.push(Tuple { key, value });
    }
    Ok(tuples)
}

/// Appends tuples in the batch body layout (count, then pairs); shared with the input log.
pub fn encode_tuples(buf: &mut BytesMut, tuples: &[Tuple]) {
    buf.put_u32(tuples.len() as u32);
    for t in tuples {
        put_str(buf, &t.key);
        put_str(buf, &t.value);
    }
}

impl Frame {
    /// Serialises the frame (without the length prefix the codec adds).
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Batch {
                first_seq,
                emit_ns,
                tuples,
            } => encode_batch(*first_seq, *emit_ns, tuples),
            Frame::Hello(h) => {
                let mut buf = BytesMut::with_capacity(48 + h.job.len());
                buf.put_u8(1);
                put_str(&mut buf, &h.job);
                for v in [
                    h.from_stage,
                    h.from_index,
                    h.from_attempt,
                    h.to_stage,
                    h.to_index,
                    h.to_attempt,
                    h.epoch,
                ] {
                    buf.put_u32(v);
                }
                buf.put_u64(h.acked);
                buf.put_u8(u8::from(h.eos_acked));
                buf.put_u32(h.proof.len() as u32);
                buf.put_slice(&h.proof);
                buf.freeze()
            }
            Frame::Challenge(nonce) => {
                let mut buf = BytesMut::with_capacity(17);
                buf.put_u8(6);
                buf.put_slice(nonce);
                buf.freeze()
            }
            Frame::Eos { last_seq } => {
                let mut buf = BytesMut::with_capacity(9);
                buf.put_u8(3);
                buf.put_u64(*last_seq);
                buf.freeze()
            }
            Frame::Ack {
                upto,
                eos,
                seen,
                by,
            } => {
                let mut buf = BytesMut::with_capacity(22);
                buf.put_u8(4);
                buf.put_u64(*upto);
                buf.put_u8(u8::from(*eos));
                buf.put_u64(*seen);
                buf.put_u32(*by);
                buf.freeze()
            }
            Frame::Reject { retry, reason } => {
                let mut buf = BytesMut::with_capacity(6 + reason.len());
                buf.put_u8(5);
                buf.put_u8(u8::from(*retry));
                put_str(&mut buf, reason);
                buf.freeze()
            }
        }
    }

    /// Parses one frame body.
    pub fn decode(mut buf: Bytes) -> Result<Frame, WireError> {
        if buf.is_empty() {
            return Err(WireError::Truncated);
        }
        let tag = buf.get_u8();
        let frame = match tag {
            1 => Frame::Hello(Hello {
                job: get_str(&mut buf)?,
                from_stage: get_u32(&mut buf)?,
                from_index: get_u32(&mut buf)?,
                from_attempt: get_u32(&mut buf)?,
                to_stage: get_u32(&mut buf)?,
                to_index: get_u32(&mut buf)?,
                to_attempt: get_u32(&mut buf)?,
                epoch: get_u32(&mut buf)?,
                acked: get_u64(&mut buf)?,
                eos_acked: get_u8(&mut buf)? != 0,
                proof: get_bytes(&mut buf)?,
            }),
            6 => {
                if buf.remaining() < 16 {
                    return Err(WireError::Truncated);
                }
                let mut nonce = [0u8; 16];
                buf.copy_to_slice(&mut nonce);
                Frame::Challenge(nonce)
            }
            2 => {
                let first_seq = get_u64(&mut buf)?;
                let emit_ns = get_u64(&mut buf)?;
                let tuples = decode_tuples(&mut buf)?;
                Frame::Batch {
                    first_seq,
                    emit_ns,
                    tuples,
                }
            }
            3 => Frame::Eos {
                last_seq: get_u64(&mut buf)?,
            },
            4 => {
                let upto = get_u64(&mut buf)?;
                if buf.remaining() < 1 {
                    return Err(WireError::Truncated);
                }
                let eos = buf.get_u8() != 0;
                let (seen, by) = match buf.remaining() {
                    0 => (0, 0),
                    n if n < 12 => return Err(WireError::Truncated),
                    _ => (buf.get_u64(), buf.get_u32()),
                };
                Frame::Ack {
                    upto,
                    eos,
                    seen,
                    by,
                }
            }
            5 => {
                if buf.remaining() < 1 {
                    return Err(WireError::Truncated);
                }
                let retry = buf.get_u8() != 0;
                Frame::Reject {
                    retry,
                    reason: get_str(&mut buf)?,
                }
            }
            other => return Err(WireError::UnknownTag(other)),
        };
        Ok(frame)
    }
}

/// The codec every data-plane connection uses.
pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

#[cfg(test)]
mod tests;
