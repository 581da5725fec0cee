//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on, client
//! certificates from a fresh CA) and kube-controller-manager (for garbage collection of owned
//! objects and the other built-in controllers).

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::{
    ClusterError,
    pki::{CertifiedKey, Pki, write_private},
    port,
    process::{Group, Lifetime, Service, spawn},
    readiness::{http_status, wait_until},
    tools::Tools,
};

/// How long each control-plane process may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// A kubeconfig for the admin (`system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The API server process, whose log explains refused requests.
    pub apiserver: Service,
    /// etcd, kube-apiserver, kube-controller-manager, in start order.
    pub services: Group,
}

/// Starts etcd, kube-apiserver and kube-controller-manager with their state in `dir`, and
/// waits until each is ready.
///
/// # Errors
///
/// When a process cannot start or does not become ready in time; the error names its log.
pub async fn start(
    tools: &Tools,
    dir: &Path,
    lifetime: Lifetime,
) -> Result<ControlPlane, ClusterError> {
    let pki = Pki::generate()?;
    let files = write_credentials(dir, &pki)?;
    let mut services = Group::default();

    // etcd: in-memory speed matters more than durability for a throw-away cluster.
    let etcd_client = port::free()?;
    let etcd_peer = port::free()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let etcd_log = dir.join("etcd.log");
    let etcd_args = args(&[
        "--name=default",
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls={etcd_url}"),
        &format!("--advertise-client-urls={etcd_url}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
        &format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
        &format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]);
    let etcd = services.push(spawn("etcd", &tools.etcd, &etcd_args, &etcd_log, lifetime)?);
    let health = format!("{etcd_url}/health");
    wait_until("etcd /health", etcd, START_TIMEOUT, || http_status(&health, 200)).await?;

    // kube-apiserver: RBAC on, clients authenticated by certificates of our CA.
    let apiserver_port = port::free()?;
    let server = format!("https://127.0.0.1:{apiserver_port}");
    let apiserver_log = dir.join("kube-apiserver.log");
    let apiserver_args = args(&[
        &format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        &format!("--secure-port={apiserver_port}"),
        &format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        &format!("--tls-cert-file={}", files.apiserver_cert.display()),
        &format!("--tls-private-key-file={}", files.apiserver_key.display()),
        &format!("--client-ca-file={}", files.ca_cert.display()),
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        &format!("--service-account-key-file={}", files.service_account_public.display()),
        &format!("--service-account-signing-key-file={}", files.service_account_key.display()),
        "--service-cluster-ip-range=10.96.0.0/16",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=1",
    ]);
    let apiserver =
        spawn("kube-apiserver", &tools.kube_apiserver, &apiserver_args, &apiserver_log, lifetime)?;
    let apiserver = services.push(apiserver).clone();
    let admin_kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&admin_kubeconfig, &server, &pki.ca, &pki.admin, "substrate-admin")?;
    let client = client(&admin_kubeconfig).await?;
    wait_until("kube-apiserver /readyz", &apiserver, START_TIMEOUT, || readyz(&client)).await?;

    // kube-controller-manager: each controller acts under its own service account, as in a
    // real cluster, so that RBAC applies to it.
    let cm_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
    write_kubeconfig(
        &cm_kubeconfig,
        &server,
        &pki.ca,
        &pki.controller_manager,
        "system:kube-controller-manager",
    )?;
    let cm_log = dir.join("kube-controller-manager.log");
    let cm_args = args(&[
        &format!("--kubeconfig={}", cm_kubeconfig.display()),
        "--secure-port=0",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        &format!("--service-account-private-key-file={}", files.service_account_key.display()),
        &format!("--root-ca-file={}", files.ca_cert.display()),
        "--controllers=*",
        "--v=1",
    ]);
    let cm = spawn(
        "kube-controller-manager",
        &tools.kube_controller_manager,
        &cm_args,
        &cm_log,
        lifetime,
    )?;
    let cm = services.push(cm);
    // The root-CA publisher writes this ConfigMap into every namespace: once it is there,
    // the controllers are running and authorized.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    wait_until("kube-controller-manager controllers", cm, START_TIMEOUT, || async {
        match config_maps.get_opt("kube-root-ca.crt").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("ConfigMap default/kube-root-ca.crt not published yet".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await?;

    Ok(ControlPlane { kubeconfig: admin_kubeconfig, server, apiserver, services })
}

/// Builds a client from a kubeconfig file.
///
/// # Errors
///
/// When the file cannot be read or names credentials kube cannot use.
pub async fn client(kubeconfig: &Path) -> Result<Client, ClusterError> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).map_err(kube::Error::from)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kube::Error::from)?;
    Ok(Client::try_from(config)?)
}

async fn readyz(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(error) => Err(error.to_string()),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

struct CredentialFiles {
    ca_cert: PathBuf,
    apiserver_cert: PathBuf,
    apiserver_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public: PathBuf,
}

fn write_credentials(dir: &Path, pki: &Pki) -> Result<CredentialFiles, ClusterError> {
    let pki_dir = dir.join("pki");
    fs::create_dir_all(&pki_dir).map_err(|e| ClusterError::io(&pki_dir, e))?;
    let files = CredentialFiles {
        ca_cert: pki_dir.join("ca.crt"),
        apiserver_cert: pki_dir.join("apiserver.crt"),
        apiserver_key: pki_dir.join("apiserver.key"),
        service_account_key: pki_dir.join("service-account.key"),
        service_account_public: pki_dir.join("service-account.pub"),
    };
    write_private(&files.ca_cert, &pki.ca.cert_pem)?;
    write_private(&files.apiserver_cert, &pki.apiserver.cert_pem)?;
    write_private(&files.apiserver_key, &pki.apiserver.key_pem)?;
    write_private(&files.service_account_key, &pki.service_account_key_pem)?;
    write_private(&files.service_account_public, &pki.service_account_public_pem)?;
    Ok(files)
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &CertifiedKey,
    user: &CertifiedKey,
    user_name: &str,
) -> Result<(), ClusterError> {
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "substrate-local",
            "cluster": {
                "server": server,
                "certificate-authority-data": BASE64.encode(&ca.cert_pem),
            },
        }],
        "users": [{
            "name": user_name,
            "user": {
                "client-certificate-data": BASE64.encode(&user.cert_pem),
                "client-key-data": BASE64.encode(&user.key_pem),
            },
        }],
        "contexts": [{
            "name": "substrate-local",
            "context": {"cluster": "substrate-local", "user": user_name},
        }],
        "current-context": "substrate-local",
    });
    let yaml = yaml_serde::to_string(&kubeconfig)
        .map_err(|e| ClusterError::io(path, std::io::Error::other(e)))?;
    Ok(write_private(path, &yaml)?)
}
