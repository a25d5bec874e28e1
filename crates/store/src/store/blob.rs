//! Content-addressed store paths: an operator pinned by the SHA-256 of its content.

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Where an operator's content lives once pinned by its SHA-256: an immutable store object.
pub const BLOBS: &str = "blobs/sha256/";

/// The store path of content with SHA-256 `hex`.
pub fn blob_path(hex: &str) -> String {
    format!("{BLOBS}{hex}")
}

/// The SHA-256 a store path pins, if it is a content-addressed path.
pub fn pinned_hash(path: &str) -> Option<&str> {
    let h = path.strip_prefix(BLOBS)?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(h)
}
