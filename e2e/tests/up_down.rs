//! `cargo run -p e2e -- up` and `-- down`, run as a person would run them.

use std::{path::Path, process::Command, time::Instant};

use e2e::LocalCluster;

fn e2e(dir: &Path, command: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_e2e"))
        .args(["--dir", dir.to_str().unwrap(), command])
        .output()
        .unwrap()
}

/// Runs `down` when dropped, so a failing assertion leaves no cluster running.
struct DownOnDrop<'a>(&'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        e2e(self.0, "down");
    }
}

#[test]
fn up_prints_exports_last_reuses_a_running_cluster_and_down_leaves_no_process() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cluster");
    let _down = DownOnDrop(&dir);

    let started = Instant::now();
    let up = e2e(&dir, "up");
    let up_seconds = started.elapsed().as_secs_f64();
    assert!(up.status.success(), "up failed: {}", String::from_utf8_lossy(&up.stderr));
    let exports = String::from_utf8(up.stdout).unwrap();
    let last = exports.lines().last().unwrap_or_default();
    assert_eq!(last, format!("export KUBECONFIG={}", dir.join("kubeconfig").display()));
    assert!(exports.contains("export SUBSTRATE_REGISTRY=127.0.0.1:"), "{exports}");
    assert!(exports.contains("export SUBSTRATE_S3_ENDPOINT=http://127.0.0.1:"), "{exports}");

    let cluster = LocalCluster::load(&dir).unwrap().expect("up records its state");
    let names: Vec<&str> = cluster.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["etcd", "kube-apiserver", "kube-controller-manager", "docker-registry", "s3s-fs"]
    );
    assert!(cluster.is_running(), "up exited but its processes did not run on");
    let crd = cluster.kubectl(&["get", "crd", "agentharnesses.kagent.dev"], None).unwrap();
    assert!(crd.status.success(), "CRDs not installed: {}", String::from_utf8_lossy(&crd.stderr));

    let again = e2e(&dir, "up");
    assert!(again.status.success());
    assert_eq!(String::from_utf8(again.stdout).unwrap(), exports, "a second up started anew");
    assert_eq!(LocalCluster::load(&dir).unwrap().unwrap().services, cluster.services);

    let started = Instant::now();
    let down = e2e(&dir, "down");
    let down_seconds = started.elapsed().as_secs_f64();
    assert!(down.status.success(), "down failed: {}", String::from_utf8_lossy(&down.stderr));
    for service in &cluster.services {
        assert!(!service.is_running(), "{} (pid {}) outlived down", service.name, service.pid);
    }
    assert!(!dir.exists(), "down left {}", dir.display());
    eprintln!("up took {up_seconds:.1} s, down took {down_seconds:.1} s");
}
