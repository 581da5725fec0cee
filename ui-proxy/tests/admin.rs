//! ui-proxy as a process: its admin endpoint and its shutdown.

#[tokio::test]
async fn serves_healthz_and_metrics_and_exits_cleanly_on_sigterm() {
    let exe = env!("CARGO_BIN_EXE_ui-proxy");
    e2e::component::check_admin_lifecycle(exe.as_ref(), "ui-proxy", &[], &[]).await;
}
