//! Segments: how records are encoded, framed and checked (see `log` for the format).

use super::{compact, BatchRecord, LogError, LogRecord};
use crate::model::tuple::Tuple;
use crate::protocol::frame::{decode_tuples, encode_tuples};
use crate::seal::{SealKey, TAG_LEN};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Appends a batch record without building a [`LogRecord`] (the tuples stay with the caller).
pub fn encode_batch_record(
    buf: &mut BytesMut,
    from: u32,
    first_seq: u64,
    emit_ns: u64,
    tuples: &[Tuple],
) {
    buf.put_u8(1);
    buf.put_u32(from);
    buf.put_u64(first_seq);
    buf.put_u64(emit_ns);
    encode_tuples(buf, tuples);
}

/// Appends a record to a segment body under construction.
pub fn encode_record(buf: &mut BytesMut, rec: &LogRecord) {
    match rec {
        LogRecord::Batch(b) => encode_batch_record(buf, b.from, b.first_seq, b.emit_ns, &b.tuples),
        LogRecord::Eos { from, last_seq } => {
            buf.put_u8(2);
            buf.put_u32(*from);
            buf.put_u64(*last_seq);
        }
    }
}

/// Frames a segment around encoded records, sealed for store path `path` (see `seal`).
pub fn seal_segment(records: &[u8], count: u32, seal: &SealKey, path: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(records.len() + 8 + TAG_LEN);
    open_segment(&mut buf);
    buf.put_slice(records);
    seal_in_place(buf, count, seal, path)
}

/// Starts a segment to build in place: records are appended after what this writes, then
/// [`seal_in_place`] frames it, so a log writer copies its records once, not twice.
pub fn open_segment(buf: &mut BytesMut) {
    buf.clear();
    buf.put_slice(b"RSEG");
    buf.put_u32(0);
}

/// Finishes a segment begun by [`open_segment`] holding `count` records, to be written at
/// store path `path`: the tag that ends it binds its bytes to that path (see `seal`).
pub fn seal_in_place(mut buf: BytesMut, count: u32, seal: &SealKey, path: &str) -> Bytes {
    buf[4..8].copy_from_slice(&count.to_be_bytes());
    let tag = seal.tag(path, &buf);
    buf.put_slice(&tag);
    buf.freeze()
}

/// The records part of a whole segment (after the magic, up to the tag), once its framing
/// and its tag for `identity` are checked.
/// (`seal` is `None` for bytes this process wrote itself or has checked already.)
fn segment_body(
    seal: Option<&SealKey>,
    identity: &str,
    name: &str,
    data: &[u8],
) -> Result<std::ops::Range<usize>, LogError> {
    if data.len() < 8 + TAG_LEN || &data[..4] != b"RSEG" {
        return Err(LogError::Corrupt(name.to_string()));
    }
    let body_len = data.len() - TAG_LEN;
    if seal.is_some_and(|k| !k.check(identity, &data[..body_len], &data[body_len..])) {
        return Err(LogError::Unsealed(name.to_string()));
    }
    Ok(4..body_len)
}

/// Decodes a whole segment, or every segment of a merged object in order (`compact`).
pub fn decode_segment(seal: &SealKey, name: &str, data: Bytes) -> Result<Vec<LogRecord>, LogError> {
    let merged = compact::is_merged(&data);
    let mut out = Vec::new();
    for (i, seg) in compact::segments_of(name, data)?.into_iter().enumerate() {
        out.extend(decode_one(
            seal,
            &compact::identity(name, merged, i),
            name,
            seg,
        )?);
    }
    Ok(out)
}

fn decode_one(
    seal: &SealKey,
    identity: &str,
    name: &str,
    mut data: Bytes,
) -> Result<Vec<LogRecord>, LogError> {
    let corrupt = || LogError::Corrupt(name.to_string());
    let body = segment_body(Some(seal), identity, name, &data)?;
    data.truncate(body.end);
    data.advance(body.start);
    let count = data.get_u32();
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if data.remaining() < 13 {
            return Err(corrupt());
        }
        match data.get_u8() {
            1 => {
                if data.remaining() < 20 {
                    return Err(corrupt());
                }
                let from = data.get_u32();
                let first_seq = data.get_u64();
                let emit_ns = data.get_u64();
                let tuples = decode_tuples(&mut data).map_err(|_| corrupt())?;
                out.push(LogRecord::Batch(BatchRecord {
                    from,
                    first_seq,
                    emit_ns,
                    tuples,
                }));
            }
            2 => {
                let from = data.get_u32();
                let last_seq = data.get_u64();
                out.push(LogRecord::Eos { from, last_seq });
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(out)
}

/// Appends the values of a segment's batch records to `out`, each followed by a newline, in
/// log order, without building tuples (a sink's log rendered as its output: the output file
/// and what followers print). The segment (or merged object) is checked as [`decode_segment`]
/// checks it.
pub fn segment_values(
    seal: &SealKey,
    name: &str,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<(), LogError> {
    values_checked(Some(seal), name, data, out)
}

/// [`segment_values`] of a segment this process wrote itself, or has checked already
/// (`decode_segment`): its framing is checked, its tag is not again.
pub fn segment_values_written(name: &str, data: &[u8], out: &mut BytesMut) -> Result<(), LogError> {
    values_checked(None, name, data, out)
}

fn values_checked(
    seal: Option<&SealKey>,
    name: &str,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<(), LogError> {
    if !compact::is_merged(data) {
        return values_one(seal, name, name, data, out);
    }
    for (i, seg) in compact::segments_of(name, Bytes::copy_from_slice(data))?
        .iter()
        .enumerate()
    {
        values_one(seal, &compact::identity(name, true, i), name, seg, out)?;
    }
    Ok(())
}

fn values_one(
    seal: Option<&SealKey>,
    identity: &str,
    name: &str,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<(), LogError> {
    let corrupt = || LogError::Corrupt(name.to_string());
    let mut body = &data[segment_body(seal, identity, name, data)?];
    let count = body.try_get_u32().map_err(|_| corrupt())?;
    for _ in 0..count {
        match body.try_get_u8().map_err(|_| corrupt())? {
            1 => {
                // from, first_seq, emit_ns
                if body.remaining() < 20 {
                    return Err(corrupt());
                }
                body.advance(20);
                let n = body.try_get_u32().map_err(|_| corrupt())?;
                for _ in 0..n {
                    let key = body.try_get_u32().map_err(|_| corrupt())? as usize;
                    if body.remaining() < key {
                        return Err(corrupt());
                    }
                    body.advance(key);
                    let len = body.try_get_u32().map_err(|_| corrupt())? as usize;
                    if body.remaining() < len {
                        return Err(corrupt());
                    }
                    out.extend_from_slice(&body[..len]);
                    out.put_u8(b'\n');
                    body.advance(len);
                }
            }
            2 => {
                if body.remaining() < 12 {
                    return Err(corrupt());
                }
                body.advance(12);
            }
            _ => return Err(corrupt()),
        }
    }
    Ok(())
}
