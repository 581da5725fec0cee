//! Running a substrate-rs binary as a process, the way a Deployment or DaemonSet would.

use std::{path::Path, process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

use crate::{port, readiness::http_status};

/// A running substrate-rs binary with its admin endpoint on a free loopback port.
///
/// Killed when dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Component {
    child: Child,
    /// `http://127.0.0.1:<port>` of its `/healthz` and `/metrics`.
    pub admin_url: String,
}

impl Component {
    /// Starts `exe` with `args` plus `--admin-addr`, and waits up to 30 s for `/healthz`.
    ///
    /// # Panics
    ///
    /// When it cannot start or does not become healthy: a test cannot go on without it.
    pub async fn start(exe: &Path, args: &[&str]) -> Component {
        Component::start_with_env(exe, args, &[]).await
    }

    /// As [`Component::start`], with extra environment variables, e.g. `KUBECONFIG`.
    ///
    /// # Panics
    ///
    /// As [`Component::start`].
    pub async fn start_with_env(exe: &Path, args: &[&str], env: &[(&str, &Path)]) -> Component {
        let admin_port = port::free().expect("a free port");
        let admin_url = format!("http://127.0.0.1:{admin_port}");
        let child = Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .arg(format!("--admin-addr=127.0.0.1:{admin_port}"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut component = Component { child, admin_url };

        let healthz = format!("{}/healthz", component.admin_url);
        for _ in 0..300 {
            if http_status(&healthz, 200).await.is_ok() {
                return component;
            }
            if let Ok(Some(status)) = component.child.try_wait() {
                panic!("{} exited before it was healthy: {status}", exe.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} did not answer {healthz} within 30 s", exe.display());
    }

    /// The process's ID.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would, and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns whether it
    /// exited with status 0 in time.
    pub async fn terminate(mut self, timeout: Duration) -> bool {
        let pid = self.child.id().and_then(|id| i32::try_from(id).ok()).expect("a running child");
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        matches!(tokio::time::timeout(timeout, self.child.wait()).await, Ok(Ok(status)) if status.success())
    }
}

/// The path of another binary of this workspace, built beside the running test or benchmark
/// (`target/<profile>/<name>`).
///
/// `cargo test --workspace` builds every binary before running any test; a test run for one
/// package alone may not have built it.
///
/// # Panics
///
/// When the binary is not there, saying how to build it.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    let profile_dir = exe
        .ancestors()
        .find(|dir| dir.join(name).is_file())
        .unwrap_or_else(|| panic!("{name} is not built beside {}; run `cargo build -p {name}` or `cargo test --workspace`", exe.display()));
    profile_dir.join(name)
}

/// Checks what every substrate-rs binary promises: it answers `/healthz` with `ok`, renders
/// `/metrics` as Prometheus text naming the component, and exits 0 within 10 s of SIGTERM.
///
/// # Panics
///
/// When any of that does not hold, with what was seen.
pub async fn check_admin_lifecycle(
    exe: &Path,
    component: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) {
    let running = Component::start_with_env(exe, args, env).await;
    let client = crate::http::client().build().unwrap();

    let healthz = client.get(format!("{}/healthz", running.admin_url)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap(), "ok\n");

    let metrics = client.get(format!("{}/metrics", running.admin_url)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let body = metrics.text().await.unwrap();
    let build_info = format!("substrate_build_info{{component=\"{component}\"");
    assert!(body.contains(&build_info), "/metrics lacks {build_info}: {body}");

    assert!(
        running.terminate(Duration::from_secs(10)).await,
        "{component} did not exit 0 on SIGTERM"
    );
}
