//! Announcing this atelet to the control plane through a renewed Lease.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use proto::lease::{ATELET_LABEL, ENDPOINT_ANNOTATION, NODE_LABEL_PREFIX, lease_name};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What the Lease says about this atelet.
#[derive(Clone, Debug)]
pub struct Announcement {
    /// Namespace of the control plane, where atelet Leases live.
    pub namespace: String,
    /// This node's name.
    pub node: String,
    /// Where this atelet's operations API is reached, `host:port`.
    pub endpoint: String,
    /// The node's labels, which WorkerPools select on.
    pub labels: BTreeMap<String, String>,
    /// How long the Lease stays valid without renewal.
    pub duration: Duration,
}

impl Announcement {
    fn lease(&self) -> serde_json::Value {
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .map(|(key, value)| (format!("{NODE_LABEL_PREFIX}{key}"), value.clone()))
            .collect();
        labels.insert(ATELET_LABEL.to_owned(), "true".to_owned());
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(&self.node),
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {ENDPOINT_ANNOTATION: self.endpoint},
            },
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": self.duration.as_secs(),
                "renewTime": MicroTime(Timestamp::now()),
            },
        })
    }
}

/// Renews the Lease every third of its duration until `shutdown`, then deletes it so the
/// controller stops sending work at once. Failed renewals are logged and retried; the Lease
/// expires by itself if this atelet stops renewing it.
pub async fn keep(client: Client, announcement: Announcement, shutdown: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client, &announcement.namespace);
    let name = lease_name(&announcement.node);
    let params = PatchParams::apply("atelet").force();
    let mut ticker = tokio::time::interval(announcement.duration / 3);
    let mut renewed_once = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        match leases.patch(&name, &params, &Patch::Apply(announcement.lease())).await {
            Ok(_) if !renewed_once => {
                tracing::info!(lease = %name, endpoint = %announcement.endpoint, "announced this atelet");
                renewed_once = true;
            }
            Ok(_) => tracing::debug!(lease = %name, "renewed"),
            Err(error) => {
                tracing::warn!(lease = %name, %error, "renewing the lease failed; retrying")
            }
        }
    }
    if let Err(error) = leases.delete(&name, &DeleteParams::default()).await {
        tracing::warn!(lease = %name, %error, "could not delete the lease; it will expire");
    }
}
