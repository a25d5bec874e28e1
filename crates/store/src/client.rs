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

/// A client builder on the process's shared TLS configuration: what every HTTP client of
/// RainStorm starts from.
pub fn http_client() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match shared_tls() {
        Some(tls) => builder.tls_backend_preconfigured(tls),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_one_configuration_and_build() {
        assert!(shared_tls().is_some(), "the platform's roots load");
        assert!(http_client().build().is_ok());
        assert!(http_client().build().is_ok());
    }
}
