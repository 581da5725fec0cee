//! Benchmarks that print their figures, each beside the physical limit measured in the same
//! run. The last line of each run is one JSON object.
//!
//! `bench pull --image-mb N --mbps M`: pushes an image of N MB of incompressible layers to a
//! local registry, measures the link limit (a plain download of the same bytes through the
//! same link), then pulls the image through a fresh atelet and compares.
//!
//! `bench seed --image-mb N --mbps M`: the whole story on a local cluster started for the run.
//! Pushes the same kind of image, measures the link limit the same way, then applies the
//! design's AgentHarness (image overridden) with atelet, ate-controller and harness-operator
//! running as processes, prints each condition change and progress line as it appears, and
//! reports the time to Ready against the link limit.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use e2e::{
    LocalCluster,
    component::Component,
    image::{self, ImageSpec, LayerCompression, LayerSpec, PushedImage},
    link::{Link, LinkConfig},
    process::Lifetime,
    story::{Story, StoryConfig},
    tools::{Tools, cache_root},
};
use proto::{
    AgentHarness,
    atelet::{GetOperationRequest, Phase, PullImageRequest, atelet_client::AteletClient},
    conditions,
};
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
    /// The whole story on a local cluster: apply an AgentHarness and wait until it is Ready.
    Seed(SeedArgs),
}

#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// Size of the image's layers, in MB (10^6 bytes).
    #[arg(long, default_value_t = 360)]
    image_mb: u64,
    /// The link's rate in Mbit/s.
    #[arg(long, default_value_t = 51.0)]
    mbps: f64,
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
        Bench::Seed(args) => seed(args).await,
    }
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("bench-pull-").tempdir_in(bench_dir()?)?;
    let atelet = build_binaries(&["atelet"])?.join("atelet");
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

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("bench-seed-").tempdir_in(bench_dir()?)?;
    build_binaries(&["atelet", "ate-controller", "harness-operator"])?;
    eprintln!("starting a local cluster");
    let cluster =
        LocalCluster::start(&work.path().join("cluster"), Lifetime::WithThisProcess).await?;

    eprintln!("pushing a {} MB image", args.image_mb);
    let image = push_padding_image(cluster.registry, args.image_mb * MB, work.path()).await?;
    let image_bytes = image.layer_bytes() + image.config.size;

    let link = LinkConfig { mbps: Some(args.mbps), ..LinkConfig::default() };
    let story =
        Story::start(&cluster, "seed", StoryConfig { link, ..StoryConfig::default() }).await;
    eprintln!(
        "measuring the link limit: a plain download of the same bytes at {} Mbit/s",
        args.mbps
    );
    let link_limit_s = plain_download(&story.link, &image).await?;
    let served_before = story.link.bytes_served();

    eprintln!("applying the AgentHarness");
    let started = Instant::now();
    story.apply_harness("seed", &image.reference_via(story.link.addr())).await;
    let mut timeline = Timeline::default();
    let mut peak_rss = 0;
    story
        .watch_harness(
            "seed",
            Duration::from_secs(3600),
            |harness| {
                timeline.observe(started.elapsed(), harness);
                peak_rss = peak_rss.max(story.atelet_pid().map_or(0, rss_bytes));
            },
            |harness| {
                harness.status.as_ref().is_some_and(|s| {
                    conditions::find(&s.conditions, conditions::types::READY)
                        .is_some_and(|c| c.status == "True")
                })
            },
        )
        .await;
    let time_to_ready_s = started.elapsed().as_secs_f64();
    peak_rss = peak_rss.max(story.atelet_pid().map_or(0, rss_bytes));

    let report = json!({
        "bench": "seed",
        "image_bytes": image_bytes,
        "mbps": args.mbps,
        "link_limit_s": round(link_limit_s),
        "time_to_ready_s": round(time_to_ready_s),
        "ratio": round(time_to_ready_s / link_limit_s),
        "first_progress_s": timeline.first_progress.map(|at| round(at.as_secs_f64())),
        "progress_updates": timeline.progress.len(),
        "atelet_peak_rss_bytes": peak_rss,
        "registry_bytes_served": story.link.bytes_served() - served_before,
    });
    println!("{report}");
    Ok(())
}

/// What a person watching the harness saw: each condition change as it happened, when a
/// progress percentage first appeared, and every distinct progress line.
#[derive(Default)]
struct Timeline {
    conditions: BTreeMap<String, (String, String)>,
    first_progress: Option<Duration>,
    progress: BTreeSet<String>,
}

impl Timeline {
    /// Records what is new in `harness`, printing condition changes with their time.
    fn observe(&mut self, at: Duration, harness: &AgentHarness) {
        let Some(status) = &harness.status else { return };
        for condition in &status.conditions {
            let now = (condition.status.clone(), condition.reason.clone());
            if self.conditions.get(&condition.type_) != Some(&now) {
                println!(
                    "{:>8.1}s  {}={} {}: {}",
                    at.as_secs_f64(),
                    condition.type_,
                    condition.status,
                    condition.reason,
                    condition.message
                );
                self.conditions.insert(condition.type_.clone(), now);
            }
        }
        if let Some(progress) = &status.progress
            && progress.summary.contains('%')
        {
            self.first_progress.get_or_insert(at);
            if self.progress.insert(progress.summary.clone()) {
                println!("{:>8.1}s  progress: {}", at.as_secs_f64(), progress.summary);
            }
        }
    }
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

/// Builds `binaries` of this workspace in release mode with the same cargo, and returns the
/// directory they are in (beside this benchmark).
fn build_binaries(binaries: &[&str]) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building {} (release)", binaries.join(", "));
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "-q"]).current_dir(&workspace);
    for binary in binaries {
        command.args(["-p", binary, "--bin", binary]);
    }
    anyhow::ensure!(command.status()?.success(), "cargo build of {binaries:?} failed");
    let bench = std::env::current_exe()?;
    let dir = bench.parent().map(Path::to_path_buf).unwrap_or_default();
    for binary in binaries {
        anyhow::ensure!(
            dir.join(binary).is_file(),
            "{binary} not found beside {}",
            bench.display()
        );
    }
    Ok(dir)
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
