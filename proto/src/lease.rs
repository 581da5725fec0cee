//! How atelets announce themselves: each keeps a `coordination.k8s.io/v1` Lease in the
//! control-plane namespace, renewed on an interval. ate-controller treats an atelet whose Lease
//! has expired as gone.

/// Label every atelet Lease carries, so controllers list only those.
pub const ATELET_LABEL: &str = "ate.dev/atelet";

/// Annotation holding the atelet's gRPC endpoint, `host:port`.
pub const ENDPOINT_ANNOTATION: &str = "ate.dev/grpc-endpoint";

/// Prefix of the labels an atelet's Lease copies from its node labels, for WorkerPool
/// selectors: the node label `k=v` appears on the Lease as `node.ate.dev/k=v`.
pub const NODE_LABEL_PREFIX: &str = "node.ate.dev/";

/// The name of the Lease of the atelet on `node`.
pub fn lease_name(node: &str) -> String {
    format!("atelet-{node}")
}
