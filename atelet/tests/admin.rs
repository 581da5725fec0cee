//! atelet as a process: its admin endpoint and its shutdown.

#[tokio::test]
async fn serves_healthz_and_metrics_and_exits_cleanly_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = format!("--state-dir={}", state.path().display());
    let args = ["serve", &state_dir, "--grpc-addr=127.0.0.1:0"];
    let exe = env!("CARGO_BIN_EXE_atelet");
    e2e::component::check_admin_lifecycle(exe.as_ref(), "atelet", &args, &[]).await;
}
