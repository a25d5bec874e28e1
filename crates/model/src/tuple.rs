//! The unit of data and the stable hash used for partitioning (it must agree across processes
//! and releases, so it is not `std`'s hasher). Its line encoding for executable operators is in
//! `protocol::line`.

/// A `(key, value)` pair flowing through a job.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tuple {
    /// Partitioning key.
    pub key: String,
    /// Payload; the sink writes only this.
    pub value: String,
}

impl Tuple {
    /// Builds a tuple from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tuple {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// 64-bit FNV-1a: tiny, deterministic everywhere, good enough spread for partitioning.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
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
    }
}
