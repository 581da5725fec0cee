//! harness-operator: turns AgentHarnesses into ActorTemplates and Actors, and serves its admin
//! endpoint beside the controller until SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use harness_operator::{Config, Metrics};
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

/// The substrate-rs operator of AgentHarnesses: creates each harness's ActorTemplate and
/// Actor, and mirrors their progress into its conditions.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    admin: proto::admin::AdminArgs,

    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    proto::logging::init(args.admin.log_format);

    // KUBECONFIG, else ~/.kube/config, else the pod's service account.
    let config = kube::Config::infer()
        .await
        .context("finding the API server: set KUBECONFIG, or run in a pod")?;
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let listener = TcpListener::bind(args.admin.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.admin.admin_addr))?;

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    // One signal stops both the controller and the admin endpoint.
    let (stop, stopped) = watch::channel(());
    tokio::spawn(async move {
        proto::shutdown::signal().await;
        let _ = stop.send(());
    });
    let on_stop = |mut stopped: watch::Receiver<()>| async move {
        let _ = stopped.changed().await;
    };

    let controller = harness_operator::run(client, args.config, metrics, on_stop(stopped.clone()));
    let admin = proto::admin::serve(listener, "harness-operator", registry, on_stop(stopped));
    let ((), served) = tokio::join!(controller, admin);
    served.context("serving the admin endpoint")?;
    tracing::info!("stopped");
    Ok(())
}
