//! atelet: the node agent. Serves its admin endpoint; the operations API, content store and
//! sandboxes arrive with the issues that build them.

use clap::Parser;
use prometheus_client::registry::Registry;

/// The substrate-rs node agent: pulls images, runs gVisor sandboxes, moves snapshots.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    admin: proto::admin::AdminArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    proto::logging::init(args.admin.log_format);

    proto::admin::run("atelet", &args.admin, Registry::default()).await
}
