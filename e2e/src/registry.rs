//! An OCI registry on loopback: the CNCF distribution registry from Debian's `docker-registry`.

use std::{fs, net::SocketAddr, path::Path, time::Duration};

use crate::{
    ClusterError, port,
    process::{Group, Lifetime, spawn},
    readiness::{http_status, wait_until},
    tools::Tools,
};

/// Starts a registry storing its blobs in `dir/registry`, and waits until `/v2/` answers.
///
/// # Errors
///
/// When it cannot start or does not answer in time.
pub async fn start(
    tools: &Tools,
    dir: &Path,
    lifetime: Lifetime,
) -> Result<(SocketAddr, Group), ClusterError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port::free()?));
    let storage = dir.join("registry");
    fs::create_dir_all(&storage).map_err(|e| ClusterError::io(&storage, e))?;
    let config = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage.display()
    );
    let config_path = dir.join("registry.yml");
    fs::write(&config_path, config).map_err(|e| ClusterError::io(&config_path, e))?;

    let log = dir.join("registry.log");
    let args = vec!["serve".to_owned(), config_path.display().to_string()];
    let mut group = Group::default();
    let service =
        group.push(spawn("docker-registry", &tools.docker_registry, &args, &log, lifetime)?);
    let url = format!("http://{addr}/v2/");
    wait_until("docker-registry /v2/", service, Duration::from_secs(30), || http_status(&url, 200))
        .await?;
    Ok((addr, group))
}
