//! Store paths as clients name them, checked and normalised: nothing a client sends names
//! anything outside the store.

use super::StoreError;
use std::path::{Component, Path};

/// Checks and normalises a store path (`a/b/c`, no leading slash, no `..`, no NUL byte).
pub fn clean_path(path: &str) -> Result<String, StoreError> {
    if path.contains('\0') {
        return Err(StoreError::BadByte {
            path: path.to_string(),
            why: "it contains a NUL byte",
        });
    }
    let p = Path::new(path.trim_start_matches('/'));
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(StoreError::BadPath(path.to_string())),
        }
    }
    if parts.is_empty() {
        return Err(StoreError::BadPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

/// Checks a listing prefix: `""` (everything) or a string prefix of clean store paths (no `..`,
/// no `.` segment, no leading slash), so a listing can never name anything outside the store.
pub fn clean_prefix(prefix: &str) -> Result<String, StoreError> {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    let bad = p.split('/').enumerate().any(|(i, seg)| {
        seg == ".." || seg == "." || (seg.is_empty() && i + 1 < p.split('/').count())
    });
    if bad || p.contains('\\') || p.contains('\0') {
        return Err(StoreError::BadPath(prefix.to_string()));
    }
    Ok(p.to_string())
}
