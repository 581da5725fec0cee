//! The local cluster: control plane, registry and S3 server on one machine, with the CRDs
//! installed. `e2e up`/`down` and the tests use the same code.

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::{
    control_plane,
    pki::PkiError,
    process::{self, Group, Lifetime, ProcessError, Service},
    readiness::{NotReady, wait_until},
    registry,
    s3::{self, S3Endpoint},
    tools::{Tools, ToolsError, cache_root},
};

/// Why the local cluster could not be started, stopped or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An executable is missing or the control plane could not be built.
    #[error(transparent)]
    Tools(#[from] ToolsError),
    /// Certificates could not be generated or written.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A process could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A process started but did not become ready.
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// No loopback port could be bound.
    #[error("finding a free loopback port: {0}")]
    Port(#[source] io::Error),
    /// A file or directory of the cluster's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The API server refused a request.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The state file of `e2e up` is not what this version writes.
    #[error("reading cluster state {path}: {source}; remove the directory and run `up` again")]
    State {
        /// The state file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(path: &Path, source: io::Error) -> ClusterError {
        ClusterError::Io { path: path.to_owned(), source }
    }
}

/// A running local cluster, as recorded in `<dir>/state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalCluster {
    /// Where its state, credentials and logs live.
    pub dir: PathBuf,
    /// An admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `kubectl` of the API server's release.
    pub kubectl: PathBuf,
    /// The OCI registry's address (plain HTTP).
    pub registry: SocketAddr,
    /// The S3 server.
    pub s3: S3Endpoint,
    /// Every process started, in start order.
    pub services: Vec<Service>,
}

const STATE_FILE: &str = "state.json";

impl LocalCluster {
    /// Starts everything with its state in `dir` (created if missing, and expected to hold no
    /// running cluster), installs the CRDs, and records the state in `dir/state.json`.
    ///
    /// If anything fails to start, what was started is stopped again before returning.
    ///
    /// # Errors
    ///
    /// When a tool is missing, a process does not start or become ready, or the CRDs are not
    /// accepted. Errors name the log file to look at.
    pub async fn start(dir: &Path, lifetime: Lifetime) -> Result<LocalCluster, ClusterError> {
        let tools = Tools::locate()?;
        fs::create_dir_all(dir).map_err(|e| ClusterError::io(dir, e))?;

        // The registry and the S3 server start while the control plane does. Each start stops
        // what it started if it fails; `services` stops everything if a later step fails.
        let (control_plane, registry, s3) = tokio::join!(
            control_plane::start(&tools, dir, lifetime),
            registry::start(&tools, dir, lifetime),
            s3::start(&tools, dir, lifetime),
        );
        let (control_plane, (registry, registry_process), (s3, s3_process)) =
            (control_plane?, registry?, s3?);
        let mut services = Group::default();
        let apiserver = control_plane.apiserver.clone();
        services.absorb(control_plane.services);
        services.absorb(registry_process);
        services.absorb(s3_process);

        let client = control_plane::client(&control_plane.kubeconfig).await?;
        install_crds(&client, &apiserver).await?;

        let mut cluster = LocalCluster {
            dir: dir.to_owned(),
            kubeconfig: control_plane.kubeconfig,
            kubectl: tools.kubectl.clone(),
            registry,
            s3,
            services: Vec::new(),
        };
        let state = dir.join(STATE_FILE);
        cluster.services = services.keep();
        let json = serde_json::to_vec_pretty(&cluster).expect("cluster state serializes");
        if let Err(error) = fs::write(&state, json) {
            process::stop(&cluster.services, Duration::from_secs(5));
            return Err(ClusterError::io(&state, error));
        }
        Ok(cluster)
    }

