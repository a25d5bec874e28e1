//! Signals for the long-running roles (leader, worker): SIGINT or SIGTERM starts a graceful stop,
//! and a second one exits at once. (`run` watches SIGINT itself, to cancel its job.) A command
//! that writes a file (`get`) races its work against [`interrupted`].

use tokio_util::sync::CancellationToken;

/// A token cancelled by SIGINT or SIGTERM (graceful stop); a second signal exits at once.
pub(super) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // Process-wide signal watcher: it lives as long as the process (the runtime drops it).
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down gracefully (signal again to force)");
        t.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    token
}

/// Resolves at the first SIGINT or SIGTERM: raced against a command's work, so that the work
/// is dropped (its temporary files removed) rather than the process killed mid-write.
pub(super) async fn interrupted() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot watch SIGINT");
                std::future::pending::<()>().await;
            }
        }
    }
}
