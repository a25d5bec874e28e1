//! Sealing: what the engine writes into its logs is authenticated with the cluster secret.
//!
//! The store is a door like the API: whoever can write to the bucket but does not hold the
//! cluster secret must not be able to change what a task replays. A checksum only finds
//! damage; a copy of another task's valid segment, or a segment made up whole, passed it and
//! was replayed as the task's own input (wrong output, found by a hostile probe). So each
//! segment and each manifest ends with a tag: BLAKE3 in its keyed mode (a MAC), keyed by a key
//! derived from the secret, over the object's *identity* (the store path it was written to: job, task, attempt
//! and slot) and its bytes. A reader checks the tag against the path it reads, so an object
//! copied to another path, another task's or another slot's, fails the check as surely as a
//! changed byte does.
//!
//! Without a cluster secret the key is a fixed one: the tag is then a checksum bound to the
//! identity (copies are still caught; forgery is not, as nothing else is closed either).

/// Bytes of a tag at the end of a sealed object (128 bits of keyed BLAKE3).
pub const TAG_LEN: usize = 16;

/// What a key is derived for, so no other use of the secret yields the same key (BLAKE3's
/// key derivation takes a context string unique to the application and the purpose).
const CONTEXT: &str = "rainstorm 2026-12-07 log seal v2";

/// The key that seals and checks the engine's own store objects (see the module doc). Every
/// process of a cluster derives the same key from the same secret.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl Default for SealKey {
    /// The key of a cluster without a secret (and of tests that make their own store).
    fn default() -> Self {
        SealKey::derive(b"")
    }
}

impl SealKey {
    /// The key of a cluster whose secret is `secret` (none: the fixed key of [`Default`]).
    pub fn from_secret(secret: Option<&crate::protocol::auth::Secret>) -> SealKey {
        SealKey::derive(secret.map_or("", |s| s.expose()).as_bytes())
    }

    fn derive(secret: &[u8]) -> SealKey {
        SealKey(blake3::derive_key(CONTEXT, secret))
    }

    /// The tag of `bytes` written at `identity` (a store path).
    pub fn tag(&self, identity: &str, bytes: &[u8]) -> [u8; TAG_LEN] {
        let len = (identity.len() as u64).to_be_bytes();
        let mut m = blake3::Hasher::new_keyed(&self.0);
        m.update(&len);
        m.update(identity.as_bytes());
        m.update(bytes);
        let mut tag = [0u8; TAG_LEN];
        m.finalize_xof().fill(&mut tag);
        tag
    }

    /// Whether `tag` is the tag of `bytes` at `identity` (compared in constant time).
    pub fn check(&self, identity: &str, bytes: &[u8], tag: &[u8]) -> bool {
        crate::protocol::auth::eq_ct(&self.tag(identity, bytes), tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_bound_to_the_key_the_identity_and_the_bytes() {
        let k = SealKey::derive(b"a secret of sixteen+");
        let t = k.tag("logs/j/1.0/000000-0000000001.seg", b"records");
        assert!(k.check("logs/j/1.0/000000-0000000001.seg", b"records", &t));
        assert!(!k.check("logs/j/1.1/000000-0000000001.seg", b"records", &t));
        assert!(!k.check("logs/j/1.0/000000-0000000002.seg", b"records", &t));
        assert!(!k.check("logs/j/1.0/000000-0000000001.seg", b"recordz", &t));
        assert!(!SealKey::default().check("logs/j/1.0/000000-0000000001.seg", b"records", &t));
        // The identity's length is part of what is tagged: moving bytes between the path and
        // the body changes the tag.
        assert_ne!(k.tag("ab", b"c"), k.tag("a", b"bc"));
    }
}
