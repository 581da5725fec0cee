//! Benchmarks that print their figures, each beside the physical limit measured in the same
//! run. The last line of each run is one JSON object.
//!
//! `bench pull --image-mb N --mbps M`: pushes an image of N MB of incompressible layers to a
//! local registry, measures the link limit (a plain download of the same bytes through the
//! same link), then pulls the image through a fresh atelet and compares.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use e2e::{
    component::Component,
    image::{self, ImageSpec, LayerCompression, LayerSpec, PushedImage},
    link::{Link, LinkConfig},
    process::Lifetime,
    tools::{Tools, cache_root},
};
use proto::atelet::{GetOperationRequest, Phase, PullImageRequest, atelet_client::AteletClient};
use serde_json::json;

/// substrate-rs benchmarks.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Pull an image through a fresh atelet over a limited link.
    Pull(PullArgs),
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// Size of the image's layers, in MB (10^6 bytes).
    #[arg(long, default_value_t = 360)]
    image_mb: u64,
    /// The link's rate in Mbit/s, shared by every connection.
    #[arg(long, default_value_t = 51.0)]
    mbps: f64,
    /// Cut the connection every this many MB transferred.
    #[arg(long)]
    drop_every_mb: Option<u64>,
    /// Make the link ignore Range requests (answer 200 with the whole blob).
    #[arg(long)]
    ignore_range: bool,
    /// kill -9 atelet once this fraction of the image is on disk, then restart it.
    #[arg(long)]
    kill_atelet_at: Option<f64>,
    /// Start this many pull operations for the same image at once.
    #[arg(long, default_value_t = 1)]
    concurrent: u32,
}

const MB: u64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    proto::logging::init_with_default(proto::logging::LogFormat::Text, "warn,bench=info");
    match Args::parse().command {
        Bench::Pull(args) => pull(args).await,
    }
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("bench-pull-").tempdir_in(bench_dir()?)?;
    let atelet = build_atelet()?;
    let tools = Tools::locate()?;
    let (registry, _registry_process) =
        e2e::registry::start(&tools, work.path(), Lifetime::WithThisProcess).await?;

    eprintln!("pushing a {} MB image", args.image_mb);
    let image = push_padding_image(registry, args.image_mb * MB, work.path()).await?;
    let image_bytes = image.layer_bytes() + image.config.size;

    let link = Link::start(registry, LinkConfig { mbps: Some(args.mbps), ..LinkConfig::default() })
        .await?;
    eprintln!(
        "measuring the link limit: a plain download of the same bytes at {} Mbit/s",
        args.mbps
    );
    let link_limit_s = plain_download(&link, &image).await?;

    link.set_drop_every_bytes(args.drop_every_mb.map(|mb| mb * MB));
    link.set_ignore_range(args.ignore_range);
    let served_before = link.bytes_served();

    eprintln!("pulling through a fresh atelet");
    let state = work.path().join("atelet-state");
    let (mut process, mut client) = start_atelet(&atelet, &state, &link).await?;
    let mut peak_rss = 0;
    let started = Instant::now();
    let mut names = Vec::new();
    for i in 0..args.concurrent {
        let request = PullImageRequest {
            idempotency_key: format!("bench-{i}"),
            image: image.reference_via(link.addr()),
            unpack: false,
        };
        names.push(client.pull_image(request).await?.into_inner().name);
    }

    let mut killed = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss = peak_rss.max(rss_bytes(process.pid()));
        let mut unfinished = 0;
        let mut least_done = u64::MAX;
        for name in &names {
            let request = GetOperationRequest { name: name.clone() };
            let operation = client.get_operation(request).await?.into_inner();
            let metadata = operation.metadata.clone().unwrap_or_default();
            if operation.done {
                anyhow::ensure!(metadata.phase() == Phase::Succeeded, "pull failed: {operation:?}");
            } else {
                unfinished += 1;
                least_done = least_done.min(metadata.bytes_done);
            }
        }
        if unfinished == 0 {
            break;
        }
        let fraction = least_done as f64 / image_bytes as f64;
        if let Some(at) = args.kill_atelet_at.filter(|&at| !killed && fraction >= at) {
            eprintln!("kill -9 atelet at {:.0}% (asked {:.0}%)", fraction * 100.0, at * 100.0);
            process.kill().await;
            (process, client) = start_atelet(&atelet, &state, &link).await?;
            killed = true;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the pull took over an hour"
        );
    }
    let pull_s = started.elapsed().as_secs_f64();
    peak_rss = peak_rss.max(rss_bytes(process.pid()));
    process.terminate(Duration::from_secs(10)).await;

    let report = json!({
        "bench": "pull",
        "image_bytes": image_bytes,
        "mbps": args.mbps,
        "link_limit_s": round(link_limit_s),
        "pull_s": round(pull_s),
        "ratio": round(pull_s / link_limit_s),
        "atelet_peak_rss_bytes": peak_rss,
        "registry_bytes_served": link.bytes_served() - served_before,
        "concurrent": args.concurrent,
        "drop_every_mb": args.drop_every_mb,
        "ignore_range": args.ignore_range,
        "kill_atelet_at": args.kill_atelet_at,
    });
    println!("{report}");
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Large scratch space for images and stores, in the cache rather than a small `/tmp`.
fn bench_dir() -> anyhow::Result<PathBuf> {
    let dir = cache_root().join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Builds atelet in release mode with the same cargo, and returns its path.
fn build_atelet() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building atelet (release)");
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "atelet", "--bin", "atelet"])
        .current_dir(&workspace)
        .status()?;
    anyhow::ensure!(status.success(), "cargo build -p atelet failed");
    let bench = std::env::current_exe()?;
    let atelet = bench.parent().map(|dir| dir.join("atelet")).unwrap_or_default();
    anyhow::ensure!(atelet.is_file(), "atelet not found beside {}", bench.display());
    Ok(atelet)
}

