//! Finding the executables the local cluster runs.
//!
//! The Kubernetes control plane is built from its Go modules by
//! `e2e/tools/build-control-plane.sh` into a cache outside the repository; s3s-fs is
//! installed there by `e2e/tools/install-deps.sh`; docker-registry comes from Debian.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Why an executable could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// A required executable is not installed.
    #[error("{tool} not found at {path}; install it with e2e/tools/install-deps.sh")]
    Missing {
        /// The executable's name.
        tool: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The control-plane build script failed.
    #[error("building the control plane with {script} failed ({status}); its output is above")]
    Build {
        /// The script.
        script: PathBuf,
        /// How it exited.
        status: String,
    },
}

/// Paths of every executable the local cluster runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// etcd 3.6.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kubectl of the same release as the API server.
    pub kubectl: PathBuf,
    /// The CNCF distribution registry, from Debian's `docker-registry`.
    pub docker_registry: PathBuf,
    /// The S3 server.
    pub s3s_fs: PathBuf,
}

/// The root of substrate-rs's caches: `$SUBSTRATE_CACHE_DIR`, else `$XDG_CACHE_HOME` or
/// `~/.cache`, followed by `substrate-rs`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = env::var_os("SUBSTRATE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
    });
    base.join("substrate-rs")
}

impl Tools {
    /// Locates every executable, building the control plane first if it is not cached.
    ///
    /// The build takes about ten minutes on two cores the first time and is a no-op after.
    ///
    /// # Errors
    ///
    /// When the build fails or an executable is missing.
    pub fn locate() -> Result<Tools, ToolsError> {
        let control_plane = build_control_plane()?.join("bin");
        let tools = Tools {
            etcd: control_plane.join("etcd"),
            kube_apiserver: control_plane.join("kube-apiserver"),
            kube_controller_manager: control_plane.join("kube-controller-manager"),
            kubectl: control_plane.join("kubectl"),
            docker_registry: PathBuf::from("/usr/bin/docker-registry"),
            s3s_fs: cache_root().join("tools/bin/s3s-fs"),
        };
        for (tool, path) in [
            ("etcd", &tools.etcd),
            ("kube-apiserver", &tools.kube_apiserver),
            ("kube-controller-manager", &tools.kube_controller_manager),
            ("kubectl", &tools.kubectl),
            ("docker-registry", &tools.docker_registry),
            ("s3s-fs", &tools.s3s_fs),
        ] {
            if !path.is_file() {
                return Err(ToolsError::Missing { tool, path: path.clone() });
            }
        }
        Ok(tools)
    }
}

/// Runs the idempotent build script and returns the directory it prints last.
fn build_control_plane() -> Result<PathBuf, ToolsError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-control-plane.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("SUBSTRATE_CACHE_DIR", cache_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| ToolsError::Build { script: script.clone(), status: e.to_string() })?;
    if !output.status.success() {
        return Err(ToolsError::Build { script, status: output.status.to_string() });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}
