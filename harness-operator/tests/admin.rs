//! harness-operator as a process: its admin endpoint and its shutdown.

#[tokio::test]
async fn serves_healthz_and_metrics_and_exits_cleanly_on_sigterm() {
    e2e::component::check_admin_lifecycle(
        env!("CARGO_BIN_EXE_harness-operator").as_ref(),
        "harness-operator",
    )
    .await;
}
