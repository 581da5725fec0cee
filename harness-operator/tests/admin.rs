//! harness-operator as a process: its admin endpoint and its shutdown, with the controller
//! watching the shared test cluster.

#[tokio::test]
async fn serves_healthz_and_metrics_and_exits_cleanly_on_sigterm() {
    let cluster = e2e::cluster::shared();
    let exe = env!("CARGO_BIN_EXE_harness-operator");
    let env = [("KUBECONFIG", cluster.kubeconfig.as_path())];
    let args = ["--watch-namespace", "harness-operator-admin"];
    e2e::component::check_admin_lifecycle(exe.as_ref(), "harness-operator", &args, &env).await;
}
