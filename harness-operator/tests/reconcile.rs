//! The AgentHarness controller against a real API server, run in-process, one namespace per
//! test. No ate-controller runs here: the tests play its part by writing the status of the
//! ActorTemplate and the Actor through their status subresource.

use std::{fmt::Debug, time::Duration};

use harness_operator::{Config, Metrics};
use k8s_openapi::{
    api::{core::v1::Secret, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use proto::{
    Actor, ActorTemplate, AgentHarness, ModelConfig, WorkerPool,
    conditions::{self, types},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

/// The gateway image the operator is told to use instead of the openclaw default.
const TEST_IMAGE: &str = "127.0.0.1:5000/e2e/gateway@sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// How long any single expectation may take to come true.
const PATIENCE: Duration = Duration::from_secs(20);

/// The controller, running in this test's runtime and watching only the test's namespace.
struct Operator {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Operator {
    fn start(client: &Client, namespace: &str) -> Operator {
        // RUST_LOG=harness_operator=debug shows what the controller did, on stderr.
        if std::env::var_os("RUST_LOG").is_some() {
            proto::logging::init(proto::logging::LogFormat::Text);
        }
        let config = Config {
            workload_image: Some(TEST_IMAGE.to_owned()),
            watch_namespace: Some(namespace.to_owned()),
            ..Config::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(harness_operator::run(
            client.clone(),
            config,
            Metrics::default(),
            shutdown,
        ));
        Operator { stop, task }
    }

    /// Stops the controller and checks that it returns promptly.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the controller did not stop within 10 s of its shutdown signal")
            .expect("the controller task panicked");
    }
}

/// One test's namespace, client and APIs.
struct Scene {
    namespace: String,
    client: Client,
}

impl Scene {
    async fn new(prefix: &str) -> Scene {
        let cluster = e2e::cluster::shared();
        let namespace = cluster.namespace(prefix).await.unwrap();
        Scene { namespace, client: cluster.client().await.unwrap() }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn create<K>(&self, value: Value) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        let object: K = serde_json::from_value(value).unwrap();
        self.api::<K>().create(&PostParams::default(), &object).await.unwrap()
    }

    async fn model_config(&self, api_key: bool) {
        let mut spec = json!({"provider": "anthropic", "model": "claude-sonnet-4-5"});
        if api_key {
            spec["apiKeySecretRef"] = json!({"name": "anthropic", "key": "api-key"});
            self.create::<Secret>(json!({
                "metadata": {"name": "anthropic"},
                "stringData": {"api-key": "sk-test"},
            }))
            .await;
        }
        self.create::<ModelConfig>(json!({
            "apiVersion": "kagent.dev/v1alpha2", "kind": "ModelConfig",
            "metadata": {"name": "default-model-config"},
            "spec": spec,
        }))
        .await;
    }

    async fn worker_pool(&self) {
        self.create::<WorkerPool>(json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": "kagent-default"},
            "spec": {},
        }))
        .await;
    }

    async fn harness(&self, name: &str, token: &str) -> AgentHarness {
        self.create(json!({
            "apiVersion": "kagent.dev/v1alpha2", "kind": "AgentHarness",
            "metadata": {"name": name},
            "spec": {
                "backend": "openclaw",
                "description": "OpenClaw on Agent Substrate",
                "modelConfigRef": "default-model-config",
                "runtime": "substrate",
                "substrate": {"gatewayToken": token, "workerPoolRef": {"name": "kagent-default"}},
            },
        }))
        .await
    }

    /// Writes `status` into an object's status subresource, as ate-controller would.
    async fn patch_status<K>(&self, name: &str, status: Value)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let patch = json!({"status": status});
        self.api::<K>()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// The object, once `accept` holds for it; panics with the last one seen after
    /// [`PATIENCE`].
    async fn wait_for<K>(&self, name: &str, what: &str, accept: impl Fn(&K) -> bool) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = self.api::<K>();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let object = api.get_opt(name).await.unwrap();
            match object {
                Some(object) if accept(&object) => return object,
                last if Instant::now() >= deadline => {
                    panic!("{what}: not within {PATIENCE:?}; last seen: {last:#?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until the object is gone; panics after [`PATIENCE`].
    async fn wait_gone<K>(&self, name: &str, what: &str)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = self.api::<K>();
        let deadline = Instant::now() + PATIENCE;
        while let Some(object) = api.get_opt(name).await.unwrap() {
            assert!(
                Instant::now() < deadline,
                "{what}: still there after {PATIENCE:?}: {object:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The reasons of the events regarding `name`, in the namespace.
    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events = self.api::<Event>().list(&ListParams::default()).await.unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }
}

fn condition<'a>(harness: &'a AgentHarness, type_: &str) -> Option<&'a Condition> {
    conditions::find(&harness.status.as_ref()?.conditions, type_)
}

fn has_condition(harness: &AgentHarness, type_: &str, status: &str, reason: &str) -> bool {
    condition(harness, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

fn summary(harness: &AgentHarness) -> Option<&str> {
    Some(harness.status.as_ref()?.progress.as_ref()?.summary.as_str())
}

fn ready(status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

const PULLING: &str = "Pulling image 45% (160/360 MB, ETA 32s)";

/// Marks the template as pulling, then Ready, the way ate-controller would.
async fn template_is_pulling(scene: &Scene, name: &str) {
    let status = json!({
        "phase": "Preparing",
        "conditions": [ready("False", "PullingImage", "Pulling the gateway image on node-1.")],
        "progress": {"phase": "Pulling", "bytesDone": 160_000_000u64, "bytesTotal": 360_000_000u64, "summary": PULLING},
    });
    scene.patch_status::<ActorTemplate>(name, status).await;
}

async fn template_is_ready(scene: &Scene, name: &str) {
    let status = json!({
        "phase": "Ready",
        "conditions": [ready("True", "Succeeded", "The golden snapshot is in the bucket.")],
        "goldenSnapshot": "s3://substrate-snapshots/x/manifest.json",
    });
    scene.patch_status::<ActorTemplate>(name, status).await;
}

#[tokio::test]
async fn a_harness_whose_model_config_is_missing_is_not_accepted_and_gets_no_template() {
    let scene = Scene::new("no-model").await;
    scene.worker_pool().await;
    scene.harness("claw", "token-no-model").await;
    let operator = Operator::start(&scene.client, &scene.namespace);

    let harness = scene
        .wait_for::<AgentHarness>("claw", "Accepted=False", |h| {
            condition(h, types::ACCEPTED).is_some()
        })
        .await;

    let accepted = condition(&harness, types::ACCEPTED).unwrap();
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "ModelConfigNotFound")
    );
    let named = format!("ModelConfig {}/default-model-config not found", scene.namespace);
    assert!(accepted.message.contains(&named), "{}", accepted.message);
    assert!(has_condition(&harness, types::READY, "False", "ModelConfigNotFound"));
    assert_eq!(condition(&harness, types::READY).unwrap().message, accepted.message);
    assert_eq!(summary(&harness), Some(accepted.message.as_str()));
    assert!(harness.finalizers().iter().any(|f| f == "kagent.dev/harness-cleanup"));
    assert!(scene.api::<ActorTemplate>().get_opt("claw").await.unwrap().is_none());
    operator.stop().await;
}

#[tokio::test]
async fn a_harness_whose_worker_pool_is_missing_is_not_accepted() {
    let scene = Scene::new("no-pool").await;
    scene.model_config(false).await;
    scene.harness("claw", "token-no-pool").await;
    let operator = Operator::start(&scene.client, &scene.namespace);

    let harness = scene
        .wait_for::<AgentHarness>("claw", "Accepted=False", |h| {
            condition(h, types::ACCEPTED).is_some()
        })
        .await;

    let accepted = condition(&harness, types::ACCEPTED).unwrap();
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "WorkerPoolNotFound")
    );
    let named = format!("WorkerPool {}/kagent-default not found", scene.namespace);
    assert!(accepted.message.contains(&named), "{}", accepted.message);
    assert!(has_condition(&harness, types::READY, "False", "WorkerPoolNotFound"));
    assert!(scene.api::<ActorTemplate>().get_opt("claw").await.unwrap().is_none());
    operator.stop().await;
}

#[tokio::test]
async fn an_inline_token_is_kept_in_an_owned_secret_and_only_referenced_by_the_template() {
    let scene = Scene::new("token").await;
    scene.model_config(true).await;
    scene.worker_pool().await;
    let token = "tok-9c1d7e5b-never-in-clear";
    let created = scene.harness("claw", token).await;
    let operator = Operator::start(&scene.client, &scene.namespace);

    let template = scene.wait_for::<ActorTemplate>("claw", "the ActorTemplate", |_| true).await;
    let secret = scene.wait_for::<Secret>("claw-gateway-token", "the token Secret", |_| true).await;

    // The Secret holds the token, and it and the template belong to the harness.
    assert_eq!(secret.data.as_ref().unwrap()["token"].0, token.as_bytes());
    for (kind, meta) in [("Secret", &secret.metadata), ("ActorTemplate", &template.metadata)] {
        let owner = &meta.owner_references.as_ref().expect(kind)[0];
        assert_eq!(owner.uid, created.metadata.uid.clone().unwrap(), "{kind}");
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(meta.labels.as_ref().unwrap()["kagent.dev/harness"], "claw", "{kind}");
    }

    // The template runs the operator's image and reads secrets by reference only.
    let container = &template.spec.containers[0];
    assert_eq!(container.image, TEST_IMAGE);
    assert!(container.command.is_empty(), "{:?}", container.command);
    let env = |name: &str| container.env.iter().find(|e| e.name == name).unwrap().clone();
    let gateway_token = env("GATEWAY_TOKEN").value_from.expect("GATEWAY_TOKEN from a Secret");
    assert_eq!(gateway_token.secret_key_ref.name, "claw-gateway-token");
    assert_eq!(gateway_token.secret_key_ref.key, "token");
    let api_key = env("ANTHROPIC_API_KEY").value_from.expect("the API key from a Secret");
    assert_eq!(
        (api_key.secret_key_ref.name.as_str(), api_key.secret_key_ref.key.as_str()),
        ("anthropic", "api-key")
    );
    assert_eq!(env("GATEWAY_PORT").value.as_deref(), Some("18789"));
    assert_eq!(template.spec.worker_pool_ref.name, "kagent-default");
    assert_eq!(
        template.spec.snapshots_config.location,
        format!("s3://substrate-snapshots/{}/claw", scene.namespace)
    );
    let json = serde_json::to_string(&template).unwrap();
    assert!(!json.contains(token), "the token is in the template: {json}");

    // Nor does the harness's status, or any event, say it.
    let harness = scene
        .wait_for::<AgentHarness>("claw", "Accepted=True", |h| {
            has_condition(h, types::ACCEPTED, "True", "Accepted")
        })
        .await;
    assert_eq!(
        harness.status.as_ref().unwrap().backend_ref.as_ref().unwrap().actor_template.as_deref(),
        Some("claw")
    );
    let status = serde_json::to_string(&harness.status).unwrap();
    assert!(!status.contains(token), "the token is in the status: {status}");
    let events = scene.api::<Event>().list(&ListParams::default()).await.unwrap();
    let events = serde_json::to_string(&events.items).unwrap();
    assert!(!events.contains(token), "the token is in an event: {events}");
    operator.stop().await;
}

#[tokio::test]
async fn the_harness_mirrors_its_template_then_its_actor_until_it_is_ready() {
    let scene = Scene::new("mirror").await;
    scene.model_config(false).await;
    scene.worker_pool().await;
    scene.harness("claw", "token-mirror").await;
    let operator = Operator::start(&scene.client, &scene.namespace);
    scene.wait_for::<ActorTemplate>("claw", "the ActorTemplate", |_| true).await;

    // While the template pulls, the harness says so, with the template's progress line.
    template_is_pulling(&scene, "claw").await;
    let harness = scene
        .wait_for::<AgentHarness>("claw", "ActorTemplateReady=False PullingImage", |h| {
            has_condition(h, types::ACTOR_TEMPLATE_READY, "False", "PullingImage")
                && summary(h) == Some(PULLING)
        })
        .await;
    let mirrored = condition(&harness, types::ACTOR_TEMPLATE_READY).unwrap();
    assert_eq!(mirrored.message, "Pulling the gateway image on node-1.");
    assert!(has_condition(&harness, types::READY, "False", "PullingImage"));
    assert!(
        scene.api::<Actor>().get_opt("claw").await.unwrap().is_none(),
        "an Actor before the template is Ready"
    );

    // Once the template is Ready, the Actor is created.
    template_is_ready(&scene, "claw").await;
    let actor = scene.wait_for::<Actor>("claw", "the Actor", |_| true).await;
    assert_eq!(actor.spec.template_ref.name, "claw");
    assert_eq!(serde_json::to_value(actor.spec.desired_state).unwrap(), "Running");
    assert_eq!(actor.metadata.owner_references.as_ref().unwrap()[0].kind, "AgentHarness");
    assert_eq!(actor.labels()["kagent.dev/harness"], "claw");
    scene
        .wait_for::<AgentHarness>("claw", "ActorTemplateReady=True and backendRef.actor", |h| {
            has_condition(h, types::ACTOR_TEMPLATE_READY, "True", "Succeeded")
                && h.status.as_ref().and_then(|s| s.backend_ref.as_ref()?.actor.as_deref())
                    == Some("claw")
        })
        .await;

    // Once the Actor is Ready, so is the harness, with the Actor's endpoint.
    let status = json!({
        "phase": "Running", "node": "node-1", "endpoint": "127.0.0.1:31789",
        "conditions": [ready("True", "Succeeded", "Restored on node-1.")],
    });
    scene.patch_status::<Actor>("claw", status).await;
    let harness = scene
        .wait_for::<AgentHarness>("claw", "Ready=True", |h| {
            has_condition(h, types::READY, "True", "Ready")
        })
        .await;
    let status = harness.status.as_ref().unwrap();
    assert_eq!(status.connection.as_ref().unwrap().endpoint.as_deref(), Some("127.0.0.1:31789"));
    assert_eq!(summary(&harness), Some("Ready"));
    assert_eq!(status.observed_generation, harness.metadata.generation);
    assert!(has_condition(&harness, types::ACTOR_READY, "True", "Succeeded"));

    let output = e2e::cluster::shared()
        .kubectl(&["get", "agentharness", "claw", "-n", &scene.namespace], None)
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let row = stdout.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("claw "), "{stdout}");
    assert!(row.contains(" True ") && row.contains(" Ready "), "{stdout}");

    let reasons = scene.event_reasons("claw").await;
    for reason in ["Accepted", "TemplateCreated", "ActorCreated", "Ready"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event in {reasons:?}");
    }
    operator.stop().await;
}

#[tokio::test]
async fn deleting_a_harness_waits_for_its_actor_to_be_deleted_and_then_lets_it_go() {
    let scene = Scene::new("delete").await;
    scene.model_config(false).await;
    scene.worker_pool().await;
    scene.harness("claw", "token-delete").await;
    let operator = Operator::start(&scene.client, &scene.namespace);
    scene.wait_for::<ActorTemplate>("claw", "the ActorTemplate", |_| true).await;
    template_is_ready(&scene, "claw").await;
    scene.wait_for::<Actor>("claw", "the Actor", |_| true).await;

    // ate-controller holds an Actor with a finalizer of its own while it stops the sandbox.
    let hold = json!({"metadata": {"finalizers": ["ate.dev/test-hold"]}});
    let actors = scene.api::<Actor>();
    actors.patch("claw", &PatchParams::default(), &Patch::Merge(&hold)).await.unwrap();

    scene.api::<AgentHarness>().delete("claw", &DeleteParams::background()).await.unwrap();

    scene
        .wait_for::<Actor>("claw", "the Actor being deleted", |a| {
            a.metadata.deletion_timestamp.is_some()
        })
        .await;
    let harness = scene.api::<AgentHarness>().get_opt("claw").await.unwrap();
    assert!(
        harness.is_some_and(|h| h.finalizers().iter().any(|f| f == "kagent.dev/harness-cleanup")),
        "the harness went before its Actor"
    );

    let release = json!({"metadata": {"finalizers": null}});
    actors.patch("claw", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    scene.wait_gone::<Actor>("claw", "the Actor").await;
    scene.wait_gone::<AgentHarness>("claw", "the harness").await;
    operator.stop().await;
}
