//! The HTTP clients this process builds (to the leader, to its store door), all on one TLS
//! configuration. Building a `reqwest` client loads and parses the platform's root
//! certificates (a few hundred files); an embedded cluster builds about ten clients (the CLI's,
//! and three per worker), which was a sixth of a small job's CPU. They are loaded once here
//! and the configuration is shared.

use std::sync::OnceLock;

/// Installs the TLS crypto provider (ring) the HTTP clients use; call once at start-up (later
/// calls do nothing).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process's TLS client configuration: the platform's roots, verified as `reqwest` would
/// (`rustls-platform-verifier`); `None` if they could not be loaded (each client then makes
/// its own and reports what is wrong when it is built).
fn shared_tls() -> Option<rustls::ClientConfig> {
    static TLS: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        install_crypto();
        use rustls_platform_verifier::ConfigVerifierExt;
        match rustls::ClientConfig::with_platform_verifier() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "loading the platform's TLS roots failed; each HTTP client tries on its own");
                None
            }
        }
    })
    .clone()
}

/// How long a client keeps an idle connection for its next request: less than the leader's
/// server waits for one (its header timeout, 10 s, closes an idle keep-alive connection).
/// With reqwest's 90 s, a request sent on a connection idle for 10 s could cross the
/// server's close and fail "error sending request": a sink restarted after 10 s of back-off
/// failed its first LIST so (found by a full test suite).
pub const IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(4);

/// A client builder on the process's shared TLS configuration: what every HTTP client of
/// RainStorm starts from.
pub fn http_client() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().pool_idle_timeout(IDLE_CONNECTION);
    match shared_tls() {
        Some(tls) => builder.tls_backend_preconfigured(tls),
        None => builder,
    }
}

/// A client builder for talking to `base` alone (a leader's URL): for a plain `http://` one,
/// a TLS configuration that trusts no root, so the platform's roots are never loaded (some
/// 7 ms of every `rainstorm run` and CLI call on loopback, a third of a small job). Such a
/// client fails any `https://` request it is ever given, rather than trusting it.
pub fn http_client_for(base: &str) -> reqwest::ClientBuilder {
    if !base.starts_with("http://") {
        return http_client();
    }
    static PLAIN: OnceLock<rustls::ClientConfig> = OnceLock::new();
    let tls = PLAIN.get_or_init(|| {
        install_crypto();
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    reqwest::Client::builder()
        .pool_idle_timeout(IDLE_CONNECTION)
        .tls_backend_preconfigured(tls.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for a plain `http://` leader builds without the platform's roots, and would
    /// refuse any server over TLS (it trusts no root) rather than accept it.
    #[tokio::test]
    async fn a_client_for_a_plain_leader_trusts_no_root() {
        let plain = http_client_for("http://127.0.0.1:1").build().unwrap();
        let tls = plain.get("https://127.0.0.1:1/").send().await;
        assert!(tls.is_err());
        assert!(http_client_for("https://leader.example:7070")
            .build()
            .is_ok());
    }

    #[test]
    fn clients_share_one_configuration_and_build() {
        assert!(shared_tls().is_some(), "the platform's roots load");
        assert!(http_client().build().is_ok());
        assert!(http_client().build().is_ok());
    }
}
