//! `ate.dev/v1alpha1 WorkerPool`: the nodes that may run a template's sandboxes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A set of atelet nodes, chosen by their labels, that run sandboxes for the templates that
/// refer to the pool.
#[derive(CustomResource, JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ate.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    doc = "The atelet nodes, selected by label, that run the sandboxes of templates naming the pool.",
    plural = "workerpools",
    namespaced,
    status = "WorkerPoolStatus",
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Labels an atelet must carry to belong to the pool. Empty selects every atelet.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

/// The atelets that belong to a pool now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many atelets of the pool hold a live lease.
    #[serde(default)]
    pub ready_nodes: u32,
    /// Names of those atelets' nodes.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// `Ready` once at least one atelet belongs to the pool.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
