//! `e2e`: start and stop the local cluster.
//!
//! `up` starts etcd, kube-apiserver, kube-controller-manager, a registry and an S3 server on
//! loopback in the background, installs the CRDs, and prints `export …` lines for a shell as
//! its last lines. `down` stops every process `up` started and removes its state.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};
use e2e::{LocalCluster, process::Lifetime, tools::cache_root};

/// Runs substrate-rs's local cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory for the cluster's state, credentials and logs.
    #[arg(long, env = "SUBSTRATE_CLUSTER_DIR", global = true, default_value_os_t = cache_root().join("run/local"))]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local cluster in the background and print `export` lines for it.
    ///
    /// If it already runs, prints the same lines again and starts nothing.
    Up,
    /// Stop every process `up` started and remove the cluster's directory.
    Down,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    // While the API server starts, kube's client logs every refused connection as an error;
    // those are expected, and the readiness wait reports them if they last.
    proto::logging::init_with_default(proto::logging::LogFormat::Text, "info,kube_client=off");

    let result = match args.command {
        Command::Up => up(args.dir).await,
        Command::Down => down(args.dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(dir: PathBuf) -> anyhow::Result<()> {
    let start = Instant::now();
    if let Some(cluster) = LocalCluster::load(&dir)? {
        if cluster.is_running() {
            tracing::info!(dir = %dir.display(), "the local cluster already runs");
            print!("{}", cluster.exports());
            return Ok(());
        }
        tracing::warn!(dir = %dir.display(), "part of an earlier cluster is gone; starting anew");
        cluster.stop()?;
    }

    let cluster = LocalCluster::start(&dir, Lifetime::Detached).await?;
    tracing::info!(
        seconds = format!("{:.1}", start.elapsed().as_secs_f64()),
        logs = %dir.display(),
        "local cluster is up; stop it with `cargo run -p e2e -- down`"
    );
    print!("{}", cluster.exports());
    Ok(())
}

fn down(dir: PathBuf) -> anyhow::Result<()> {
    let Some(cluster) = LocalCluster::load(&dir)? else {
        tracing::info!(dir = %dir.display(), "no local cluster to stop");
        return Ok(());
    };
    let killed = cluster.stop()?;
    if !killed.is_empty() {
        tracing::warn!(?killed, "did not stop on SIGTERM and were killed");
    }
    tracing::info!(processes = cluster.services.len(), "local cluster stopped");
    Ok(())
}
