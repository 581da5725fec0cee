//! The whole story on a local cluster: an atelet, ate-controller and harness-operator run as
//! processes against its API server, the registry sits behind a [`Link`], and a person applies
//! the AgentHarness of the design and waits for it to be Ready.
//!
//! The seed benchmark and the end-to-end tests both tell it through a [`Story`]. Everything
//! lives in one namespace of its own: the atelet's Lease, the ModelConfig, the WorkerPool and
//! the harnesses; the controllers watch only there.

use std::{path::PathBuf, time::Duration};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use proto::{ActorTemplate, AgentHarness};
use serde_json::{Value, json};

use crate::{
    LocalCluster,
    component::{Component, workspace_binary},
    link::{Link, LinkConfig},
};

/// The labels the story's atelet announces and its WorkerPool selects.
const POOL_LABEL: (&str, &str) = ("pool", "story");

/// How a [`Story`] is set up.
#[derive(Clone, Debug)]
pub struct StoryConfig {
    /// The link between the atelet and the registry.
    pub link: LinkConfig,
    /// ate-controller's stall window.
    pub stall_window: Duration,
}

impl Default for StoryConfig {
    fn default() -> Self {
        StoryConfig { link: LinkConfig::default(), stall_window: Duration::from_secs(300) }
    }
}

/// The processes and the namespace of one story.
pub struct Story<'a> {
    /// The cluster it runs on.
    pub cluster: &'a LocalCluster,
    /// The namespace that holds everything.
    pub namespace: String,
    /// The link in front of the cluster's registry.
    pub link: Link,
    atelet: Option<Component>,
    controller: Option<Component>,
    _operator: Component,
    config: StoryConfig,
    state: tempfile::TempDir,
    /// The atelet's gRPC port, kept across restarts as a DaemonSet's host port would be.
    grpc_port: u16,
}

impl<'a> Story<'a> {
    /// Starts the link, the atelet, ate-controller and harness-operator in a fresh namespace
    /// named after `prefix`, and creates the design's ModelConfig and WorkerPool.
    ///
    /// # Panics
    ///
    /// When any part cannot start: the story cannot be told without it.
    pub async fn start(cluster: &'a LocalCluster, prefix: &str, config: StoryConfig) -> Story<'a> {
        let namespace = cluster.namespace(prefix).await.expect("a namespace");
        let link = Link::start(cluster.registry, config.link.clone()).await.expect("the link");
        let state = tempfile::tempdir().expect("a state directory");
        let grpc_port = crate::port::free().expect("a free port");
        let operator = start_operator(cluster, &namespace).await;
        let mut story = Story {
            cluster,
            namespace,
            link,
            atelet: None,
            controller: None,
            _operator: operator,
            config,
            state,
            grpc_port,
        };
        story.start_atelet().await;
        story.start_controller().await;
        story.create_defaults().await;
        story
    }

    /// A client of the cluster.
    ///
    /// # Panics
    ///
    /// When the kubeconfig cannot be read.
    pub async fn client(&self) -> Client {
        self.cluster.client().await.expect("a client of the local cluster")
    }

    /// The atelet's process ID, to measure it.
    pub fn atelet_pid(&self) -> Option<u32> {
        self.atelet.as_ref().map(Component::pid)
    }

    /// Kills the atelet with SIGKILL and starts it again on the same state directory and port.
    pub async fn restart_atelet(&mut self) {
        if let Some(atelet) = self.atelet.take() {
            atelet.kill().await;
        }
        self.start_atelet().await;
    }

    /// Kills ate-controller with SIGKILL and starts it again.
    pub async fn restart_controller(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.kill().await;
        }
        self.start_controller().await;
    }

    /// Applies the design's AgentHarness under `name`, running `image` (pinned by digest).
    ///
    /// # Panics
    ///
    /// When the API server refuses it.
    pub async fn apply_harness(&self, name: &str, image: &str) {
        let harness = json!({
            "apiVersion": "kagent.dev/v1alpha2", "kind": "AgentHarness",
            "metadata": {"name": name},
            "spec": {
                "backend": "openclaw",
                "description": "OpenClaw on Agent Substrate",
                "modelConfigRef": "default-model-config",
                "runtime": "substrate",
                "substrate": {
                    "gatewayToken": "test-token",
                    "workerPoolRef": {"name": "kagent-default"},
                    "workloadImage": image,
                },
            },
        });
        self.apply::<AgentHarness>(name, harness).await;
    }

