//! harness-operator: turns AgentHarnesses into ActorTemplates and Actors. Serves its admin
//! endpoint; the reconciler arrives with the issue that builds it.

use clap::Parser;
use prometheus_client::registry::Registry;

/// The substrate-rs operator of AgentHarnesses.
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

    proto::admin::run("harness-operator", &args.admin, Registry::default()).await
}
