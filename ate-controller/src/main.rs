//! ate-controller: drives templates and actors through long-running operations on atelets.
//! Serves its admin endpoint; the reconcilers arrive with the issue that builds them.

use clap::Parser;
use prometheus_client::registry::Registry;

/// The substrate-rs controller of ActorTemplates, Actors and WorkerPools.
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

    proto::admin::run("ate-controller", &args.admin, Registry::default()).await
}
