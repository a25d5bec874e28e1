//! Who may speak, at every door. The cluster secret admits: the public API and a worker's
//! registration take it as a bearer token. Identity is per worker: each worker process makes
//! its own Ed25519 key ([`Identity`]) and registers the public half ([`PeerKey`]), signing the
//! leader's fresh challenge with it, so a registration can rejoin under an old worker id only
//! with that worker's key; a registered worker gets a session key for its later control-plane
//! calls. On the data plane a Hello is signed with the sending worker's key over the
//! listener's fresh challenge and the whole Hello, and the receiver checks it against the key
//! its route table names for that sender attempt: the cluster secret plays no part there, and
//! a process that holds it but does not run the sender attempt cannot open its link.

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
    #[error("reading the token file {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Cause: in the message, so not a `source` too (a printed chain would repeat it).
        cause: std::io::Error,
    },
    /// The secret is too short to be a secret.
    #[error("the cluster secret must be at least 16 characters (it has {0})")]
    TooShort(usize),
    /// `RAINSTORM_TOKEN` is set but holds nothing: most likely `$(cat FILE)` of a file that
    /// is missing, which must not start a process without a secret in silence.
    #[error("RAINSTORM_TOKEN is set but empty (was the file it was read from missing?): set the secret, or unset RAINSTORM_TOKEN to run without one")]
    EmptyEnv,
    /// The system's random source failed.
    #[error("no randomness for a secret: {0}")]
    Random(String),
    /// A worker key could not be made from its seed.
    #[error("making a worker key: {0}")]
    Key(String),
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
        let text = std::fs::read_to_string(path).map_err(|cause| SecretError::Read {
            path: path.display().to_string(),
            cause,
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
            // Hostile probe 14: `export RAINSTORM_TOKEN=$(cat missing)` started a leader with
            // no secret and no word.
            Ok(_) => Err(SecretError::EmptyEnv),
            Err(_) => Ok(None),
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
}

/// Compares in constant time (for equal lengths).
pub fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// A worker's own signing key (Ed25519), made fresh by each worker process and never sent
/// anywhere: the private half stays in the worker's memory, the public half ([`PeerKey`]) is
/// registered with the leader (proving the cluster secret), recorded durably with the worker's
/// id, and named in every route table entry of the attempts that worker runs. A data-plane
/// Hello and a registration are signed with it, so the cluster secret alone no longer lets a
/// process speak for a task attempt or a worker it is not.
#[derive(Clone)]
pub struct Identity(Arc<IdentityInner>);

struct IdentityInner {
    pair: ring::signature::Ed25519KeyPair,
    public: PeerKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", self.0.public)
    }
}

/// What a Hello's signature covers besides the Hello: the purpose, so that no other signed
/// message can pass for a Hello.
const HELLO_CONTEXT: &[u8] = b"rainstorm data-plane hello v2\0";

/// What a registration's signature covers besides the claim.
const REGISTER_CONTEXT: &[u8] = b"rainstorm worker registration v1\0";

impl Identity {
    /// A fresh key from the system's random source (a worker makes one at start-up).
    pub fn generate() -> Result<Identity, SecretError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SecretError::Random(e.to_string()))?;
        Identity::from_seed(seed)
    }

    /// The key a 32-byte seed determines (the simulation and tests use fixed seeds, so a run
    /// replays exactly).
    pub fn from_seed(seed: [u8; 32]) -> Result<Identity, SecretError> {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| SecretError::Key(e.to_string()))?;
        let public = PeerKey::from_slice(ring::signature::KeyPair::public_key(&pair).as_ref())
            .ok_or_else(|| SecretError::Key("an Ed25519 public key is not 32 bytes".into()))?;
        Ok(Identity(Arc::new(IdentityInner { pair, public })))
    }

    /// The public half, which the leader records and hands to receivers in route tables.
    pub fn public(&self) -> PeerKey {
        self.0.public
    }

    /// The proof a sender attaches to its Hello (`body` = the Hello without its proof): a
    /// signature over the listener's challenge and the Hello.
    pub fn sign_hello(&self, challenge: &[u8; 16], body: &[u8]) -> Vec<u8> {
        self.sign(&[HELLO_CONTEXT, challenge, body])
    }

    /// The proof a registration carries: a signature over the leader's challenge and the
    /// claim (this key, the data address, the pid, and the id it rejoins as, if any).
    pub fn sign_registration(&self, claim: &RegistrationClaim<'_>) -> Vec<u8> {
        self.sign(&[REGISTER_CONTEXT, &claim.encode(&self.0.public)])
    }

    fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        self.0.pair.sign(&parts.concat()).as_ref().to_vec()
    }
}

