//! Image pulls as long-running operations, against the real registry behind the link proxy.

use std::{path::Path, time::Duration};

use e2e::{
    component::Component,
    image::{self, ImageSpec, LayerCompression, LayerSpec, PushedImage},
    link::{Link, LinkConfig},
};
use proto::atelet::{
    GetOperationRequest, Operation, Phase, PullImageRequest, atelet_client::AteletClient, operation,
};
use tonic::transport::Channel;

const MIB: u64 = 1024 * 1024;

/// Starts `atelet serve` with its state in `state_dir`, trusting the link as an HTTP
/// registry, and connects a client to it.
async fn start_atelet(state_dir: &Path, link: &Link) -> (Component, AteletClient<Channel>) {
    let grpc_port = e2e::port::free().unwrap();
    let args = [
        "serve".to_owned(),
        format!("--state-dir={}", state_dir.display()),
        format!("--grpc-addr=127.0.0.1:{grpc_port}"),
        format!("--insecure-registry={}", link.addr()),
        "--read-timeout-seconds=5".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let atelet = Component::start(env!("CARGO_BIN_EXE_atelet").as_ref(), &args).await;
    let client = AteletClient::connect(format!("http://127.0.0.1:{grpc_port}")).await.unwrap();
    (atelet, client)
}

fn pull_request(key: &str, image: &PushedImage, link: &Link) -> PullImageRequest {
    PullImageRequest {
        idempotency_key: key.to_owned(),
        image: image.reference_via(link.addr()),
        unpack: false,
    }
}

/// Polls the operation until it is done, at most `timeout`.
async fn wait_done(client: &mut AteletClient<Channel>, name: &str, timeout: Duration) -> Operation {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let request = GetOperationRequest { name: name.to_owned() };
        let operation = client.get_operation(request).await.unwrap().into_inner();
        if operation.done {
            return operation;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not done after {timeout:?}: {operation:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the operation until at least `bytes` are on disk, failing if it finishes first.
async fn wait_for_bytes(client: &mut AteletClient<Channel>, name: &str, bytes: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = GetOperationRequest { name: name.to_owned() };
        let operation = client.get_operation(request).await.unwrap().into_inner();
        if operation.metadata.as_ref().map_or(0, |m| m.bytes_done) >= bytes {
            return;
        }
        assert!(!operation.done, "finished before {bytes} bytes were seen: {operation:?}");
        assert!(tokio::time::Instant::now() < deadline, "no progress to {bytes}: {operation:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase(operation: &Operation) -> Phase {
    operation.metadata.as_ref().map(|m| m.phase()).unwrap_or_default()
}

fn error_reason(operation: &Operation) -> Option<&str> {
    match &operation.result {
        Some(operation::Result::Error(error)) => Some(error.reason.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_pull_cut_by_connection_drops_completes_within_one_window_per_drop() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("atelet-test", "drops", &[5 * MIB, 3 * MIB], work.path()).await;
    let drop_every = MIB;
    let link = Link::start(
        e2e::cluster::shared().registry,
        LinkConfig { drop_every_bytes: Some(drop_every), ..LinkConfig::default() },
    )
    .await
    .unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;

    let started =
        client.pull_image(pull_request("drops", &image, &link)).await.unwrap().into_inner();
    assert!(!started.done, "the start call must return before the work is done");
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(120)).await;

    assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    let image_bytes = image.layer_bytes() + image.config.size;
    let drops = link.bytes_served() / drop_every;
    // One retry window per drop: bytes in flight when the connection was cut.
    let window = 256 * 1024;
    assert!(drops >= 7, "the link cut the transfer {drops} times; expected about 8");
    assert!(
        link.bytes_served() <= image_bytes + drops * window,
        "served {} for an image of {image_bytes} with {drops} drops",
        link.bytes_served()
    );
}

#[tokio::test]
async fn a_repeated_start_with_the_same_key_returns_the_same_operation() {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("atelet-test", "idempotent", &[2 * MIB], work.path()).await;
    let link = Link::start(e2e::cluster::shared().registry, LinkConfig::default()).await.unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;

    let first = client.pull_image(pull_request("same", &image, &link)).await.unwrap().into_inner();
    let second = client.pull_image(pull_request("same", &image, &link)).await.unwrap().into_inner();
    let other = client.pull_image(pull_request("other", &image, &link)).await.unwrap().into_inner();

    assert_eq!(first.name, second.name);
    assert_ne!(first.name, other.name);
    wait_done(&mut client, &first.name, Duration::from_secs(60)).await;
    wait_done(&mut client, &other.name, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn eight_concurrent_pulls_of_one_image_download_it_once() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("atelet-test", "concurrent", &[3 * MIB, 2 * MIB, MIB], work.path())
            .await;
    let link = Link::start(
        e2e::cluster::shared().registry,
        LinkConfig { mbps: Some(200.0), ..LinkConfig::default() },
    )
    .await
    .unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;

    let mut names = Vec::new();
    for i in 0..8 {
        let request = pull_request(&format!("concurrent-{i}"), &image, &link);
        names.push(client.pull_image(request).await.unwrap().into_inner().name);
    }
    for name in &names {
        let finished = wait_done(&mut client, name, Duration::from_secs(120)).await;
        assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    }

    let image_bytes = image.layer_bytes() + image.config.size;
    assert!(
        link.bytes_served() <= image_bytes + image_bytes / 20,
        "8 pulls made the registry serve {} bytes for an image of {image_bytes}",
        link.bytes_served()
    );
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_fails_the_pull_and_is_not_committed() {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("atelet-test", "corrupt", &[MIB], work.path()).await;
    let link = Link::start(e2e::cluster::shared().registry, LinkConfig::default()).await.unwrap();
    link.corrupt_blob(&image.layers[0].digest);
    let state = work.path().join("state");
    let (_atelet, mut client) = start_atelet(&state, &link).await;

    let started =
        client.pull_image(pull_request("corrupt", &image, &link)).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(60)).await;

    assert_eq!(phase(&finished), Phase::Failed, "{finished:?}");
    assert_eq!(error_reason(&finished), Some("DigestMismatch"), "{finished:?}");
    let hex = image.layers[0].digest.trim_start_matches("sha256:");
    let committed = state.join("content/blobs/sha256").join(hex);
    assert!(!committed.exists(), "a corrupt blob was committed at {}", committed.display());
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_at_once_without_retries() {
    let work = tempfile::tempdir().unwrap();
    let link = Link::start(e2e::cluster::shared().registry, LinkConfig::default()).await.unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;
    let missing = format!("{}/atelet-test/missing@sha256:{}", link.addr(), "0".repeat(64));

    let request =
        PullImageRequest { idempotency_key: "missing".into(), image: missing, unpack: false };
    let started = client.pull_image(request).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(30)).await;

    assert_eq!(phase(&finished), Phase::Failed, "{finished:?}");
    assert_eq!(error_reason(&finished), Some("ImageNotFound"), "{finished:?}");
    assert!(link.requests() <= 4, "{} requests for a missing image", link.requests());
}

#[tokio::test]
async fn an_unauthorized_pull_fails_with_that_reason_without_retries() {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("atelet-test", "denied", &[MIB], work.path()).await;
    let link = Link::start(e2e::cluster::shared().registry, LinkConfig::default()).await.unwrap();
    // The local registry runs without auth; the link answers as a registry that denies us.
    link.fail_next(100, 401);
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;

    let started =
        client.pull_image(pull_request("denied", &image, &link)).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(30)).await;

    assert_eq!(phase(&finished), Phase::Failed, "{finished:?}");
    assert_eq!(error_reason(&finished), Some("Unauthorized"), "{finished:?}");
    assert!(link.requests() <= 4, "{} requests for a denied image", link.requests());
}

#[tokio::test]
async fn after_kill_9_at_half_the_same_operation_finishes_by_itself() {
    let work = tempfile::tempdir().unwrap();
    let image =
        image::push_test_image("atelet-test", "killed", &[6 * MIB, 4 * MIB, 2 * MIB], work.path())
            .await;
    let link = Link::start(
        e2e::cluster::shared().registry,
        LinkConfig { mbps: Some(40.0), ..LinkConfig::default() },
    )
    .await
    .unwrap();
    let state = work.path().join("state");
    let (atelet, mut client) = start_atelet(&state, &link).await;
    let image_bytes = image.layer_bytes() + image.config.size;

    let started =
        client.pull_image(pull_request("killed", &image, &link)).await.unwrap().into_inner();
    wait_for_bytes(&mut client, &started.name, image_bytes / 2).await;
    atelet.kill().await;

    let (_restarted, mut client) = start_atelet(&state, &link).await;
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(120)).await;

    assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    // Each layer in flight at the kill may lose what was between the network and the disk.
    let in_flight_allowance = 3 * 512 * 1024;
    assert!(
        link.bytes_served() <= image_bytes + in_flight_allowance,
        "served {} for an image of {image_bytes} across a kill -9",
        link.bytes_served()
    );
}

#[tokio::test]
async fn the_pull_command_pulls_and_unpacks_in_the_foreground() {
    let work = tempfile::tempdir().unwrap();
    let cluster = e2e::cluster::shared();
    let spec = ImageSpec {
        repository: format!("atelet-test/command-{}", std::process::id()),
        tag: "latest".into(),
        layers: vec![
            LayerSpec::Files {
                files: vec![("etc/greeting".into(), b"hello from a layer\n".to_vec(), 0o640)],
                compression: LayerCompression::Gzip,
            },
            LayerSpec::Padding { bytes: MIB, compression: LayerCompression::None },
        ],
        seed: 7,
    };
    let image = image::push(cluster.registry, &spec, work.path()).await.unwrap();
    let rootfs = work.path().join("rootfs");
    let atelet = env!("CARGO_BIN_EXE_atelet");
    let registry = cluster.registry.to_string();

    let output = tokio::process::Command::new(atelet)
        .args(["pull", &image.reference, "--insecure-registry", &registry])
        .arg(format!("--state-dir={}", work.path().join("state").display()))
        .arg(format!("--rootfs={}", rootfs.display()))
        .output()
        .await
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "atelet pull failed: {stderr}");
    let greeting = std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap();
    assert_eq!(greeting, "hello from a layer\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("etc/greeting")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);

    let missing = format!("{registry}/atelet-test/missing@sha256:{}", "0".repeat(64));
    let output = tokio::process::Command::new(atelet)
        .args(["pull", &missing, "--insecure-registry", &registry])
        .arg(format!("--state-dir={}", work.path().join("state").display()))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was not found"), "{stderr}");
}

#[tokio::test]
async fn a_cancelled_pull_keeps_its_bytes_and_a_restart_through_a_range_ignoring_link_fetches_the_prefix_once()
 {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("atelet-test", "cancelled", &[8 * MIB], work.path()).await;
    let link = Link::start(
        e2e::cluster::shared().registry,
        LinkConfig { mbps: Some(40.0), ..LinkConfig::default() },
    )
    .await
    .unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;
    let image_bytes = image.layer_bytes() + image.config.size;

    let started =
        client.pull_image(pull_request("cancel", &image, &link)).await.unwrap().into_inner();
    wait_for_bytes(&mut client, &started.name, image_bytes / 2).await;
    let request = proto::atelet::CancelOperationRequest { name: started.name.clone() };
    let cancelled = client.cancel_operation(request).await.unwrap().into_inner();
    assert_eq!(phase(&cancelled), Phase::Cancelled, "{cancelled:?}");
    let served_at_cancel = link.bytes_served();

    // The registry now ignores Range: the prefix comes again, once, and is skipped.
    link.set_ignore_range(true);
    link.set_rate_mbps(None);
    let again =
        client.pull_image(pull_request("cancel", &image, &link)).await.unwrap().into_inner();
    assert_eq!(again.name, started.name, "a retry of the same key is the same operation");
    let finished = wait_done(&mut client, &again.name, Duration::from_secs(60)).await;

    assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    assert!(link.range_requests() >= 1, "the restart did not ask for the missing bytes only");
    assert!(
        link.bytes_served() <= served_at_cancel + image_bytes + 512 * 1024,
        "served {} in all; {served_at_cancel} before the cancel, image {image_bytes}",
        link.bytes_served()
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_the_pull_completes() {
    let work = tempfile::tempdir().unwrap();
    let image = image::push_test_image("atelet-test", "flaky", &[MIB], work.path()).await;
    let link = Link::start(e2e::cluster::shared().registry, LinkConfig::default()).await.unwrap();
    link.fail_next(3, 503);
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;

    let started =
        client.pull_image(pull_request("flaky", &image, &link)).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(60)).await;

    assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    assert!(link.requests() >= 3 + 3, "the injected failures were not all met");
}

#[tokio::test]
async fn an_index_resolves_to_the_linux_amd64_manifest_or_fails_without_one() {
    let work = tempfile::tempdir().unwrap();
    let registry = e2e::cluster::shared().registry;
    let amd64 = image::push_test_image("atelet-test", "index", &[MIB], work.path()).await;
    let arm64 = image::push_test_image("atelet-test", "index", &[MIB / 2], work.path()).await;
    let repository = amd64.repository.clone();
    let both = image::push_index(
        registry,
        &repository,
        "both",
        &[(arm64.clone(), "linux", "arm64"), (amd64.clone(), "linux", "amd64")],
    )
    .await
    .unwrap();
    let arm_only =
        image::push_index(registry, &repository, "arm", &[(arm64.clone(), "linux", "arm64")])
            .await
            .unwrap();
    let link = Link::start(registry, LinkConfig::default()).await.unwrap();
    let (_atelet, mut client) = start_atelet(&work.path().join("state"), &link).await;
    let via_link = |digest: &str| format!("{}/{repository}@{digest}", link.addr());

    let request =
        PullImageRequest { idempotency_key: "both".into(), image: via_link(&both), unpack: false };
    let started = client.pull_image(request).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(60)).await;
    assert_eq!(phase(&finished), Phase::Succeeded, "{finished:?}");
    let Some(operation::Result::Response(response)) = &finished.result else {
        panic!("{finished:?}")
    };
    let Some(proto::atelet::operation_response::Response::ImagePulled(pulled)) = &response.response
    else {
        panic!("{finished:?}")
    };
    assert_eq!(pulled.manifest_digest, amd64.manifest_digest);

    let request = PullImageRequest {
        idempotency_key: "arm".into(),
        image: via_link(&arm_only),
        unpack: false,
    };
    let started = client.pull_image(request).await.unwrap().into_inner();
    let finished = wait_done(&mut client, &started.name, Duration::from_secs(60)).await;
    assert_eq!(error_reason(&finished), Some("NoMatchingPlatform"), "{finished:?}");
}
