//! Finding live atelets: each keeps a Lease in the control-plane namespace; one whose Lease
//! has expired is gone.

use std::collections::BTreeMap;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{Api, Client, api::ListParams};
use proto::lease::{ATELET_LABEL, ENDPOINT_ANNOTATION, NODE_LABEL_PREFIX};

/// An atelet with a live Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name, as the atelet reports it.
    pub name: String,
    /// `host:port` of its operations API.
    pub endpoint: String,
    /// The node's labels, for WorkerPool selectors.
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// Whether every `key=value` of `selector` is among the node's labels.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(key, value)| self.labels.get(key) == Some(value))
    }
}

/// Lists the atelets whose Lease in `namespace` has not expired, sorted by name.
///
/// # Errors
///
/// When the API server refuses the list.
pub async fn live(client: &Client, namespace: &str) -> Result<Vec<Node>, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let listed =
        leases.list(&ListParams::default().labels(&format!("{ATELET_LABEL}=true"))).await?;
    let now = Timestamp::now();
    let mut nodes: Vec<Node> = listed.items.iter().filter_map(|lease| node(lease, now)).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

fn node(lease: &Lease, now: Timestamp) -> Option<Node> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    if renewed.as_second() + duration < now.as_second() {
        return None;
    }
    let endpoint = lease.metadata.annotations.as_ref()?.get(ENDPOINT_ANNOTATION)?.clone();
    let labels = lease
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(key, value)| {
            Some((key.strip_prefix(NODE_LABEL_PREFIX)?.to_owned(), value.clone()))
        })
        .collect();
    Some(Node { name: spec.holder_identity.clone()?, endpoint, labels })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use serde_json::json;

    use super::*;

    fn lease(renewed_seconds_ago: i64) -> Lease {
        let renewed =
            Timestamp::from_second(Timestamp::now().as_second() - renewed_seconds_ago).unwrap();
        serde_json::from_value(json!({
            "metadata": {
                "name": "atelet-node-a",
                "labels": {ATELET_LABEL: "true", "node.ate.dev/pool": "gpu"},
                "annotations": {ENDPOINT_ANNOTATION: "10.0.0.7:7070"},
            },
            "spec": {
                "holderIdentity": "node-a",
                "leaseDurationSeconds": 15,
                "renewTime": MicroTime(renewed),
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_renewed_lease_names_a_live_node_with_its_labels() {
        let node = node(&lease(3), Timestamp::now()).expect("live");

        assert_eq!(node.name, "node-a");
        assert_eq!(node.endpoint, "10.0.0.7:7070");
        assert!(node.matches(&BTreeMap::from([("pool".to_owned(), "gpu".to_owned())])));
        assert!(!node.matches(&BTreeMap::from([("pool".to_owned(), "cpu".to_owned())])));
        assert!(node.matches(&BTreeMap::new()));
    }

    #[test]
    fn an_expired_lease_is_a_gone_node() {
        assert_eq!(node(&lease(60), Timestamp::now()), None);
    }
}
