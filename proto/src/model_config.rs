//! `kagent.dev/v1alpha2 ModelConfig`: which language model an agent talks to.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::reference::SecretKeyRef;

/// The model an agent uses, and the credentials to reach it.
///
/// Harnesses refer to it by name through `spec.modelConfigRef`. The API key stays in its
/// Secret: the sandbox receives it as an environment reference, never in clear in any spec.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kagent.dev",
    version = "v1alpha2",
    kind = "ModelConfig",
    doc = "A language model an agent talks to, and the Secret holding its API key.",
    plural = "modelconfigs",
    namespaced,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfigSpec {
    /// The model provider as the agent names it, e.g. `anthropic` or `openai`. The agent is
    /// configured with the model `<provider>/<model>`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9._-]*$')")
        .message("must be lowercase letters, digits, '.', '_' or '-', e.g. anthropic"))]
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// The provider's model name, e.g. `claude-sonnet-4-5`.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// The Secret key holding the provider's API key. Omit for providers without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// The provider's API base URL, when not the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')")
        .message("must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,
}
