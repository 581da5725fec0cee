//! atelet: the node agent. `atelet serve` runs the operations API; `atelet pull` runs one pull
//! in the foreground, through the same code, for people debugging a node.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use atelet::{
    lease::{self, Announcement},
    operations::Operations,
    pull::{PullProgress, Puller},
    registry::{Registry, RegistryConfig},
    rootfs,
    service::Service,
    store::Store,
};
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry as Metrics;
use tokio_util::sync::CancellationToken;

/// The substrate-rs node agent: pulls images, runs gVisor sandboxes, moves snapshots.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the operations API until SIGTERM.
    Serve(ServeArgs),
    /// Pull one image in the foreground, with a progress bar, and exit.
    Pull(PullArgs),
}

/// Where the node keeps its state and how it reaches registries.
#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// Directory for the content store, operation records and root filesystems.
    #[arg(long, env = "ATELET_STATE_DIR", default_value = "/var/lib/atelet")]
    state_dir: PathBuf,
    /// A registry (host:port) reached over plain HTTP instead of HTTPS. Repeat for several.
    #[arg(long, env = "ATELET_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// A docker config JSON file with registry credentials (a mounted dockerconfigjson Secret).
    #[arg(long, env = "ATELET_REGISTRY_CREDENTIALS")]
    registry_credentials: Option<PathBuf>,
    /// How many blob downloads run at once on the node.
    #[arg(long, env = "ATELET_PARALLEL_DOWNLOADS", default_value_t = 4)]
    parallel_downloads: usize,
    /// Seconds without a byte from the registry after which a download is retried.
    #[arg(long, env = "ATELET_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    read_timeout_seconds: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Address of the gRPC operations API.
    #[arg(long, env = "ATELET_GRPC_ADDR", default_value = "127.0.0.1:7070")]
    grpc_addr: SocketAddr,
    /// The name this node reports in operations and its Lease.
    #[arg(long, env = "NODE_NAME", default_value = "local")]
    node_name: String,
    /// Announce this atelet with a Lease in this namespace (the control plane's); without it,
    /// no Lease is kept and controllers cannot find this node.
    #[arg(long, env = "ATELET_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// The gRPC endpoint (host:port) written in the Lease; defaults to the bound --grpc-addr.
    #[arg(long, env = "ATELET_ADVERTISE_ENDPOINT")]
    advertise_endpoint: Option<String>,
    /// Node labels written in the Lease, for WorkerPool selectors: k=v,k2=v2.
    #[arg(long, env = "ATELET_NODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    #[command(flatten)]
    admin: proto::admin::AdminArgs,
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The image, pinned by digest: repository@sha256:<hex>.
    reference: String,
    /// Also unpack the image into this directory (which must not exist yet).
    #[arg(long)]
    rootfs: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // oci-client's TLS uses rustls; pick the same provider as the kube client.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match args.command {
        Command::Serve(serve_args) => {
            proto::logging::init(serve_args.admin.log_format);
            serve(serve_args).await
        }
        Command::Pull(pull_args) => {
            proto::logging::init(proto::logging::LogFormat::Text);
            pull(pull_args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn puller(node: &NodeArgs) -> anyhow::Result<Puller> {
    let mut config = RegistryConfig {
        insecure: node.insecure_registry.clone(),
        read_timeout: Duration::from_secs(node.read_timeout_seconds),
        ..RegistryConfig::default()
    };
    if let Some(path) = &node.registry_credentials {
        config.load_credentials(path)?;
    }
    let store = Store::open(&node.state_dir.join("content")).await?;
    Ok(Puller::new(store, Registry::new(config), node.parallel_downloads))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let puller = Arc::new(puller(&args.node).await?);
    let operations = Operations::open(&args.node.state_dir, &args.node_name, puller).await?;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --grpc-addr {}: {e}", args.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    tracing::info!(addr = %grpc_addr, node = %args.node_name, "serving the operations API");
    let grpc = tonic::transport::Server::builder()
        .add_service(proto::atelet::atelet_server::AteletServer::new(Service::new(operations)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.clone().cancelled_owned(),
        );

    let admin_listener = tokio::net::TcpListener::bind(args.admin.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --admin-addr {}: {e}", args.admin.admin_addr))?;
    let admin = proto::admin::serve(
        admin_listener,
        "atelet",
        Metrics::default(),
        shutdown.clone().cancelled_owned(),
    );

    let announce = async {
        let Some(namespace) = args.lease_namespace.clone() else { return Ok(()) };
        let announcement = Announcement {
            namespace,
            node: args.node_name.clone(),
            endpoint: args.advertise_endpoint.clone().unwrap_or_else(|| grpc_addr.to_string()),
            labels: args.node_labels.iter().cloned().collect(),
            duration: Duration::from_secs(15),
        };
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                // Without a Lease no controller finds this node: stop rather than idle.
                shutdown.cancel();
                return Err(anyhow::anyhow!("connecting to the API server for the Lease: {error}"));
            }
        };
        lease::keep(client, announcement, shutdown.clone()).await;
        Ok(())
    };
    let signal = async {
        proto::shutdown::signal().await;
        shutdown.cancel();
    };
    let (grpc, admin, announced, ()) = tokio::join!(grpc, admin, announce, signal);
    announced?;
    grpc?;
    admin?;
    tracing::info!("stopped");
    Ok(())
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let puller = puller(&args.node).await?;
    let progress = Arc::new(PullProgress::default());
    let cancel = CancellationToken::new();
    let bar = progress_bar(Arc::clone(&progress));

    let pulled = tokio::select! {
        pulled = puller.pull(&args.reference, &progress, &cancel) => pulled,
        () = proto::shutdown::signal() => {
            cancel.cancel();
            anyhow::bail!("interrupted; the bytes downloaded so far are kept for the next pull");
        }
    };
    bar.abort();
    let image = pulled?;
    eprintln!(
        "pulled {} ({} bytes, manifest {})",
        args.reference,
        image.total_bytes(),
        image.manifest_digest
    );

    if let Some(target) = &args.rootfs {
        unpack_into(puller.store(), &image, target).await?;
    }
    Ok(())
}

async fn unpack_into(
    store: &Store,
    image: &atelet::registry::ResolvedImage,
    target: &Path,
) -> anyhow::Result<()> {
    if target.exists() {
        anyhow::bail!(
            "--rootfs {} exists; give a directory that does not exist yet",
            target.display()
        );
    }
    rootfs::unpack_image(store, image, target).await?;
    eprintln!("unpacked into {}", target.display());
    Ok(())
}

/// Parses one `key=value` node label.
fn parse_label(label: &str) -> Result<(String, String), String> {
    label
        .split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{label:?} is not key=value"))
}

/// Draws bytes, rate and ETA on a terminal; logs a line every few seconds elsewhere.
fn progress_bar(progress: Arc<PullProgress>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(0);
        if std::io::stderr().is_terminal() {
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("a valid template"),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let mut ticks = 0u64;
        loop {
            ticker.tick().await;
            ticks += 1;
            let (done, total) =
                (progress.done.load(Ordering::Relaxed), progress.total.load(Ordering::Relaxed));
            bar.set_length(total);
            bar.set_position(done);
            if bar.is_hidden() && ticks.is_multiple_of(25) && total > 0 {
                tracing::info!(done, total, "pulling");
            }
        }
    })
    .abort_handle()
}