/// What a worker's registration claims, as its signature covers it.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationClaim<'a> {
    /// The challenge the leader handed out for this registration (single use).
    pub challenge: &'a [u8],
    /// The worker's data address.
    pub data_addr: &'a str,
    /// The worker's process id.
    pub pid: u32,
    /// The worker id it asks to keep (a rejoin), if any.
    pub rejoin: Option<&'a str>,
}

impl RegistrationClaim<'_> {
    /// Length-prefixed fields, so no two claims encode alike.
    fn encode(&self, key: &PeerKey) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [
            self.challenge,
            &key.0[..],
            self.data_addr.as_bytes(),
            &self.pid.to_be_bytes()[..],
            self.rejoin.unwrap_or("").as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.push(u8::from(self.rejoin.is_some()));
        out
    }
}

/// A worker's public key: what the leader records for a worker id and what a route table
/// names for each task attempt, so a receiver can check that a Hello comes from the worker
/// running the sender attempt it names. Serialized as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey([u8; 32]);

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({})", &hex::encode(self.0)[..12])
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl PeerKey {
    /// The key in `bytes`, if they are 32 of them.
    pub fn from_slice(bytes: &[u8]) -> Option<PeerKey> {
        bytes.try_into().ok().map(PeerKey)
    }

    /// Whether `proof` is this key's signature over the challenge and the Hello.
    pub fn verify_hello(&self, challenge: &[u8; 16], body: &[u8], proof: &[u8]) -> bool {
        self.verify(&[HELLO_CONTEXT, challenge, body], proof)
    }

    /// Whether `proof` is this key's signature over the registration claim.
    pub fn verify_registration(&self, claim: &RegistrationClaim<'_>, proof: &[u8]) -> bool {
        self.verify(&[REGISTER_CONTEXT, &claim.encode(self)], proof)
    }

    fn verify(&self, parts: &[&[u8]], proof: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0[..])
            .verify(&parts.concat(), proof)
            .is_ok()
    }
}

impl serde::Serialize for PeerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for PeerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        PeerKey::from_slice(&bytes)
            .ok_or_else(|| serde::de::Error::custom("a worker key is 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its chain of sources, as `{:#}` prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out = format!("{out}: {s}");
            next = s.source();
        }
        out
    }

    #[test]
    fn an_unreadable_token_file_names_its_cause_once() {
        let e = Secret::from_file(std::path::Path::new("/nonexistent/token")).unwrap_err();
        let shown = chain(&e);
        assert_eq!(shown.matches("No such file").count(), 1, "{shown}");
        assert!(shown.contains("/nonexistent/token"), "{shown}");
    }

    #[test]
    fn hello_proofs_bind_the_worker_key_the_challenge_and_the_hello() {
        let me = Identity::from_seed([1; 32]).unwrap();
        let n = nonce();
        let p = me.sign_hello(&n, b"hello");
        assert!(me.public().verify_hello(&n, b"hello", &p));
        assert!(
            !me.public().verify_hello(&nonce(), b"hello", &p),
            "another challenge"
        );
        assert!(!me.public().verify_hello(&n, b"hellO", &p), "another Hello");
        let other = Identity::from_seed([2; 32]).unwrap();
        assert!(
            !other.public().verify_hello(&n, b"hello", &p),
            "another worker"
        );
        assert!(
            !me.public().verify_hello(&n, b"hello", &[0; 64]),
            "a made-up proof"
        );
        assert!(!me.public().verify_hello(&n, b"hello", &[]), "no proof");
        assert_eq!(
            Identity::from_seed([1; 32]).unwrap().public(),
            me.public(),
            "a seed is one key"
        );
    }

    #[test]
    fn registration_proofs_bind_every_field_of_the_claim() {
        let me = Identity::from_seed([3; 32]).unwrap();
        let claim = RegistrationClaim {
            challenge: b"0123456789abcdef",
            data_addr: "127.0.0.1:7000",
            pid: 42,
            rejoin: Some("w1"),
        };
        let p = me.sign_registration(&claim);
        assert!(me.public().verify_registration(&claim, &p));
        for other in [
            RegistrationClaim {
                challenge: b"0123456789abcdeF",
                ..claim
            },
            RegistrationClaim {
                data_addr: "127.0.0.1:7001",
                ..claim
            },
            RegistrationClaim { pid: 43, ..claim },
            RegistrationClaim {
                rejoin: Some("w2"),
                ..claim
            },
            RegistrationClaim {
                rejoin: None,
                ..claim
            },
        ] {
            assert!(!me.public().verify_registration(&other, &p), "{other:?}");
        }
        // A Hello signature is never a registration proof, nor the reverse.
        assert!(!me.public().verify_hello(b"0123456789abcdef", b"", &p));
        let key: PeerKey =
            serde_json::from_str(&serde_json::to_string(&me.public()).unwrap()).unwrap();
        assert_eq!(key, me.public());
        assert!(serde_json::from_str::<PeerKey>("\"abcd\"").is_err());
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
