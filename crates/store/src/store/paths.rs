//! Store paths as clients name them, checked and normalised: nothing a client sends names
//! anything outside the store.

use super::StoreError;
use std::path::{Component, Path};

/// The longest name (a folder's or a file's) a store path may hold: a file system's limit.
const MAX_NAME: usize = 255;

/// The longest store path: an S3 key's limit.
const MAX_PATH: usize = 1024;

/// Checks and normalises a store path (`a/b/c`, no leading slash, no `..`, no control
/// character).
pub fn clean_path(path: &str) -> Result<String, StoreError> {
    if let Some(why) = bad_byte(path) {
        return Err(StoreError::BadByte {
            path: path.to_string(),
            why,
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
    let joined = parts.join("/");
    // What a file system (a name) and S3 (a key) can hold; past it a put failed in the
    // store with a 500, as if the store were broken.
    let why = if parts.iter().any(|p| p.len() > MAX_NAME) {
        Some("a name in it is longer than 255 bytes")
    } else if joined.len() > MAX_PATH {
        Some("it is longer than 1024 bytes")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(StoreError::BadByte {
            path: path.to_string(),
            why,
        });
    }
    Ok(joined)
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
    if bad || p.contains('\\') {
        return Err(StoreError::BadPath(prefix.to_string()));
    }
    if let Some(why) = bad_byte(p) {
        return Err(StoreError::BadByte {
            path: prefix.to_string(),
            why,
        });
    }
    Ok(p.to_string())
}

/// Why `path` cannot name a store object, if a byte of it is the reason: a NUL no file system
/// can name, or another control character (a tab, a newline, DEL), which the object store
/// cannot list back: one such name made every listing of its folder fail (hostile probe).
fn bad_byte(path: &str) -> Option<&'static str> {
    if path.contains('\0') {
        Some("it contains a NUL byte")
    } else if path.chars().any(|c| c.is_ascii_control()) {
        Some("it contains a control character (a tab, a newline, DEL, …)")
    } else {
        None
    }
}