    /// Reads the state `start` recorded in `dir`, if there is any.
    ///
    /// # Errors
    ///
    /// When the file exists but cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Option<LocalCluster>, ClusterError> {
        let path = dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ClusterError::io(&path, error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ClusterError::State { path, source })
    }

    /// Whether every process of the cluster still runs.
    pub fn is_running(&self) -> bool {
        self.services.iter().all(Service::is_running)
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period) and removes the
    /// cluster's directory. Returns the names of processes that needed SIGKILL.
    ///
    /// # Errors
    ///
    /// When the directory cannot be removed.
    pub fn stop(&self) -> Result<Vec<String>, ClusterError> {
        let killed = process::stop(&self.services, Duration::from_secs(10));
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(killed),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(killed),
            Err(error) => Err(ClusterError::io(&self.dir, error)),
        }
    }

    /// A new client for the admin. Build one per Tokio runtime: a client's connections
    /// belong to the runtime it was first used on.
    ///
    /// # Errors
    ///
    /// When the kubeconfig cannot be read.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        control_plane::client(&self.kubeconfig).await
    }

    /// Creates a namespace named `<prefix>-<random>` for one test and returns its name.
    ///
    /// # Errors
    ///
    /// When the API server refuses.
    pub async fn namespace(&self, prefix: &str) -> Result<String, ClusterError> {
        let suffix = Alphanumeric.sample_string(&mut rand::rng(), 6).to_lowercase();
        let name = format!("{prefix}-{suffix}");
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
        }))
        .expect("a namespace literal");
        let namespaces: Api<Namespace> = Api::all(self.client().await?);
        namespaces.create(&PostParams::default(), &namespace).await?;
        Ok(name)
    }

    /// Runs this cluster's `kubectl` with `args`, feeding it `stdin`, and returns its output.
    ///
    /// # Errors
    ///
    /// When kubectl cannot be started; a failing kubectl is reported in the output.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
        use std::io::Write;

        let mut child = std::process::Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().expect("stdin was piped");
        if let Some(stdin) = stdin {
            input.write_all(stdin.as_bytes())?;
        }
        drop(input);
        child.wait_with_output()
    }

    /// The lines a shell can `eval` to use the cluster: the registry, S3, a `PATH` with the
    /// matching `kubectl` first, and `KUBECONFIG` last.
    pub fn exports(&self) -> String {
        let kubectl_dir = self.kubectl.parent().unwrap_or(Path::new("/"));
        format!(
            "export SUBSTRATE_REGISTRY={}\n\
             export SUBSTRATE_S3_ENDPOINT={}\n\
             export SUBSTRATE_S3_BUCKET={}\n\
             export AWS_SHARED_CREDENTIALS_FILE={}\n\
             export PATH=\"{}:$PATH\"\n\
             export KUBECONFIG={}\n",
            self.registry,
            self.s3.url,
            self.s3.bucket,
            self.s3.credentials_file.display(),
            kubectl_dir.display(),
            self.kubeconfig.display(),
        )
    }
}

/// Applies every CRD of substrate-rs and waits until the API server serves them.
///
/// # Errors
///
/// When the API server refuses a CRD or does not establish it in time.
pub async fn install_crds(client: &Client, apiserver: &Service) -> Result<(), ClusterError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("substrate-e2e").force();
    for crd in proto::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        wait_until(
            &format!("CRD {name} Established"),
            apiserver,
            Duration::from_secs(30),
            || async {
                let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established { Ok(()) } else { Err("not Established yet".to_owned()) }
            },
        )
        .await?;
    }
    Ok(())
}

/// The cluster shared by every test of one test binary, started on first use and killed by
/// the kernel when the test binary exits.
///
/// Tests isolate themselves with [`LocalCluster::namespace`]. Call from any thread or
/// runtime; the first call blocks while the cluster starts (about ten seconds).
///
/// # Panics
///
/// When the cluster cannot start: every test that needs it would fail anyway, and the message
/// says why.
pub fn shared() -> &'static LocalCluster {
    static SHARED: OnceLock<LocalCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = test_run_dir();
        // Start on a thread and runtime of its own: the test that happens to call first may
        // be running on a runtime that is gone before the others finish.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(LocalCluster::start(&dir, Lifetime::WithThisProcess))
                .map_err(io::Error::other)
        })
        .join()
        .expect("the cluster start-up thread panicked")
        .unwrap_or_else(|error| panic!("starting the local cluster: {error}"))
    })
}

/// A fresh directory for this test binary's cluster, after removing those of test binaries
/// that are no longer running.
fn test_run_dir() -> PathBuf {
    let runs = cache_root().join("run");
    if let Ok(entries) = fs::read_dir(&runs) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("test-") else { continue };
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    runs.join(format!("test-{}", std::process::id()))
}
