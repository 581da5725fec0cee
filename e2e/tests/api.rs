//! The Kubernetes API of substrate-rs, served by a real kube-apiserver with the generated
//! CRDs installed, and garbage collection by a real kube-controller-manager.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use proto::{ActorTemplate, AgentHarness};
use serde_json::json;

const DESIGN_MANIFEST: &str = include_str!("../testdata/agentharness.yaml");

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Creates the design's namespace if it is not there yet.
async fn ensure_kagent_namespace() {
    let namespaces: Api<Namespace> = Api::all(e2e::cluster::shared().client().await.unwrap());
    let namespace = serde_json::from_value(json!({"metadata": {"name": "kagent"}})).unwrap();
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating namespace kagent: {error}"),
    }
}

fn harness(namespace: &str, name: &str) -> AgentHarness {
    serde_json::from_value(json!({
        "apiVersion": "kagent.dev/v1alpha2",
        "kind": "AgentHarness",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backend": "openclaw",
            "modelConfigRef": "default-model-config",
            "runtime": "substrate",
            "substrate": {"gatewayToken": "test-token", "workerPoolRef": {"name": "kagent-default"}},
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn the_design_manifest_is_accepted_unchanged_read_back_and_listed_by_kubectl() {
    let cluster = e2e::cluster::shared();
    ensure_kagent_namespace().await;

    let output = cluster.kubectl(&["apply", "-f", "-"], Some(DESIGN_MANIFEST)).unwrap();
    assert!(output.status.success(), "kubectl apply failed: {}", stderr(&output));

    let harnesses: Api<AgentHarness> = Api::namespaced(cluster.client().await.unwrap(), "kagent");
    let read = harnesses.get("peterj-claw").await.unwrap();
    let substrate = read.spec.substrate.as_ref().expect("spec.substrate");
    assert_eq!(read.spec.model_config_ref, "default-model-config");
    assert_eq!(read.spec.description.as_deref(), Some("OpenClaw on Agent Substrate"));
    assert_eq!(substrate.gateway_token.as_deref(), Some("test-token"));
    assert_eq!(substrate.worker_pool_ref.name, "kagent-default");
    assert_eq!(serde_json::to_value(read.spec.backend).unwrap(), "openclaw");
    assert_eq!(serde_json::to_value(read.spec.runtime).unwrap(), "substrate");

    let output = cluster.kubectl(&["get", "agentharness", "-n", "kagent"], None).unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let header: Vec<String> = stdout(&output)
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "STATUS", "AGE"]);
    assert!(stdout(&output).contains("peterj-claw"), "{}", stdout(&output));
}

#[tokio::test]
async fn the_printer_columns_show_the_ready_condition_and_the_progress_line() {
    let cluster = e2e::cluster::shared();
    let namespace = cluster.namespace("columns").await.unwrap();
    let harnesses: Api<AgentHarness> = Api::namespaced(cluster.client().await.unwrap(), &namespace);
    harnesses.create(&PostParams::default(), &harness(&namespace, "pulling")).await.unwrap();
    let status = json!({"status": {
        "conditions": [{
            "type": "Ready", "status": "False", "reason": "PullingImage",
            "message": "Pulling the image", "lastTransitionTime": "2026-12-03T10:00:00Z",
        }],
        "progress": {"phase": "Pulling", "summary": "Pulling image 45% (160/360 MB, ETA 32s)"},
    }});
    harnesses
        .patch_status("pulling", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let output = cluster.kubectl(&["get", "ahr", "pulling", "-n", &namespace], None).unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    let row = stdout(&output).lines().nth(1).unwrap_or_default().to_owned();
    assert!(row.starts_with("pulling "), "{row}");
    assert!(row.contains(" False "), "{row}");
    assert!(row.contains(" PullingImage "), "{row}");
    assert!(row.contains("Pulling image 45% (160/360 MB, ETA 32s)"), "{row}");
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_a_message_naming_the_field() {
    let cluster = e2e::cluster::shared();
    let namespace = cluster.namespace("invalid").await.unwrap();
    let digest = "sha256:".to_owned() + &"a".repeat(64);
    struct Case {
        name: &'static str,
        manifest: String,
        field: &'static str,
        says: &'static str,
    }
    let harness_with = |name: &str, substrate: &str| {
        format!(
            "apiVersion: kagent.dev/v1alpha2\nkind: AgentHarness\n\
             metadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  backend: openclaw\n  modelConfigRef: m\n  runtime: substrate\n{substrate}"
        )
    };
    let template_with = |name: &str, image: &str| {
        format!(
            "apiVersion: ate.dev/v1alpha1\nkind: ActorTemplate\n\
             metadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  containers: [{{name: gateway, image: \"{image}\"}}]\n  \
             workerPoolRef: {{name: p}}\n  snapshotsConfig: {{location: \"s3://bucket/prefix\"}}\n"
        )
    };
    let cases = [
        Case {
            name: "both token fields",
            manifest: harness_with(
                "both",
                "  substrate:\n    gatewayToken: t\n    gatewayTokenSecretRef: {name: s, key: k}\n    \
                 workerPoolRef: {name: p}\n",
            ),
            field: "spec.substrate",
            says: "set exactly one of spec.substrate.gatewayToken or spec.substrate.gatewayTokenSecretRef",
        },
        Case {
            name: "neither token field",
            manifest: harness_with("neither", "  substrate:\n    workerPoolRef: {name: p}\n"),
            field: "spec.substrate",
            says: "set exactly one of spec.substrate.gatewayToken or spec.substrate.gatewayTokenSecretRef",
        },
        Case {
            name: "substrate runtime without substrate settings",
            manifest: harness_with("nosubstrate", ""),
            field: "spec.substrate",
            says: "spec.substrate is required when spec.runtime is substrate",
        },
        Case {
            name: "workload image without a digest",
            manifest: harness_with(
                "tagged",
                "  substrate:\n    gatewayToken: t\n    workerPoolRef: {name: p}\n    \
                 workloadImage: registry.example/gateway:latest\n",
            ),
            field: "spec.substrate.workloadImage",
            says: "must be pinned by digest",
        },
        Case {
            name: "template image without a digest",
            manifest: template_with("tagged", "registry.example/gateway:latest"),
            field: "spec.containers[0].image",
            says: "must be pinned by digest",
        },
        Case {
            name: "unknown backend",
            manifest: harness_with("unknown", "").replace("backend: openclaw", "backend: nanoclaw"),
            field: "spec.backend",
            says: "supported values: \"openclaw\"",
        },
    ];

    for case in &cases {
        let output = cluster.kubectl(&["apply", "-f", "-"], Some(&case.manifest)).unwrap();
        let message = stderr(&output);
        assert!(!output.status.success(), "{}: was accepted", case.name);
        assert!(
            message.contains(case.field),
            "{}: {message:?} does not name {}",
            case.name,
            case.field
        );
        assert!(
            message.contains(case.says),
            "{}: {message:?} does not say {:?}",
            case.name,
            case.says
        );
    }

    // The same template pinned by digest is accepted: the rule rejects the tag, not the shape.
    let pinned = template_with("pinned", &format!("registry.example/gateway@{digest}"));
    let output = cluster.kubectl(&["apply", "-f", "-"], Some(&pinned)).unwrap();
    assert!(output.status.success(), "pinned template refused: {}", stderr(&output));
}

#[tokio::test]
async fn deleting_a_harness_garbage_collects_the_template_it_owns() {
    let cluster = e2e::cluster::shared();
    let namespace = cluster.namespace("gc").await.unwrap();
    let client = cluster.client().await.unwrap();
    let harnesses: Api<AgentHarness> = Api::namespaced(client.clone(), &namespace);
    let templates: Api<ActorTemplate> = Api::namespaced(client, &namespace);
    let owner =
        harnesses.create(&PostParams::default(), &harness(&namespace, "owner")).await.unwrap();
    let template: ActorTemplate = serde_json::from_value(json!({
        "apiVersion": "ate.dev/v1alpha1",
        "kind": "ActorTemplate",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "ownerReferences": [{
                "apiVersion": "kagent.dev/v1alpha2", "kind": "AgentHarness",
                "name": "owner", "uid": owner.metadata.uid.clone().unwrap(),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": [{"name": "gateway", "image": format!("r.example/g@sha256:{}", "b".repeat(64))}],
            "workerPoolRef": {"name": "kagent-default"},
            "snapshotsConfig": {"location": "s3://bucket/prefix"},
        },
    }))
    .unwrap();
    templates.create(&PostParams::default(), &template).await.unwrap();

    harnesses.delete("owner", &DeleteParams::background()).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while templates.get_opt("owned").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owned ActorTemplate outlived its harness by 60 s: is the garbage collector running?"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
