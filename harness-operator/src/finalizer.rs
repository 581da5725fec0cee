//! The finalizer that keeps a deleted harness until its Actor is gone.
//!
//! The ActorTemplate and the token Secret go by garbage collection through their owner
//! references; the Actor is deleted explicitly first, and waited for, because stopping a
//! sandbox takes a node's work and a person deleting a harness expects the sandbox to stop.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use proto::AgentHarness;
use serde_json::json;

/// The finalizer harness-operator puts on every harness it reconciles.
pub const FINALIZER: &str = "kagent.dev/harness-cleanup";

/// Whether the harness carries [`FINALIZER`].
pub fn is_present(harness: &AgentHarness) -> bool {
    harness.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds [`FINALIZER`] to the harness's finalizers.
///
/// The patch is conditional on the harness's `resourceVersion`, so that a finalizer another
/// controller added meanwhile is never overwritten: the patch fails with a conflict instead,
/// and the next reconcile sees both.
///
/// # Errors
///
/// The API error, including `409 Conflict` when the harness changed since it was read.
pub async fn add(api: &Api<AgentHarness>, harness: &AgentHarness) -> Result<(), kube::Error> {
    let mut finalizers = harness.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    write(api, harness, finalizers).await
}

/// Removes [`FINALIZER`] from the harness's finalizers, letting its deletion finish.
///
/// # Errors
///
/// As [`add`].
pub async fn remove(api: &Api<AgentHarness>, harness: &AgentHarness) -> Result<(), kube::Error> {
    let finalizers = harness.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    write(api, harness, finalizers).await
}

async fn write(
    api: &Api<AgentHarness>,
    harness: &AgentHarness,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": harness.resource_version(),
    }});
    api.patch(&harness.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}
