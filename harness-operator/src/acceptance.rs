//! Whether a harness can be built: the objects it refers to exist.
//!
//! A missing reference is not an error of the operator: it is a fact about the cluster,
//! reported in the `Accepted` condition with what to create or fix, and checked again later
//! because the object may yet appear.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, Resource};
use proto::{
    AgentHarnessSpec, ModelConfig, WorkerPool, agent_harness::SubstrateSpec, conditions::reasons,
    reference::SecretKeyRef,
};
use serde::de::DeserializeOwned;

use crate::harness::HarnessRef;

/// What the harness refers to, once every reference resolves.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The harness's `spec.substrate`.
    pub substrate: SubstrateSpec,
    /// The ModelConfig named by `spec.modelConfigRef`.
    pub model: ModelConfig,
}

/// Why a harness is not accepted, as the `Accepted` condition says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// One of [`reasons`]: `ModelConfigNotFound`, `WorkerPoolNotFound`, `SecretNotFound`, or
    /// `Failed` for a spec the API server should have refused.
    pub reason: &'static str,
    /// What is missing and what to do about it; names objects, never secret values.
    pub message: String,
}

/// The verdict on a harness's references.
#[derive(Clone, Debug)]
pub enum Acceptance {
    /// Every reference resolves.
    Accepted(Box<Resolved>),
    /// The first reference that does not.
    Rejected(Rejection),
}

/// A reference could not be looked up, for a reason other than its absence.
#[derive(Debug, thiserror::Error)]
#[error("reading {kind} {object}: {source}")]
pub struct LookupError {
    /// The kind looked up, e.g. `ModelConfig`.
    pub kind: String,
    /// `namespace/name` of the object.
    pub object: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Checks, in order, the ModelConfig, the WorkerPool, the gateway token's Secret and the
/// ModelConfig's API key Secret of a harness, and returns the first that is missing.
///
/// # Errors
///
/// [`LookupError`] when the API server fails to answer (not when it answers "not found").
pub async fn check(
    client: &Client,
    id: &HarnessRef,
    spec: &AgentHarnessSpec,
) -> Result<Acceptance, LookupError> {
    let rejected = |reason, message| Ok(Acceptance::Rejected(Rejection { reason, message }));

    // The API server's validation makes these two impossible; say so rather than panic.
    let Some(substrate) = &spec.substrate else {
        return rejected(
            reasons::FAILED,
            "spec.substrate is required when spec.runtime is substrate; add it with a \
             workerPoolRef and a gateway token"
                .to_owned(),
        );
    };
    if substrate.gateway_token.is_some() == substrate.gateway_token_secret_ref.is_some() {
        return rejected(
            reasons::FAILED,
            "set exactly one of spec.substrate.gatewayToken or \
             spec.substrate.gatewayTokenSecretRef"
                .to_owned(),
        );
    }

    let Some(model) = lookup::<ModelConfig>(client, id, &spec.model_config_ref).await? else {
        return rejected(
            reasons::MODEL_CONFIG_NOT_FOUND,
            format!(
                "ModelConfig {} not found; create it or fix spec.modelConfigRef",
                id.sibling(&spec.model_config_ref)
            ),
        );
    };

    let pool = &substrate.worker_pool_ref.name;
    if lookup::<WorkerPool>(client, id, pool).await?.is_none() {
        return rejected(
            reasons::WORKER_POOL_NOT_FOUND,
            format!(
                "WorkerPool {} not found; create it or fix spec.substrate.workerPoolRef",
                id.sibling(pool)
            ),
        );
    }

    if let Some(token) = &substrate.gateway_token_secret_ref {
        let field = "spec.substrate.gatewayTokenSecretRef";
        if let Some(message) = missing_secret_key(client, id, token, field).await? {
            return rejected(reasons::SECRET_NOT_FOUND, message);
        }
    }

    if let Some(api_key) = &model.spec.api_key_secret_ref {
        let field =
            format!("spec.apiKeySecretRef of ModelConfig {}", id.sibling(&spec.model_config_ref));
        if let Some(message) = missing_secret_key(client, id, api_key, &field).await? {
            return rejected(reasons::SECRET_NOT_FOUND, message);
        }
    }

    Ok(Acceptance::Accepted(Box::new(Resolved { substrate: substrate.clone(), model })))
}

/// Says what is missing when the Secret or its key is, naming the field that refers to it.
async fn missing_secret_key(
    client: &Client,
    id: &HarnessRef,
    reference: &SecretKeyRef,
    field: &str,
) -> Result<Option<String>, LookupError> {
    let object = id.sibling(&reference.name);
    let Some(secret) = lookup::<Secret>(client, id, &reference.name).await? else {
        return Ok(Some(format!("Secret {object} not found; create it or fix {field}")));
    };
    let has_key = secret.data.as_ref().is_some_and(|data| data.contains_key(&reference.key))
        || secret.string_data.as_ref().is_some_and(|data| data.contains_key(&reference.key));
    Ok((!has_key).then(|| {
        format!("Secret {object} has no key {:?}; add it or fix the key in {field}", reference.key)
    }))
}

/// Gets an object of the harness's namespace, `None` when it does not exist.
async fn lookup<K>(client: &Client, id: &HarnessRef, name: &str) -> Result<Option<K>, LookupError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &id.namespace);
    api.get_opt(name).await.map_err(|source| LookupError {
        kind: K::kind(&()).into_owned(),
        object: id.sibling(name),
        source,
    })
}
