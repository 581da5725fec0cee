//! The `openclaw` backend: its default image, how its gateway is started and configured.
//!
//! These are facts about the real product, so that a harness applied without overrides asks
//! for the right thing. The gateway reads its configuration from
//! `$HOME/.openclaw/openclaw.json`, substitutes `${VAR}` references to environment variables
//! when it loads it, and serves HTTP and WebSocket on one port.

use proto::ModelConfig;
use serde_json::{Value, json};

/// The image of the openclaw backend, used unless the harness or the operator names another.
pub const DEFAULT_IMAGE: &str = "ghcr.io/kagent-dev/nemoclaw/sandbox-base@sha256:d52bee415dc4c0dba7164f9eabe727574c056d4f211781f20af249707883a3b4";

/// The path of the gateway's readiness check, for the default image and for overrides alike.
///
/// `/healthz` is the gateway's unauthenticated liveness endpoint and answers remote callers;
/// `/` moves with the Control UI's base path, and `/readyz` refuses unauthenticated remote
/// callers in some releases. A replacement image must answer 2xx on it once it serves.
pub const READYZ_PATH: &str = "/healthz";

/// The variable holding the gateway token, read from a Secret when the sandbox starts.
pub const GATEWAY_TOKEN_ENV: &str = "GATEWAY_TOKEN";
/// The variable holding the port the gateway listens on.
pub const GATEWAY_PORT_ENV: &str = "GATEWAY_PORT";
/// The variable holding the gateway's JSON configuration, which holds no secret in clear.
pub const CONFIG_ENV: &str = "OPENCLAW_CONFIG";

/// The public path under which ui-proxy serves a harness's gateway; the Control UI's base path.
pub fn gateway_base_path(namespace: &str, name: &str) -> String {
    format!("/api/agentharnesses/{namespace}/{name}/gateway")
}

/// The variable that carries the API key of `provider`, e.g. `ANTHROPIC_API_KEY`.
///
/// The gateway substitutes only upper-case names of letters, digits and `_` that do not start
/// with a digit, so every other character becomes `_`.
pub fn api_key_env(provider: &str) -> String {
    let mut name: String = provider
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name + "_API_KEY"
}

/// The gateway's configuration for a harness: token auth with the token as a `${…}`
/// reference, the Control UI under the harness's public path, the ModelConfig's model, and
/// the provider's API key as a `${…}` reference.
///
/// The result holds no secret: it is safe to put in a template's spec.
// TODO: the Control UI refuses non-loopback binds without gateway.controlUi.allowedOrigins;
// the public origin of ui-proxy is not known here yet and needs a flag of its own.
pub fn gateway_config(namespace: &str, name: &str, port: u16, model: &ModelConfig) -> Value {
    let spec = &model.spec;
    let mut config = json!({
        "gateway": {
            "mode": "local",
            "port": port,
            "bind": "lan",
            "auth": {"mode": "token", "token": format!("${{{GATEWAY_TOKEN_ENV}}}")},
            "controlUi": {"basePath": gateway_base_path(namespace, name)},
        },
        "agents": {"defaults": {"model": {"primary": format!("{}/{}", spec.provider, spec.model)}}},
    });

    // TODO: the provider entry has not been checked against the strict schema of the pinned
    // image's release; a field it refuses stops the gateway at start.
    let mut provider = serde_json::Map::new();
    if spec.api_key_secret_ref.is_some() {
        provider.insert("apiKey".into(), format!("${{{}}}", api_key_env(&spec.provider)).into());
    }
    if let Some(base_url) = &spec.base_url {
        provider.insert("baseUrl".into(), base_url.clone().into());
    }
    if !provider.is_empty() {
        config["models"] = json!({"providers": {spec.provider.clone(): provider}});
    }
    config
}

/// The command that writes the configuration from [`CONFIG_ENV`] to where the gateway reads
/// it, then replaces the shell with the gateway on `port`.
pub fn command(port: u16) -> Vec<String> {
    let script = format!(
        "set -e\n\
         mkdir -p \"$HOME/.openclaw\"\n\
         printf '%s\\n' \"${CONFIG_ENV}\" > \"$HOME/.openclaw/openclaw.json\"\n\
         exec openclaw gateway run --port {port} --allow-unconfigured\n"
    );
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
}

#[cfg(test)]
mod tests {
    use proto::{ModelConfigSpec, reference::SecretKeyRef};

    use super::*;

    fn model(api_key: bool, base_url: Option<&str>) -> ModelConfig {
        ModelConfig::new(
            "default-model-config",
            ModelConfigSpec {
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5".into(),
                api_key_secret_ref: api_key
                    .then(|| SecretKeyRef { name: "anthropic".into(), key: "api-key".into() }),
                base_url: base_url.map(str::to_owned),
            },
        )
    }

    #[test]
    fn the_config_authenticates_with_a_token_reference_under_the_public_path() {
        let config = gateway_config("kagent", "peterj-claw", 18789, &model(false, None));

        assert_eq!(
            config["gateway"]["auth"],
            json!({"mode": "token", "token": "${GATEWAY_TOKEN}"})
        );
        assert_eq!(
            config["gateway"]["controlUi"]["basePath"],
            "/api/agentharnesses/kagent/peterj-claw/gateway"
        );
        assert_eq!(config["gateway"]["port"], 18789);
        assert_eq!(config["agents"]["defaults"]["model"]["primary"], "anthropic/claude-sonnet-4-5");
        assert!(config.get("models").is_none(), "{config}");
    }

    #[test]
    fn the_api_key_is_an_environment_reference_beside_the_base_url() {
        let config = gateway_config("ns", "h", 1, &model(true, Some("https://llm.example/v1")));

        assert_eq!(
            config["models"]["providers"]["anthropic"],
            json!({"apiKey": "${ANTHROPIC_API_KEY}", "baseUrl": "https://llm.example/v1"})
        );
    }

    #[test]
    fn provider_names_become_variable_names_the_gateway_substitutes() {
        assert_eq!(api_key_env("anthropic"), "ANTHROPIC_API_KEY");
        assert_eq!(api_key_env("vercel-gateway"), "VERCEL_GATEWAY_API_KEY");
        assert_eq!(api_key_env("x.ai"), "X_AI_API_KEY");
        assert_eq!(api_key_env("01ai"), "_01AI_API_KEY");
    }

    #[test]
    fn the_command_writes_the_config_and_runs_the_gateway_on_the_port() {
        let command = command(18789);

        assert_eq!(command[..2], ["/bin/sh", "-c"]);
        assert!(command[2].contains(r#""$OPENCLAW_CONFIG" > "$HOME/.openclaw/openclaw.json""#));
        assert!(command[2].contains("exec openclaw gateway run --port 18789 --allow-unconfigured"));
    }
}
