//! The end-to-end harness: a real Kubernetes control plane, OCI registry and S3 server on one
//! machine, started by `cargo run -p e2e -- up` for people and by [`cluster::shared`] for
//! tests, so that both run the same code.

pub mod cluster;
pub mod component;
pub mod control_plane;
pub mod http;
pub mod pki;
pub mod port;
pub mod process;
pub mod readiness;
pub mod registry;
pub mod s3;
pub mod story;
pub mod tools;

pub use cluster::{ClusterError, LocalCluster};
pub mod image;
pub mod link;