async fn push_padding_image(
    registry: std::net::SocketAddr,
    bytes: u64,
    work: &Path,
) -> anyhow::Result<PushedImage> {
    let spec = ImageSpec {
        repository: "bench/padding".into(),
        tag: "latest".into(),
        layers: image::padding_layers(bytes)
            .into_iter()
            .map(|bytes| LayerSpec::Padding { bytes, compression: LayerCompression::Gzip })
            .collect(),
        seed: bytes,
    };
    Ok(image::push(registry, &spec, work).await?)
}

/// Downloads every blob of the image through the link, one after the other, discarding the
/// bytes: the time the link itself needs. Returns seconds.
async fn plain_download(link: &Link, image: &PushedImage) -> anyhow::Result<f64> {
    let client = e2e::http::client().build()?;
    let repository = image
        .reference
        .split_once('/')
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(repo, _)| repo.to_owned())
        .ok_or_else(|| anyhow::anyhow!("unexpected reference {}", image.reference))?;
    let started = Instant::now();
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let url = format!("http://{}/v2/{repository}/blobs/{}", link.addr(), blob.digest);
        let mut response = client.get(&url).send().await?.error_for_status()?;
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await? {
            received += chunk.len() as u64;
        }
        anyhow::ensure!(received == blob.size, "{url}: {received} of {} bytes", blob.size);
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn start_atelet(
    exe: &Path,
    state: &Path,
    link: &Link,
) -> anyhow::Result<(Component, AteletClient<tonic::transport::Channel>)> {
    let grpc_port = e2e::port::free()?;
    let args = [
        "serve".to_owned(),
        format!("--state-dir={}", state.display()),
        format!("--grpc-addr=127.0.0.1:{grpc_port}"),
        format!("--insecure-registry={}", link.addr()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = Component::start(exe, &args).await;
    let client = AteletClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
    Ok((process, client))
}

/// Resident memory of a process now, from `/proc/<pid>/status` (0 once it is gone).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:").or_else(|| line.strip_prefix("VmRSS:")))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
