//! The ActorTemplate a harness asks for: one `gateway` container, its image, command and
//! environment, its readiness check, pool and snapshot location.

use proto::{
    ActorTemplate, ActorTemplateSpec, AgentHarness, ModelConfig,
    actor_template::{Container, ContainerPort, EnvVar, EnvVarSource, Readyz, SnapshotsConfig},
    agent_harness::SubstrateSpec,
    reference::SecretKeyRef,
};

use crate::{
    config::Config,
    harness::{HarnessRef, child_metadata},
    openclaw,
};

/// The name of the template's only container, and of its port.
pub const CONTAINER_NAME: &str = "gateway";

/// The image a harness runs: its own `spec.substrate.workloadImage`, else the operator's
/// `--workload-image`, else the openclaw default.
pub fn image<'a>(substrate: &'a SubstrateSpec, config: &'a Config) -> &'a str {
    substrate
        .workload_image
        .as_deref()
        .or(config.workload_image.as_deref())
        .unwrap_or(openclaw::DEFAULT_IMAGE)
}

/// Where the template of `id` keeps its snapshots: `<--snapshot-location>/<namespace>/<name>`.
pub fn snapshot_location(config: &Config, id: &HarnessRef) -> String {
    format!("{}/{}/{}", config.snapshot_location.trim_end_matches('/'), id.namespace, id.name)
}

/// Builds the ActorTemplate `<name>` of a harness, owned by it, for server-side apply.
///
/// `token` is the Secret key holding the gateway token (see [`crate::token`]); the template
/// refers to it and to the ModelConfig's API key Secret, and holds no secret in clear. The
/// openclaw default image is started with [`openclaw::command`]; any other image runs its
/// own entrypoint with the same environment.
pub fn desired(
    harness: &AgentHarness,
    id: &HarnessRef,
    substrate: &SubstrateSpec,
    model: &ModelConfig,
    token: SecretKeyRef,
    config: &Config,
) -> ActorTemplate {
    let port = config.gateway_port;
    let image = image(substrate, config);
    let gateway_config = openclaw::gateway_config(&id.namespace, &id.name, port, model);

    let mut env = vec![
        from_secret(openclaw::GATEWAY_TOKEN_ENV, token),
        literal(openclaw::GATEWAY_PORT_ENV, port.to_string()),
        literal(openclaw::CONFIG_ENV, gateway_config.to_string()),
    ];
    if let Some(api_key) = &model.spec.api_key_secret_ref {
        env.push(from_secret(&openclaw::api_key_env(&model.spec.provider), api_key.clone()));
    }

    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: image.to_owned(),
        command: if image == openclaw::DEFAULT_IMAGE {
            openclaw::command(port)
        } else {
            Vec::new()
        },
        args: Vec::new(),
        env,
        ports: vec![ContainerPort { name: Some(CONTAINER_NAME.to_owned()), container_port: port }],
        readyz: Some(Readyz { port, path: openclaw::READYZ_PATH.to_owned() }),
    };

    let spec = ActorTemplateSpec {
        containers: vec![container],
        worker_pool_ref: substrate.worker_pool_ref.clone(),
        snapshots_config: SnapshotsConfig { location: snapshot_location(config, id) },
    };
    ActorTemplate { metadata: child_metadata(harness, id, id.name.clone()), spec, status: None }
}

fn literal(name: &str, value: String) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value), value_from: None }
}

fn from_secret(name: &str, secret_key_ref: SecretKeyRef) -> EnvVar {
    EnvVar { name: name.to_owned(), value: None, value_from: Some(EnvVarSource { secret_key_ref }) }
}

#[cfg(test)]
mod tests {
    use proto::{ModelConfigSpec, reference::WorkerPoolRef};
    use serde_json::json;

    use super::*;

