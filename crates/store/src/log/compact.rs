//! Compacted input logs: a run of an attempt's segments merged into one object.
//!
//! Each group commit of attempt `a` is one *slot*, numbered 0, 1, 2 … in commit order, first
//! written as the segment `<a>-<n>.seg`. A merged object `<a>-<first>-<last>.seg` holds the
//! segments of slots `first..=last` byte for byte, back to back:
//! `"RMRG" | u32 count | count × u32 length | segments` (each segment keeps its own tag,
//! sealed for its slot's path: `seal`).
//! Merged objects are merged again (the segments are flattened, never nested), so every object
//! of an attempt covers a range of slots, and any two such ranges are nested or disjoint.
//!
//! Reading: an attempt's own part of a lineage is the *cover* of what is listed — from slot 0,
//! each time the object with the widest range starting at the next slot. A compaction writes
//! its merged object durably before it deletes anything it replaces, so a listing that misses
//! a deleted object holds the object that replaced it, unless the merge was written while the
//! listing ran: then the cover has a gap (an object beyond it is listed), and the caller lists
//! again. Readers that move through a lineage count slots, not objects: slot `s` holds the
//! same records in every lineage that reaches it, whichever object holds it now.

use super::LogError;
use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 4] = b"RMRG";

/// Whether `data` is a merged object (else it is one segment).
pub fn is_merged(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// Store path of the object merging slots `first..=last` of attempt `attempt` of the log under
/// `prefix` (a task's log prefix, as `log::task_prefix` spells it).
pub fn merged_name(prefix: &str, attempt: u32, first: u64, last: u64) -> String {
    format!("{prefix}{attempt:06}-{first:010}-{last:010}.seg")
}

/// The attempt and the slots `(first, last)` an object of a log holds, from its path: a
/// segment `<a>-<n>.seg` holds slot `n`, a merged object `<a>-<f>-<l>.seg` slots `f..=l`.
/// `None` for anything else (a manifest, a fence).
pub fn span(path: &str) -> Option<(u32, u64, u64)> {
    let name = path.rsplit('/').next()?.strip_suffix(".seg")?;
    let mut parts = name.split('-');
    let attempt = parts.next()?.parse().ok()?;
    let first: u64 = parts.next()?.parse().ok()?;
    let last: u64 = match parts.next() {
        Some(l) => l.parse().ok()?,
        None => first,
    };
    (parts.next().is_none() && first <= last).then_some((attempt, first, last))
}

/// The store path a segment of object `name` was sealed for: `name` itself for a segment,
/// the path of its slot for the `i`-th segment of a merged object (`compact`).
pub fn identity(name: &str, merged: bool, i: usize) -> String {
    match (merged, span(name)) {
        (true, Some((attempt, first, _))) => {
            let prefix = &name[..name.rfind('/').map_or(0, |at| at + 1)];
            format!("{prefix}{attempt:06}-{:010}.seg", first + i as u64)
        }
        // A merged object without a slot range in its name cannot be checked: nothing was
        // sealed for this path, so every segment in it fails.
        (true, None) => format!("{name}#{i}"),
        (false, _) => name.to_string(),
    }
}

/// How many slots the object at `path` holds (1 for a name that says nothing).
pub fn slots(path: &str) -> u64 {
    span(path).map_or(1, |(_, f, l)| (l - f).saturating_add(1))
}

/// The objects of `lineage` a reader that has read its first `slot` slots still has to read,
/// each with how many of its leading segments that reader has read already.
pub fn from_slot(lineage: &[String], slot: u64) -> Vec<(String, usize)> {
    let mut at = 0u64;
    let mut out = Vec::new();
    for path in lineage {
        let n = slots(path);
        if at + n > slot {
            out.push((path.clone(), slot.saturating_sub(at) as usize));
        }
        at += n;
    }
    out
}

/// The segments an object holds, in slot order: itself if it is a segment, else the segments
/// a merged object holds. A merged object whose framing, or whose count of segments against
/// the slots its name says it holds, is wrong is corrupt (each segment's own tag is
/// checked when it is decoded).
pub fn segments_of(name: &str, data: Bytes) -> Result<Vec<Bytes>, LogError> {
    if !is_merged(&data) {
        return Ok(vec![data]);
    }
    let corrupt = || LogError::Corrupt(name.to_string());
    let head = |i: usize| -> Result<usize, LogError> {
        let b = data.get(i..i + 4).ok_or_else(corrupt)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = head(4)?;
    if span(name).is_some_and(|(_, f, l)| l - f + 1 != count as u64) {
        return Err(corrupt());
    }
    let mut at = 8usize.checked_add(count.checked_mul(4).ok_or_else(corrupt)?);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let start = at.ok_or_else(corrupt)?;
        let end = start.checked_add(head(8 + 4 * i)?).ok_or_else(corrupt)?;
        if end > data.len() {
            return Err(corrupt());
        }
        out.push(data.slice(start..end));
        at = Some(end);
    }
    if at != Some(data.len()) {
        return Err(corrupt());
    }
    Ok(out)
}

/// One merged object holding `objects` (segments or merged objects, named for errors), in
/// order.
pub fn merge(objects: &[(String, Bytes)]) -> Result<Bytes, LogError> {
    let mut parts = Vec::new();
    for (name, data) in objects {
        parts.extend(segments_of(name, data.clone())?);
    }
    let body: usize = parts.iter().map(Bytes::len).sum();
    let mut buf = BytesMut::with_capacity(8 + 4 * parts.len() + body);
    buf.put_slice(MAGIC);
    buf.put_u32(parts.len() as u32);
    for p in &parts {
        buf.put_u32(p.len() as u32);
    }
    for p in &parts {
        buf.put_slice(p);
    }
    Ok(buf.freeze())
}

/// A listing that missed a merged object written while it ran (see the module doc), or a log
/// missing its objects from slot `.0` on (slot `.1` is the next one it holds).
#[derive(Debug)]
pub(super) struct Gap(pub(super) u64, pub(super) u64);

/// The cover of one attempt's listed objects (see the module doc), as store paths in slot
/// order; objects that are not of that attempt are ignored.
pub(super) fn cover(paths: &[String], attempt: u32) -> Result<Vec<String>, Gap> {
    let mut spans: Vec<(u64, u64, &String)> = paths
        .iter()
        .filter_map(|p| match span(p) {
            Some((a, f, l)) if a == attempt => Some((f, l, p)),
            _ => None,
        })
        .collect();
    // By first slot, the widest first.
    spans.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
    let mut out = Vec::new();
    let mut next = 0u64;
    for (f, l, p) in spans {
        if f == next {
            out.push(p.clone());
            next = l + 1;
        } else if f > next {
            return Err(Gap(next, f));
        }
    }
    Ok(out)
}

/// What a compaction did.
#[derive(Debug, PartialEq, Eq)]
pub enum Compacted {
    /// The run is now the merged object at `path`, of `bytes` bytes; the objects it replaced
    /// are deleted, in one bulk delete (one that failed leaves harmless duplicates, logged).
    Merged {
        /// Store path of the merged object.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// The attempt is fenced: nothing was deleted, and what its successors recovered stands.
    Fenced,
}

/// Merges `run` — consecutive objects of attempt `attempt`'s own log, in slot order, each
/// with its bytes if the caller still has them — into one object: reads what is missing,
/// writes the merged object durably, checks the attempt's fence, and only if it is not fenced
/// deletes the run. So a fenced (zombie) attempt never deletes what a successor may have
/// recorded in its manifest: its merged object was written after the fence (the check saw
/// it), and no lineage of a successor reads it; and any merged object whose run a compaction
/// deletes was written before the fence, so every successor's listing (after its fence) holds
/// it and takes it in place of the run.
pub async fn compact_run(
    store: &crate::store::Store,
    key: &crate::model::ids::TaskKey,
    attempt: u32,
    run: &[(String, Option<Bytes>)],
) -> Result<Compacted, LogError> {
    let prefix = super::task_prefix(key);
    let bounds = |p: &String| span(p).filter(|s| s.0 == attempt && p.starts_with(&prefix));
    let (Some((_, first, _)), Some((_, _, last))) = (
        run.first().and_then(|(p, _)| bounds(p)),
        run.last().and_then(|(p, _)| bounds(p)),
    ) else {
        return Err(LogError::Corrupt(format!(
            "compaction of {prefix}: not a run of attempt {attempt}"
        )));
    };
    let mut objects = Vec::with_capacity(run.len());
    for (path, data) in run {
        let data = match data {
            Some(d) => d.clone(),
            None => store.get(path).await?,
        };
        objects.push((path.clone(), data));
    }
    let merged = merge(&objects)?;
    let path = merged_name(&prefix, attempt, first, last);
    if segments_of(&path, merged.clone())?.len() as u64 != last - first + 1 {
        return Err(LogError::Corrupt(format!(
            "compaction of {path}: the run has gaps"
        )));
    }
    let bytes = merged.len() as u64;
    super::put_retrying(store, &path, merged).await?;
    if super::fenced(store, key, attempt).await? {
        return Ok(Compacted::Fenced);
    }
    // One request for the whole run (S3: `DeleteObjects`): in any order, since the merged
    // object already covers every one of them.
    let old: Vec<String> = run.iter().map(|(p, _)| p.clone()).collect();
    if let Err(e) = store.delete_many(&old).await {
        tracing::warn!(task = %key, attempt, objects = old.len(), first = ?old.first(), error = %e, "could not delete compacted log objects; those left stay as duplicates the lineage ignores");
    }
    Ok(Compacted::Merged { path, bytes })
}

/// Reads one object of a lineage as its segments in slot order, each with the store path it
/// was sealed for ([`identity`], what `log::decode_segment` checks it against); `None` if it
/// is gone (a compaction replaced it since the lineage was listed: list again, and go on from
/// the slot reached, with [`from_slot`]).
pub async fn read_object(
    store: &crate::store::Store,
    path: &str,
) -> Result<Option<Vec<(String, Bytes)>>, LogError> {
    match store.get(path).await {
        Ok(data) => {
            let merged = is_merged(&data);
            let segs = segments_of(path, data)?.into_iter().enumerate();
            Ok(Some(
                segs.map(|(i, s)| (identity(path, merged, i), s)).collect(),
            ))
        }
        Err(crate::store::StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether two lineages of one task hold the same slots in the same order, whichever objects
/// hold them (a name that says nothing stands for itself).
pub fn same_slots(a: &[String], b: &[String]) -> bool {
    fn expand(paths: &[String]) -> Vec<(u32, u64, &str)> {
        let mut out = Vec::new();
        for p in paths {
            match span(p) {
                Some((a, f, l)) => out.extend((f..=l).map(|n| (a, n, ""))),
                None => out.push((0, 0, p.as_str())),
            }
        }
        out
    }
    expand(a) == expand(b)
}
