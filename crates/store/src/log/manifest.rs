//! Manifests: the exact list of segments an attempt recovered from, sealed like a segment.
//!
//! A manifest is `<JSON array of store paths>\n<hex tag>`, the tag sealing the JSON to the
//! manifest's own path (`seal`). Every path it lists must be an object of the same task's
//! log: a manifest cannot make a task replay another task's segments, even sealed ones.

use super::LogError;
use crate::seal::SealKey;
use bytes::Bytes;

/// The manifest at store path `path` listing `lineage`.
pub fn seal(seal: &SealKey, path: &str, lineage: &[String]) -> Result<Bytes, LogError> {
    let mut body = serde_json::to_vec(lineage).map_err(|_| LogError::Corrupt(path.to_string()))?;
    let tag = hex::encode(seal.tag(path, &body));
    body.push(b'\n');
    body.extend_from_slice(tag.as_bytes());
    Ok(Bytes::from(body))
}

/// The lineage a manifest read from `path` lists, once its tag is checked and every path in
/// it is an object under `prefix` (its task's log).
pub fn open(
    seal: &SealKey,
    path: &str,
    prefix: &str,
    data: &[u8],
) -> Result<Vec<String>, LogError> {
    let corrupt = || LogError::Corrupt(path.to_string());
    let at = data.iter().rposition(|b| *b == b'\n').ok_or_else(corrupt)?;
    let (body, tag) = (&data[..at], &data[at + 1..]);
    let tag = hex::decode(tag).map_err(|_| corrupt())?;
    if !seal.check(path, body, &tag) {
        return Err(LogError::Unsealed(path.to_string()));
    }
    let lineage: Vec<String> = serde_json::from_slice(body).map_err(|_| corrupt())?;
    let foreign = lineage.iter().find(|p| {
        p.strip_prefix(prefix)
            .is_none_or(|name| name.contains('/') || super::compact::span(p).is_none())
    });
    match foreign {
        Some(_) => Err(corrupt()),
        None => Ok(lineage),
    }
}