    const OVERRIDE: &str = "127.0.0.1:5000/e2e/gateway@sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn harness() -> AgentHarness {
        let mut harness = AgentHarness::new(
            "claw",
            serde_json::from_value(json!({
                "backend": "openclaw", "modelConfigRef": "m", "runtime": "substrate",
            }))
            .unwrap(),
        );
        harness.metadata.namespace = Some("kagent".into());
        harness.metadata.uid = Some("uid-1".into());
        harness
    }

    fn substrate(image: Option<&str>) -> SubstrateSpec {
        SubstrateSpec {
            gateway_token: Some("never-in-a-template".into()),
            gateway_token_secret_ref: None,
            worker_pool_ref: WorkerPoolRef { name: "kagent-default".into() },
            workload_image: image.map(str::to_owned),
        }
    }

    fn model() -> ModelConfig {
        ModelConfig::new(
            "m",
            ModelConfigSpec {
                provider: "openai".into(),
                model: "gpt-5".into(),
                api_key_secret_ref: Some(SecretKeyRef { name: "openai".into(), key: "key".into() }),
                base_url: None,
            },
        )
    }

    fn build(substrate: &SubstrateSpec, config: &Config) -> ActorTemplate {
        let id = HarnessRef { namespace: "kagent".into(), name: "claw".into() };
        let token = crate::token::secret_key_ref(&id, substrate);
        desired(&harness(), &id, substrate, &model(), token, config)
    }

    #[test]
    fn the_harness_image_wins_over_the_flag_which_wins_over_the_default() {
        let flag = Config { workload_image: Some("flag@sha256:1".into()), ..Config::default() };

        assert_eq!(image(&substrate(Some("spec@sha256:2")), &flag), "spec@sha256:2");
        assert_eq!(image(&substrate(None), &flag), "flag@sha256:1");
        assert_eq!(image(&substrate(None), &Config::default()), openclaw::DEFAULT_IMAGE);
    }

    #[test]
    fn the_default_image_runs_the_openclaw_command() {
        let template = build(&substrate(None), &Config::default());

        let container = &template.spec.containers[0];
        assert_eq!(container.name, "gateway");
        assert_eq!(container.image, openclaw::DEFAULT_IMAGE);
        assert!(container.command[2].contains("openclaw gateway run --port 18789"));
    }

    #[test]
    fn an_overridden_image_runs_its_entrypoint_with_the_same_environment() {
        let template = build(&substrate(Some(OVERRIDE)), &Config::default());

        let container = &template.spec.containers[0];
        assert_eq!(container.image, OVERRIDE);
        assert!(container.command.is_empty());
        let names: Vec<&str> = container.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["GATEWAY_TOKEN", "GATEWAY_PORT", "OPENCLAW_CONFIG", "OPENAI_API_KEY"]);
    }

    #[test]
    fn secrets_are_referenced_and_never_written_in_clear() {
        let template = build(&substrate(None), &Config::default());

        let env = &template.spec.containers[0].env;
        let token = env[0].value_from.as_ref().unwrap();
        assert_eq!(token.secret_key_ref.name, "claw-gateway-token");
        assert_eq!(token.secret_key_ref.key, "token");
        assert_eq!(env[3].value_from.as_ref().unwrap().secret_key_ref.name, "openai");
        let json = serde_json::to_string(&template).unwrap();
        assert!(!json.contains("never-in-a-template"), "{json}");
    }

    #[test]
    fn the_template_is_owned_labelled_and_placed_in_the_pool_and_bucket() {
        let config = Config {
            snapshot_location: "s3://snapshots/dev".into(),
            gateway_port: 8080,
            ..Config::default()
        };

        let template = build(&substrate(None), &config);

        let owner = &template.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("AgentHarness", "uid-1"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(template.metadata.labels.as_ref().unwrap()["kagent.dev/harness"], "claw");
        assert_eq!(template.spec.worker_pool_ref.name, "kagent-default");
        assert_eq!(template.spec.snapshots_config.location, "s3://snapshots/dev/kagent/claw");
        let container = &template.spec.containers[0];
        assert_eq!(container.ports[0].container_port, 8080);
        assert_eq!(container.readyz, Some(Readyz { port: 8080, path: "/healthz".into() }));
    }
}
