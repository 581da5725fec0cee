//! The harness being reconciled: its reference, and the names, labels and owner reference its
//! children carry.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use proto::AgentHarness;

/// The field manager of every server-side apply, and the `managed-by` label's value.
pub const MANAGER: &str = "harness-operator";

/// The label naming the harness a child belongs to.
pub const HARNESS_LABEL: &str = "kagent.dev/harness";

/// The standard label naming the controller that manages a child.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The label selector matching every child harness-operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER}")
}

/// A harness's namespace and name, e.g. `kagent/peterj-claw` when displayed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HarnessRef {
    /// The namespace of the harness and of all its children.
    pub namespace: String,
    /// The harness's name, also the name of its ActorTemplate and Actor.
    pub name: String,
}

impl HarnessRef {
    /// The reference of `harness`, or `None` for an object without a namespace, which the API
    /// server never returns for a namespaced kind.
    pub fn of(harness: &AgentHarness) -> Option<HarnessRef> {
        Some(HarnessRef { namespace: harness.namespace()?, name: harness.name_any() })
    }

    /// The name of the owned Secret holding an inline gateway token.
    pub fn token_secret_name(&self) -> String {
        format!("{}-gateway-token", self.name)
    }

    /// The labels of every child: which harness it belongs to and who manages it.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (HARNESS_LABEL.to_owned(), self.name.clone()),
            (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
        ])
    }

    /// `namespace/name` of another object in the harness's namespace, for messages.
    pub fn sibling(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }
}

impl fmt::Display for HarnessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The metadata of a child named `name`: the harness's namespace, the children's labels, and
/// an owner reference to the harness with `controller` and `blockOwnerDeletion` set, so that
/// the garbage collector removes the child after the harness.
pub fn child_metadata(harness: &AgentHarness, id: &HarnessRef, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(id.namespace.clone()),
        labels: Some(id.labels()),
        owner_references: harness
            .controller_owner_ref(&())
            .map(|owner| vec![OwnerReference { block_owner_deletion: Some(true), ..owner }]),
        ..ObjectMeta::default()
    }
}

/// Whether `child` names `harness` as its controlling owner.
pub fn is_owned_by(child: &impl Resource, harness: &AgentHarness) -> bool {
    let Some(uid) = harness.meta().uid.as_deref() else { return false };
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}
