//! References from one object to another, shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names a key of a Secret in the referring object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Names a WorkerPool in the referring object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerPoolRef {
    /// Name of the WorkerPool whose nodes may run the sandboxes.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Names an object of a known kind in the referring object's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Names a long-running operation on a node, so a restarted controller polls the same one
/// instead of starting another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OperationRef {
    /// The operation's name on its node, e.g. `operations/prepare-golden-7f3a…`.
    pub name: String,
    /// The node whose atelet runs the operation.
    pub node: String,
}
