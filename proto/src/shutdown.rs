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

/// Runs `work` to its end, or until `grace` has passed since `stopping` resolved, whichever
/// comes first; returns whether `work` ended by itself.
///
/// For controllers: kube-runtime lets reconciles in flight finish after its shutdown signal,
/// but a controller told to stop while its caches are still filling can wait for them
/// forever. Every slow step of this system is an operation on a node, found again from
/// status by the next controller, so cutting a reconcile short after a grace period loses
/// nothing.
pub async fn finish_within(
    work: impl Future<Output = ()>,
    stopping: impl Future<Output = ()>,
    grace: std::time::Duration,
) -> bool {
    let deadline = async {
        stopping.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = work => true,
        () = deadline => {
            tracing::warn!(?grace, "still busy after the shutdown grace period; stopping anyway");
            false
        }
    }
}
