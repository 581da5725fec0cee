//! The one shared contract of substrate-rs.
//!
//! Every binary depends on this crate and nothing else is shared between them:
//!
//! - the Kubernetes API types ([`AgentHarness`], [`ModelConfig`], [`ActorTemplate`],
//!   [`WorkerPool`], [`Actor`]) and the CRDs generated from them ([`crds`]);
//! - status [`conditions`]: their types, reasons and the rules for updating them;
//! - the gRPC API of the node agent ([`atelet`]), shaped as long-running operations;
//! - the plumbing each binary serves the same way: [`admin`] (`/healthz`, `/metrics`),
//!   [`logging`] and [`shutdown`].

pub mod actor;
pub mod actor_template;
pub mod admin;
pub mod agent_harness;
pub mod conditions;
pub mod crds;
pub mod lease;
pub mod logging;
pub mod model_config;
pub mod progress;
pub mod reference;
pub mod shutdown;
pub mod worker_pool;

/// atelet's gRPC API: operations, their metadata, and the client and server for it.
#[allow(missing_docs, clippy::all)]
pub mod atelet {
    tonic::include_proto!("atelet.v1");
}

pub use actor::{Actor, ActorSpec, ActorStatus};
pub use actor_template::{ActorTemplate, ActorTemplateSpec, ActorTemplateStatus};
pub use agent_harness::{AgentHarness, AgentHarnessSpec, AgentHarnessStatus};
pub use model_config::{ModelConfig, ModelConfigSpec};
pub use worker_pool::{WorkerPool, WorkerPoolSpec, WorkerPoolStatus};
