//! The unit of data and the stable hash used for partitioning (it must agree across processes
//! and releases, so it is not `std`'s hasher). Its line encoding for executable operators is in
//! `protocol::line`.

/// Text of a tuple: UTF-8 in shared bytes, so a tuple decoded from a received frame is a
/// slice of that frame rather than a copy, and cloning one costs a reference count. What
/// lives long (a count's keys, handed-over state) is copied out into a `String`, so a kept
/// key never pins the frame it came in.
pub type Text = bytestring::ByteString;

/// A `(key, value)` pair flowing through a job.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tuple {
    /// Partitioning key.
    pub key: Text,
    /// Payload; the sink writes only this.
    pub value: Text,
}

impl Tuple {
    /// Builds a tuple from anything string-like.
    pub fn new(key: impl Into<Text>, value: impl Into<Text>) -> Self {
        Tuple {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// 64-bit FNV-1a: tiny, deterministic everywhere, good enough spread for partitioning.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    stable_hash_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// [`stable_hash`] of `a ++ bytes`, given `h = stable_hash(a)`: FNV-1a goes byte by byte, so
/// keys that share a prefix (the source's `NAME:LINE`) need hash only what follows it.
pub fn stable_hash_more(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        let prefix = stable_hash(b"in.csv:");
        assert_eq!(
            stable_hash_more(prefix, b"1234"),
            stable_hash(b"in.csv:1234")
        );
    }
}
