//! ui-proxy: the HTTP front door to harness gateways. Serves its admin endpoint; the
//! proxy and status page arrive with the issue that builds them.

use clap::Parser;
use prometheus_client::registry::Registry;

/// The substrate-rs gateway proxy and status page.
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

    proto::admin::run("ui-proxy", &args.admin, Registry::default()).await
}
