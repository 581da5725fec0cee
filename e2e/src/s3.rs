//! An S3 server on loopback: s3s-fs, storing objects as files.

use std::{fs, path::Path, time::Duration};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::{
    ClusterError, port,
    process::{Group, Lifetime, spawn},
    readiness::wait_until,
    tools::Tools,
};

/// The bucket every local cluster creates for snapshots.
pub const BUCKET: &str = "substrate-snapshots";

/// Where the S3 server listens and how to authenticate to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Endpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The bucket for snapshots, created at start.
    pub bucket: String,
    /// A file holding the credentials in the AWS shared-credentials format, mode 0600.
    pub credentials_file: std::path::PathBuf,
}

/// Starts s3s-fs with its objects in `dir/s3`, fresh random credentials, and the snapshot
/// bucket created, and waits until it answers HTTP.
///
/// s3s-fs takes its keys only as flags, so they are visible in this machine's process list;
/// they are generated per cluster and guard nothing but this throw-away test server.
///
/// # Errors
///
/// When it cannot start or does not answer in time.
pub async fn start(
    tools: &Tools,
    dir: &Path,
    lifetime: Lifetime,
) -> Result<(S3Endpoint, Group), ClusterError> {
    let root = dir.join("s3");
    let bucket = root.join(BUCKET);
    fs::create_dir_all(&bucket).map_err(|e| ClusterError::io(&bucket, e))?;

    let access_key = Alphanumeric.sample_string(&mut rand::rng(), 20);
    let secret_key = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let credentials_file = dir.join("s3-credentials");
    let credentials = format!(
        "[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
    );
    crate::pki::write_private(&credentials_file, &credentials)?;

    let port = port::free()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = dir.join("s3s-fs.log");
    let args = vec![
        "--host=127.0.0.1".to_owned(),
        format!("--port={port}"),
        format!("--access-key={access_key}"),
        format!("--secret-key={secret_key}"),
        root.display().to_string(),
    ];
    let mut group = Group::default();
    let service = group.push(spawn("s3s-fs", &tools.s3s_fs, &args, &log, lifetime)?);

    // Unauthenticated requests are refused with 403, which is answer enough that it serves.
    wait_until("s3s-fs", service, Duration::from_secs(30), || {
        crate::readiness::http_status(&url, 403)
    })
    .await?;
    Ok((S3Endpoint { url, bucket: BUCKET.to_owned(), credentials_file }, group))
}
