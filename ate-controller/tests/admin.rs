//! ate-controller as a process: its admin endpoint and its shutdown.

#[tokio::test]
async fn serves_healthz_and_metrics_and_exits_cleanly_on_sigterm() {
    let cluster = e2e::cluster::shared();
    let exe = env!("CARGO_BIN_EXE_ate-controller");
    let env = [("KUBECONFIG", cluster.kubeconfig.as_path())];
    e2e::component::check_admin_lifecycle(exe.as_ref(), "ate-controller", &[], &env).await;
}
