//! Waiting for the signal to stop.

use tokio::signal::unix::{SignalKind, signal as unix_signal};

/// Resolves when the process receives SIGTERM (how Kubernetes stops a pod) or SIGINT
/// (Ctrl-C), logging which. Pass it to servers as their graceful-shutdown future.
///
/// # Panics
///
/// If the signal handlers cannot be installed, which only happens outside a Tokio runtime.
pub async fn signal() {
    let mut term = unix_signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = unix_signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}
