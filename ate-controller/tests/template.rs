//! ActorTemplates prepared on a real atelet through long-running operations, on the local
//! cluster, with the registry behind the link proxy.

use std::{collections::BTreeSet, path::Path, time::Duration};

use ate_controller::Config;
use e2e::{
    LocalCluster,
    component::Component,
    image,
    link::{Link, LinkConfig},
};
use kube::{
    Api,
    api::{PostParams, ResourceExt},
};
use proto::{
    ActorTemplate, WorkerPool,
    actor_template::{ActorTemplateStatus, TemplatePhase},
    conditions,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1024 * 1024;

/// One test's world: a namespace that holds the atelet's Lease, the pool and the template,
/// an atelet announcing itself there, and a controller watching only there.
struct World {
    cluster: &'static LocalCluster,
    namespace: String,
    link: Link,
    _atelet: Component,
    controller: CancellationToken,
    _state: tempfile::TempDir,
}

impl World {
    async fn new(prefix: &str, link_config: LinkConfig, stall_window: Duration) -> World {
        let cluster = e2e::cluster::shared();
        let namespace = cluster.namespace(prefix).await.unwrap();
        let link = Link::start(cluster.registry, link_config).await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let atelet = start_atelet(cluster, &namespace, &link, state.path()).await;
        let world = World {
            cluster,
            namespace,
            link,
            _atelet: atelet,
            controller: CancellationToken::new(),
            _state: state,
        };
        world.start_controller(stall_window).await;
        world
    }

    async fn start_controller(&self, stall_window: Duration) {
        let config = Config {
            namespace: self.namespace.clone(),
            stall_window,
            concurrency: 4,
            watch_namespace: Some(self.namespace.clone()),
        };
        let client = self.cluster.client().await.unwrap();
        let metrics = ate_controller::Metrics::default();
        tokio::spawn(ate_controller::run(client, config, metrics, self.controller.clone()));
    }

    async fn create_pool(&self, selector: serde_json::Value) {
        let pools: Api<WorkerPool> = Api::namespaced(self.client().await, &self.namespace);
        let pool = serde_json::from_value(json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": "pool"},
            "spec": {"nodeSelector": selector},
        }))
        .unwrap();
        pools.create(&PostParams::default(), &pool).await.unwrap();
    }

    async fn create_template(&self, image: &str) {
        let template = serde_json::from_value(json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "ActorTemplate",
            "metadata": {"name": "gateway"},
            "spec": {
                "containers": [{"name": "gateway", "image": image}],
                "workerPoolRef": {"name": "pool"},
                "snapshotsConfig": {"location": "s3://substrate-snapshots/test"},
            },
        }))
        .unwrap();
        self.templates().await.create(&PostParams::default(), &template).await.unwrap();
    }

    async fn client(&self) -> kube::Client {
        self.cluster.client().await.unwrap()
    }

    async fn templates(&self) -> Api<ActorTemplate> {
        Api::namespaced(self.client().await, &self.namespace)
    }

    /// Polls the template's status until `done` says so, collecting every progress summary
    /// and Ready reason seen on the way.
    async fn watch_until(
        &self,
        timeout: Duration,
        mut on_status: impl FnMut(&ActorTemplateStatus),
        done: impl Fn(&ActorTemplateStatus) -> bool,
    ) -> ActorTemplateStatus {
        let templates = self.templates().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = templates.get("gateway").await.unwrap().status.unwrap_or_default();
            on_status(&status);
            if done(&status) {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out; last status {status:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.controller.cancel();
    }
}

async fn start_atelet(
    cluster: &LocalCluster,
    namespace: &str,
    link: &Link,
    state: &Path,
) -> Component {
    let args = [
        "serve".to_owned(),
        format!("--state-dir={}", state.display()),
        format!("--grpc-addr=127.0.0.1:{}", e2e::port::free().unwrap()),
        format!("--insecure-registry={}", link.addr()),
        format!("--lease-namespace={namespace}"),
        format!("--node-name=node-{namespace}"),
        "--node-labels=pool=test".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exe = e2e::component::workspace_binary("atelet");
    let env = [("KUBECONFIG", cluster.kubeconfig.as_path())];
    Component::start_with_env(&exe, &args, &env).await
}

fn ready_reason(status: &ActorTemplateStatus) -> String {
    conditions::find(&status.conditions, "Ready").map(|c| c.reason.clone()).unwrap_or_default()
}

fn phase(status: &ActorTemplateStatus) -> Option<TemplatePhase> {
    status.phase
}

#[tokio::test]
async fn a_template_becomes_ready_and_its_status_shows_the_pull_progressing() {
    let work = tempfile::tempdir().unwrap();
    // About 25 s at 8 Mbit/s: long enough for the status to be refreshed many times.
    let image =
        image::push_test_image("ate-controller-test", "ready", &[16 * MIB, 8 * MIB], work.path())
            .await;
    let link = LinkConfig { mbps: Some(8.0), ..LinkConfig::default() };
    let world = World::new("ready", link, Duration::from_secs(300)).await;
    world.create_pool(json!({"pool": "test"})).await;

    world.create_template(&image.reference_via(world.link.addr())).await;
    let mut summaries = BTreeSet::new();
    let status = world
        .watch_until(
            Duration::from_secs(120),
            |status| {
                if let Some(progress) = &status.progress {
                    summaries.insert(progress.summary.clone());
                }
            },
            |status| matches!(phase(status), Some(TemplatePhase::Ready | TemplatePhase::Failed)),
        )
        .await;

    assert_eq!(phase(&status), Some(TemplatePhase::Ready), "{status:#?}");
    assert_eq!(ready_reason(&status), "RootfsPrepared");
    let image_ready = conditions::find(&status.conditions, "ImageReady").unwrap();
    assert_eq!(image_ready.status, "True");
    assert!(image_ready.message.contains("MB"), "{}", image_ready.message);
    let pulling: Vec<&String> =
        summaries.iter().filter(|s| s.starts_with("Pulling image")).collect();
    assert!(pulling.len() >= 5, "too few progress values seen: {summaries:?}");
    let image_bytes = image.layer_bytes() + image.config.size;
    assert!(world.link.bytes_served() <= image_bytes + image_bytes / 50);
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_the_template_with_a_message_naming_it() {
    let world = World::new("missing", LinkConfig::default(), Duration::from_secs(300)).await;
    world.create_pool(json!({})).await;
    let missing =
        format!("{}/ate-controller-test/missing@sha256:{}", world.link.addr(), "0".repeat(64));

    world.create_template(&missing).await;
    let status = world
        .watch_until(Duration::from_secs(60), |_| {}, |s| phase(s) == Some(TemplatePhase::Failed))
        .await;

    assert_eq!(ready_reason(&status), "ImageNotFound");
    let ready = conditions::find(&status.conditions, "Ready").unwrap();
    assert!(ready.message.contains("ate-controller-test/missing"), "{}", ready.message);
}

#[tokio::test]
async fn a_pool_without_a_live_atelet_says_so() {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("ate-controller-test", "nonode", &[MIB], work.path()).await;
    let world = World::new("nonode", LinkConfig::default(), Duration::from_secs(300)).await;
    world.create_pool(json!({"pool": "elsewhere"})).await;

    world.create_template(&image.reference_via(world.link.addr())).await;
    let status = world
        .watch_until(Duration::from_secs(30), |_| {}, |s| ready_reason(s) == "NoNodeAvailable")
        .await;

    let ready = conditions::find(&status.conditions, "Ready").unwrap();
    assert!(ready.message.contains("WorkerPool"), "{}", ready.message);
}

#[tokio::test]
async fn a_stalled_pull_is_reported_restarted_and_finishes_without_downloading_twice() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("ate-controller-test", "stall", &[6 * MIB], work.path()).await;
    let world = World::new(
        "stall",
        LinkConfig { mbps: Some(8.0), ..LinkConfig::default() },
        Duration::from_secs(3),
    )
    .await;
    world.create_pool(json!({})).await;

    world.create_template(&image.reference_via(world.link.addr())).await;
    world
        .watch_until(
            Duration::from_secs(60),
            |_| {},
            |s| s.progress.as_ref().is_some_and(|p| p.bytes_done > 0),
        )
        .await;
    world.link.set_paused(true);
    world.watch_until(Duration::from_secs(60), |_| {}, |s| ready_reason(s) == "Stalled").await;
    world.link.set_paused(false);
    let status = world
        .watch_until(Duration::from_secs(120), |_| {}, |s| phase(s) == Some(TemplatePhase::Ready))
        .await;

    assert_eq!(ready_reason(&status), "RootfsPrepared");
    let image_bytes = image.layer_bytes() + image.config.size;
    assert!(
        world.link.bytes_served() <= image_bytes + 2 * MIB,
        "served {} for an image of {image_bytes}",
        world.link.bytes_served()
    );
}

#[tokio::test]
async fn a_restarted_controller_keeps_polling_the_same_operation() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("ate-controller-test", "restart", &[6 * MIB], work.path()).await;
    let mut world = World::new(
        "restart",
        LinkConfig { mbps: Some(8.0), ..LinkConfig::default() },
        Duration::from_secs(300),
    )
    .await;
    world.create_pool(json!({})).await;

    world.create_template(&image.reference_via(world.link.addr())).await;
    let before = world
        .watch_until(
            Duration::from_secs(60),
            |_| {},
            |s| s.progress.as_ref().is_some_and(|p| p.bytes_done > 0),
        )
        .await;
    let operation = before.operation.clone().expect("an operation in status");
    world.controller.cancel();
    world.controller = CancellationToken::new();
    world.start_controller(Duration::from_secs(300)).await;

    let mut operations = BTreeSet::new();
    let status = world
        .watch_until(
            Duration::from_secs(120),
            |s| operations.extend(s.operation.as_ref().map(|o| o.name.clone())),
            |s| phase(s) == Some(TemplatePhase::Ready),
        )
        .await;

    assert_eq!(ready_reason(&status), "RootfsPrepared");
    assert!(
        operations.iter().all(|name| *name == operation.name),
        "{operations:?} vs {}",
        operation.name
    );
    let image_bytes = image.layer_bytes() + image.config.size;
    assert!(world.link.bytes_served() <= image_bytes + image_bytes / 50);
    let template = world.templates().await.get("gateway").await.unwrap();
    assert!(template.uid().is_some());
}
