//! ate-controller: drives templates and actors through long-running operations on atelets.

use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The substrate-rs controller of ActorTemplates, Actors and WorkerPools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The control plane's namespace, where atelets keep their Leases.
    #[arg(long, env = "ATE_NAMESPACE", default_value = "ate-system")]
    namespace: String,
    /// Seconds without progress after which an operation is cancelled and started again.
    #[arg(long, env = "ATE_STALL_WINDOW_SECONDS", default_value_t = 300)]
    stall_window_seconds: u64,
    /// How many objects are reconciled at once.
    #[arg(long, env = "ATE_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Only reconcile objects in this namespace (default: all namespaces).
    #[arg(long, env = "ATE_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    #[command(flatten)]
    admin: proto::admin::AdminArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    proto::logging::init(args.admin.log_format);

    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("connecting to the API server (KUBECONFIG or in-cluster): {e}")
    })?;
    let config = ate_controller::Config {
        namespace: args.namespace,
        stall_window: Duration::from_secs(args.stall_window_seconds),
        concurrency: args.concurrency,
        watch_namespace: args.watch_namespace,
    };

    let metrics = ate_controller::Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let shutdown = CancellationToken::new();
    let admin_listener = tokio::net::TcpListener::bind(args.admin.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --admin-addr {}: {e}", args.admin.admin_addr))?;
    let admin = proto::admin::serve(
        admin_listener,
        "ate-controller",
        registry,
        shutdown.clone().cancelled_owned(),
    );
    let controller = ate_controller::run(client, config, metrics, shutdown.clone());
    let signal = async {
        proto::shutdown::signal().await;
        shutdown.cancel();
    };
    let (admin, (), ()) = tokio::join!(admin, controller, signal);
    admin?;
    tracing::info!("stopped");
    Ok(())
}