    /// The harness `name`, as the API server has it now.
    ///
    /// # Panics
    ///
    /// When it cannot be read.
    pub async fn harness(&self, name: &str) -> AgentHarness {
        let api: Api<AgentHarness> = Api::namespaced(self.client().await, &self.namespace);
        api.get(name).await.unwrap_or_else(|e| panic!("reading AgentHarness {name}: {e}"))
    }

    /// Reads the harness `name` every 200 ms, handing each version to `seen`, until `done`
    /// holds for one, which it returns.
    ///
    /// # Panics
    ///
    /// After `timeout`, with the last version read.
    pub async fn watch_harness(
        &self,
        name: &str,
        timeout: Duration,
        mut seen: impl FnMut(&AgentHarness),
        done: impl Fn(&AgentHarness) -> bool,
    ) -> AgentHarness {
        let api: Api<AgentHarness> = Api::namespaced(self.client().await, &self.namespace);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let harness = api.get(name).await.unwrap_or_else(|e| panic!("reading {name}: {e}"));
            seen(&harness);
            if done(&harness) {
                return harness;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "AgentHarness {name} not there after {timeout:?}; last status {:#?}",
                harness.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ActorTemplate `name`, if it exists.
    ///
    /// # Panics
    ///
    /// When it cannot be read.
    pub async fn template(&self, name: &str) -> Option<ActorTemplate> {
        let api: Api<ActorTemplate> = Api::namespaced(self.client().await, &self.namespace);
        api.get_opt(name).await.unwrap_or_else(|e| panic!("reading ActorTemplate {name}: {e}"))
    }

    /// Creates or replaces an object of this namespace by server-side apply.
    async fn apply<K>(&self, name: &str, object: Value)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client().await, &self.namespace);
        api.patch(name, &PatchParams::apply("e2e-story").force(), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    }

    /// The ModelConfig and WorkerPool the design's AgentHarness names.
    async fn create_defaults(&self) {
        let model = json!({
            "apiVersion": "kagent.dev/v1alpha2", "kind": "ModelConfig",
            "metadata": {"name": "default-model-config"},
            "spec": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        });
        self.apply::<proto::ModelConfig>("default-model-config", model).await;
        let pool = json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": "kagent-default"},
            "spec": {"nodeSelector": {POOL_LABEL.0: POOL_LABEL.1}},
        });
        self.apply::<proto::WorkerPool>("kagent-default", pool).await;
    }

    async fn start_atelet(&mut self) {
        let args = [
            "serve".to_owned(),
            format!("--state-dir={}", self.state.path().display()),
            format!("--grpc-addr=127.0.0.1:{}", self.grpc_port),
            format!("--insecure-registry={}", self.link.addr()),
            format!("--lease-namespace={}", self.namespace),
            format!("--node-name=node-{}", self.namespace),
            format!("--node-labels={}={}", POOL_LABEL.0, POOL_LABEL.1),
        ];
        self.atelet = Some(start(self.cluster, "atelet", &args).await);
    }

    async fn start_controller(&mut self) {
        let args = [
            format!("--namespace={}", self.namespace),
            format!("--watch-namespace={}", self.namespace),
            format!("--stall-window-seconds={}", self.config.stall_window.as_secs()),
        ];
        self.controller = Some(start(self.cluster, "ate-controller", &args).await);
    }
}

async fn start_operator(cluster: &LocalCluster, namespace: &str) -> Component {
    start(cluster, "harness-operator", &[format!("--watch-namespace={namespace}")]).await
}

/// Starts the workspace binary `name` with `args`, talking to `cluster`.
async fn start(cluster: &LocalCluster, name: &str, args: &[String]) -> Component {
    let exe: PathBuf = workspace_binary(name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("KUBECONFIG", cluster.kubeconfig.as_path())];
    Component::start_with_env(&exe, &args, &env).await
}
