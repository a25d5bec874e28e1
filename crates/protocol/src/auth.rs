//! The cluster secret and what is derived from it, for every door: the public API and the
//! workers' registration take it as a bearer token; a registered worker gets its own session
//! key, so no one can speak for another worker; data-plane connections prove it with an HMAC
//! over the listener's fresh challenge and the whole Hello, so the secret never crosses the
//! wire and a Hello cannot be replayed on another connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// The cluster secret. Never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The token file could not be read.
    #[error("reading the token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The secret is too short to be a secret.
    #[error("the cluster secret must be at least 16 characters (it has {0})")]
    TooShort(usize),
    /// The system's random source failed.
    #[error("no randomness for a secret: {0}")]
    Random(String),
}

impl Secret {
    /// A secret from its text (surrounding whitespace ignored; at least 16 characters).
    pub fn new(text: &str) -> Result<Secret, SecretError> {
        let t = text.trim();
        if t.chars().count() < 16 {
            return Err(SecretError::TooShort(t.chars().count()));
        }
        Ok(Secret(Arc::from(t)))
    }

    /// Reads the secret from a file (the first line).
    pub fn from_file(path: &std::path::Path) -> Result<Secret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Secret::new(text.lines().next().unwrap_or(""))
    }

    /// `--token-file` if given, else the `RAINSTORM_TOKEN` variable, else none.
    pub fn from_args(file: Option<&std::path::Path>) -> Result<Option<Secret>, SecretError> {
        if let Some(f) = file {
            return Secret::from_file(f).map(Some);
        }
        match std::env::var("RAINSTORM_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Secret::new(&t).map(Some),
            _ => Ok(None),
        }
    }

    /// A fresh random secret (the embedded cluster of `rainstorm run` makes one).
    pub fn random() -> Result<Secret, SecretError> {
        Ok(Secret(Arc::from(random_hex(32)?.as_str())))
    }

    /// The text, for an `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        eq_ct(self.0.as_bytes(), candidate.as_bytes())
    }

    /// The data plane's key, derived so that a leaked data-plane key is not the API token.
    pub fn data_key(&self) -> DataKey {
        DataKey(Arc::new(hmac(
            self.0.as_bytes(),
            &[b"rainstorm data plane v1"],
        )))
    }
}

/// Compares in constant time (for equal lengths).
pub fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, SecretError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A fresh challenge nonce for a data-plane connection.
pub fn nonce() -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut b) {
        // Without randomness a challenge could repeat; fall back to the clock and a counter,
        // which still never repeats within a process.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        tracing::warn!(error = %e, "no randomness for a data-plane challenge");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(
            &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_be_bytes(),
        );
    }
    b
}

/// The data plane's key (or none: a cluster without a secret, on loopback only).
#[derive(Clone, Default)]
pub struct DataKey(Arc<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// How data-plane connections authenticate: with a key, or not at all (no secret).
#[derive(Clone, Debug, Default)]
pub struct DataAuth(pub Option<DataKey>);

impl DataAuth {
    /// The proof a sender attaches to its Hello (`body` = the Hello without its proof).
    pub fn prove(&self, nonce: &[u8; 16], body: &[u8]) -> Vec<u8> {
        match &self.0 {
            Some(k) => hmac(&k.0[..], &[nonce, body]).to_vec(),
            None => Vec::new(),
        }
    }

    /// Whether `proof` is right for this challenge and Hello.
    pub fn verify(&self, nonce: &[u8; 16], body: &[u8], proof: &[u8]) -> bool {
        match &self.0 {
            Some(k) => eq_ct(&hmac(&k.0[..], &[nonce, body]), proof),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_the_key_the_challenge_and_the_hello() {
        let s = Secret::new("0123456789abcdef-secret").unwrap();
        let auth = DataAuth(Some(s.data_key()));
        let n = nonce();
        let p = auth.prove(&n, b"hello");
        assert!(auth.verify(&n, b"hello", &p));
        assert!(!auth.verify(&nonce(), b"hello", &p), "another challenge");
        assert!(!auth.verify(&n, b"hellO", &p), "another Hello");
        let other = DataAuth(Some(
            Secret::new("another-secret-of-16").unwrap().data_key(),
        ));
        assert!(!other.verify(&n, b"hello", &p), "another secret");
        assert!(DataAuth(None).verify(&n, b"x", &[]));
    }

    #[test]
    fn secrets_are_long_compared_in_constant_time_and_never_printed() {
        assert!(Secret::new("short").is_err());
        let s = Secret::new("  0123456789abcdef  ").unwrap();
        assert!(s.matches("0123456789abcdef"));
        assert!(!s.matches("0123456789abcdeF"));
        assert!(!format!("{s:?}").contains("0123"));
        assert_eq!(Secret::random().unwrap().expose().len(), 64);
    }
}
