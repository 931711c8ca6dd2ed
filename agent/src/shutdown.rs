//! Graceful shutdown: turns SIGTERM (what the kubelet sends) and ctrl-c into one watch flag
//! that every long-running part of `berth-agent run` listens to. What happens then — stop
//! taking new work, let the apply in flight finish within the grace period, release the
//! Lease — is the controller's job; this module only owns the signal.

use std::time::Duration;

use tokio::sync::watch;

/// Default time the in-flight reconciles get to finish after SIGTERM. Below the kubelet's
/// default termination grace period (30 s) so the Lease is released before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// A flag that turns true once SIGTERM or SIGINT arrives.
pub fn on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        tx.send_replace(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        tx.closed().await;
    });
    rx
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the agent gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
