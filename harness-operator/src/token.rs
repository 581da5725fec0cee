//! The gateway token: kept in a Secret, never written in clear into a template.
//!
//! A harness names its token either inline (`spec.substrate.gatewayToken`), in which case
//! harness-operator keeps it in an owned Secret `<name>-gateway-token`, or through
//! `spec.substrate.gatewayTokenSecretRef`. Either way the template's `GATEWAY_TOKEN` reads it
//! from a Secret key when the sandbox starts.
//!
//! The token is never logged, put into an event, a condition or an error message: nothing in
//! this module formats it.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use proto::{AgentHarness, agent_harness::SubstrateSpec, reference::SecretKeyRef};

use crate::harness::{HarnessRef, child_metadata};

/// The key of the owned Secret that holds an inline token.
pub const TOKEN_KEY: &str = "token";

/// The Secret key the template's `GATEWAY_TOKEN` reads: the user's Secret when the harness
/// names one, else the owned Secret holding the inline token.
pub fn secret_key_ref(id: &HarnessRef, substrate: &SubstrateSpec) -> SecretKeyRef {
    match &substrate.gateway_token_secret_ref {
        Some(user_secret) => user_secret.clone(),
        None => SecretKeyRef { name: id.token_secret_name(), key: TOKEN_KEY.to_owned() },
    }
}

/// The owned Secret holding an inline `token`, labelled and owned like every child.
pub fn owned_secret(harness: &AgentHarness, id: &HarnessRef, token: &str) -> Secret {
    Secret {
        metadata: child_metadata(harness, id, id.token_secret_name()),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use proto::reference::WorkerPoolRef;

    use super::*;

    fn id() -> HarnessRef {
        HarnessRef { namespace: "kagent".into(), name: "claw".into() }
    }

    fn substrate(secret_ref: Option<SecretKeyRef>) -> SubstrateSpec {
        SubstrateSpec {
            gateway_token: secret_ref.is_none().then(|| "inline".to_owned()),
            gateway_token_secret_ref: secret_ref,
            worker_pool_ref: WorkerPoolRef { name: "pool".into() },
            workload_image: None,
        }
    }

    #[test]
    fn an_inline_token_is_read_from_the_owned_secret() {
        let reference = secret_key_ref(&id(), &substrate(None));

        assert_eq!(
            reference,
            SecretKeyRef { name: "claw-gateway-token".into(), key: "token".into() }
        );
    }

    #[test]
    fn a_user_secret_is_read_where_the_harness_points() {
        let user = SecretKeyRef { name: "mine".into(), key: "gw".into() };

        assert_eq!(secret_key_ref(&id(), &substrate(Some(user.clone()))), user);
    }

    #[test]
    fn the_owned_secret_holds_the_token_under_its_key_with_the_children_labels() {
        let harness = AgentHarness::new(
            "claw",
            serde_json::from_value(serde_json::json!({
                "backend": "openclaw", "modelConfigRef": "m", "runtime": "substrate",
            }))
            .unwrap(),
        );

        let secret = owned_secret(&harness, &id(), "s3cr3t");

        assert_eq!(secret.metadata.name.as_deref(), Some("claw-gateway-token"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kagent"));
        assert_eq!(secret.metadata.labels.unwrap()["kagent.dev/harness"], "claw");
        assert_eq!(secret.data.unwrap()["token"].0, b"s3cr3t");
    }
}
