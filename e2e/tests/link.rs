//! The test link in front of the real registry: images pushed by `e2e::image` come back
//! through it intact, and each of its faults does what pulls will be tested against.

use std::time::{Duration, Instant};

use e2e::{
    image::{self, Descriptor, ImageSpec, LayerCompression, LayerSpec, PushedImage},
    link::{Link, LinkConfig},
};
use futures::StreamExt;
use http::{StatusCode, header};
use sha2::{Digest as _, Sha256};

/// The size of the blobs the fault tests download: big enough for several chunks and drop
/// points, small enough to keep the tests fast.
const BLOB_BYTES: u64 = 2_000_000;

/// A repository name that no other test (or earlier run) uses.
fn repository(test: &str) -> String {
    format!("e2e-link/{test}-{:08x}", rand::random::<u32>())
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn client() -> reqwest::Client {
    e2e::http::client().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn push(spec: &ImageSpec) -> PushedImage {
    let workdir = tempfile::tempdir().unwrap();
    image::push(e2e::cluster::shared().registry, spec, workdir.path()).await.unwrap()
}

/// Pushes an image whose only layer is an uncompressed padding blob of about `bytes`.
async fn push_padding(test: &str, bytes: u64) -> PushedImage {
    push(&ImageSpec {
        repository: repository(test),
        tag: "latest".to_owned(),
        layers: vec![LayerSpec::Padding { bytes, compression: LayerCompression::None }],
        seed: rand::random(),
    })
    .await
}

/// A link in front of the shared cluster's registry.
async fn link(config: LinkConfig) -> Link {
    Link::start(e2e::cluster::shared().registry, config).await.unwrap()
}

fn blob_url(link: &Link, image: &PushedImage, blob: &Descriptor) -> String {
    format!("http://{}/v2/{}/blobs/{}", link.addr(), image.repository, blob.digest)
}

/// Reads `response`'s body into `into` until it ends or breaks, and returns whether it broke.
async fn read_body(response: reqwest::Response, into: &mut Vec<u8>) -> bool {
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(chunk) => into.extend_from_slice(&chunk),
            Err(_) => return true,
        }
    }
    false
}

/// Downloads a whole blob and returns its bytes.
async fn fetch(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn an_image_pulled_through_an_unlimited_link_has_the_digests_it_was_pushed_with() {
    let sizes = image::padding_layers(3_000_000);
    let mut layers: Vec<LayerSpec> = sizes
        .iter()
        .zip([LayerCompression::Gzip, LayerCompression::None].into_iter().cycle())
        .map(|(bytes, compression)| LayerSpec::Padding { bytes: *bytes, compression })
        .collect();
    layers.push(LayerSpec::Files {
        files: vec![("/etc/motd".to_owned(), b"through the link\n".to_vec(), 0o644)],
        compression: LayerCompression::Gzip,
    });
    let spec = ImageSpec { repository: repository("pull"), tag: "v1".to_owned(), layers, seed: 1 };
    let image = push(&spec).await;
    assert_eq!(image.layers.len(), 6);
    assert!(image.layer_bytes() > 3_000_000, "{}", image.layer_bytes());
    let link = link(LinkConfig::default()).await;
    let client = client();

    let manifest_url =
        format!("http://{}/v2/{}/manifests/{}", link.addr(), image.repository, spec.tag);
    let manifest = client
        .get(&manifest_url)
        .header(header::ACCEPT, image::MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    let manifest = manifest.bytes().await.unwrap();
    assert_eq!(sha256(&manifest), image.manifest_digest);
    assert_eq!(manifest.len() as u64, image.manifest_size);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let listed: Vec<Descriptor> = serde_json::from_value(parsed["layers"].clone()).unwrap();
    assert_eq!(listed, image.layers);

    let mut fetched = manifest.len() as u64;
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let bytes = fetch(&client, &blob_url(&link, &image, blob)).await;
        assert_eq!(bytes.len() as u64, blob.size, "{}", blob.digest);
        assert_eq!(sha256(&bytes), blob.digest);
        fetched += blob.size;
    }
    assert_eq!(link.bytes_served(), fetched);
    assert_eq!(link.requests(), 1 + 1 + 6);
    assert_eq!(
        image.reference_via(link.addr()),
        format!("{}/{}@{}", link.addr(), image.repository, image.manifest_digest)
    );
}

#[tokio::test]
async fn an_image_pushed_through_a_link_keeps_its_uploads_on_the_link() {
    let link = link(LinkConfig::default()).await;
    let spec = ImageSpec {
        repository: repository("push"),
        tag: "latest".to_owned(),
        layers: vec![LayerSpec::Padding { bytes: 100_000, compression: LayerCompression::Gzip }],
        seed: rand::random(),
    };
    let workdir = tempfile::tempdir().unwrap();
    let image = image::push(link.addr(), &spec, workdir.path()).await.unwrap();

    // For the layer and the config: HEAD, POST and the PUT to the upload's Location; then the
    // manifest. The PUTs reach the link only if the registry's Location points back at it.
    assert_eq!(link.requests(), 3 + 3 + 1);
    assert!(image.reference.starts_with(&link.addr().to_string()), "{}", image.reference);
    assert!(std::fs::read_dir(workdir.path()).unwrap().next().is_none(), "layer files left");

    let registry = e2e::cluster::shared().registry;
    let url = format!("http://{registry}/v2/{}/blobs/{}", image.repository, image.layers[0].digest);
    assert_eq!(sha256(&fetch(&client(), &url).await), image.layers[0].digest);
}

#[tokio::test]
async fn two_downloads_through_a_limited_link_share_its_rate() {
    let image = push_padding("rate", BLOB_BYTES).await;
    let link = link(LinkConfig { mbps: Some(8.0), ..LinkConfig::default() }).await;
    let client = client();
    let url = blob_url(&link, &image, &image.layers[0]);

    let started = Instant::now();
    let (first, second) = tokio::join!(fetch(&client, &url), fetch(&client, &url));
    let elapsed = started.elapsed();

    assert_eq!(sha256(&first), image.layers[0].digest);
    assert_eq!(sha256(&second), image.layers[0].digest);
    let bits = (first.len() + second.len()) as f64 * 8.0;
    let at_full_rate = Duration::from_secs_f64(bits / 8_000_000.0);
    assert!(
        elapsed >= at_full_rate.mul_f64(0.8),
        "{bits} bits took {elapsed:?} through 8 Mbit/s; at that rate they need {at_full_rate:?}"
    );
}

#[tokio::test]
async fn a_download_cut_by_the_link_resumes_with_range_requests_to_the_right_digest() {
    const DROP_EVERY: u64 = 512 * 1024;
    let image = push_padding("drop", BLOB_BYTES).await;
    let blob = &image.layers[0];
    let link =
        link(LinkConfig { drop_every_bytes: Some(DROP_EVERY), ..LinkConfig::default() }).await;
    let client = client();
    let url = blob_url(&link, &image, blob);

    let mut received = Vec::new();
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let broke = read_body(first, &mut received).await;
    assert!(broke, "the first download ended cleanly after {} bytes", received.len());
    assert!(received.len() as u64 <= DROP_EVERY, "{} bytes before the cut", received.len());

    // Each resumed request is cut at the next drop point too, so it takes a few.
    let mut resumes = 0;
    while (received.len() as u64) < blob.size && resumes < 10 {
        resumes += 1;
        let offset = received.len();
        let response = client
            .get(&url)
            .header(header::RANGE, format!("bytes={offset}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        let content_range = response.headers()[header::CONTENT_RANGE].to_str().unwrap();
        assert!(content_range.starts_with(&format!("bytes {offset}-")), "{content_range}");
        read_body(response, &mut received).await;
    }

    assert_eq!(received.len() as u64, blob.size, "after {resumes} resumed requests");
    assert_eq!(sha256(&received), blob.digest);
    assert!(resumes >= 3, "a 2 MB blob crosses three drop points, resumed {resumes} times");
    assert_eq!(link.range_requests(), resumes);
}

#[tokio::test]
async fn a_link_that_ignores_range_answers_range_requests_with_the_whole_blob() {
    let image = push_padding("ignore-range", 100_000).await;
    let blob = &image.layers[0];
    let link = link(LinkConfig { ignore_range: true, ..LinkConfig::default() }).await;
    let client = client();
    let url = blob_url(&link, &image, blob);
    let ranged = || client.get(&url).header(header::RANGE, "bytes=100-199").send();

    let response = ranged().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert_eq!(sha256(&body), blob.digest);
    assert_eq!(link.range_requests(), 1);

    link.set_ignore_range(false);
    let response = ranged().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap(), body.slice(100..200));
    assert_eq!(link.range_requests(), 2);
}

#[tokio::test]
async fn injected_failures_answer_the_next_requests_then_let_them_through() {
    let image = push_padding("fail", 1_000).await;
    let link = link(LinkConfig::default()).await;
    let client = client();
    let url = blob_url(&link, &image, &image.config);

    link.fail_next(2, 503);
    for _ in 0..2 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
    assert_eq!(sha256(&fetch(&client, &url).await), image.config.digest);

    link.fail_next(1, 429);
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    assert_eq!(sha256(&fetch(&client, &url).await), image.config.digest);

    assert_eq!(link.requests(), 5);
    assert_eq!(link.bytes_served(), image.config.size * 2, "made-up bodies are not counted");
}

#[tokio::test]
async fn a_corrupted_blob_keeps_its_length_but_not_its_digest() {
    let image = push_padding("corrupt", 300_000).await;
    let blob = &image.layers[0];
    let link = link(LinkConfig::default()).await;
    let client = client();

    link.corrupt_blob(&blob.digest);
    let corrupted = fetch(&client, &blob_url(&link, &image, blob)).await;
    assert_eq!(corrupted.len() as u64, blob.size);
    assert_ne!(sha256(&corrupted), blob.digest);

    let registry = e2e::cluster::shared().registry;
    let direct = format!("http://{registry}/v2/{}/blobs/{}", image.repository, blob.digest);
    let intact = fetch(&client, &direct).await;
    let differing = intact.iter().zip(&corrupted).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 1, "exactly one byte is flipped");

    let config = fetch(&client, &blob_url(&link, &image, &image.config)).await;
    assert_eq!(sha256(&config), image.config.digest, "other blobs pass untouched");
}

#[tokio::test]
async fn a_paused_link_holds_downloads_until_it_flows_again() {
    let image = push_padding("pause", BLOB_BYTES).await;
    let blob = image.layers[0].clone();
    let link = link(LinkConfig { mbps: Some(16.0), ..LinkConfig::default() }).await;
    let url = blob_url(&link, &image, &blob);

    // A download in flight stops while paused, and finishes once the link flows again.
    let download = tokio::spawn({
        let client = client();
        let url = url.clone();
        async move { fetch(&client, &url).await }
    });
    for _ in 0..100 {
        if link.bytes_served() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.set_paused(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served_when_paused = link.bytes_served();
    assert!(served_when_paused > 0, "the download never started");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(link.bytes_served(), served_when_paused, "bytes flowed while paused");
    assert!(served_when_paused < blob.size, "the download finished before the pause");
    assert!(!download.is_finished());

    link.set_paused(false);
    let body = tokio::time::timeout(Duration::from_secs(20), download).await.unwrap().unwrap();
    assert_eq!(sha256(&body), blob.digest);

    // A paused link answers nothing, not even a status line.
    link.set_paused(true);
    let served = link.bytes_served();
    let timed_out = client().get(&url).timeout(Duration::from_secs(1)).send().await;
    assert!(timed_out.is_err(), "answered while paused: {:?}", timed_out.map(|r| r.status()));
    assert_eq!(link.bytes_served(), served);
}

#[tokio::test]
async fn a_link_that_is_shut_down_refuses_connections() {
    let link = link(LinkConfig::default()).await;
    let addr = link.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());

    link.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn an_index_lists_each_pushed_image_for_its_platform() {
    let registry = e2e::cluster::shared().registry;
    let repository = repository("index");
    let spec = |seed| ImageSpec {
        repository: repository.clone(),
        tag: format!("only-{seed}"),
        layers: vec![LayerSpec::Padding { bytes: 1_000, compression: LayerCompression::Gzip }],
        seed,
    };
    let (amd64, arm64) = (push(&spec(1)).await, push(&spec(2)).await);
    let other = push_padding("index-other", 1_000).await;

    let manifests = [(amd64.clone(), "linux", "amd64"), (arm64.clone(), "linux", "arm64")];
    let digest = image::push_index(registry, &repository, "multi", &manifests).await.unwrap();

    let link = link(LinkConfig::default()).await;
    let response = client()
        .get(format!("http://{}/v2/{repository}/manifests/multi", link.addr()))
        .header(header::ACCEPT, image::INDEX_MEDIA_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let index = response.bytes().await.unwrap();
    assert_eq!(sha256(&index), digest);
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let listed: Vec<(String, u64, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let digest = entry["digest"].as_str().unwrap().to_owned();
            let arch = entry["platform"]["architecture"].as_str().unwrap().to_owned();
            (digest, entry["size"].as_u64().unwrap(), arch)
        })
        .collect();
    assert_eq!(
        listed,
        [
            (amd64.manifest_digest, amd64.manifest_size, "amd64".to_owned()),
            (arm64.manifest_digest, arm64.manifest_size, "arm64".to_owned()),
        ]
    );

    let misplaced = [(other, "linux", "amd64")];
    let refused = image::push_index(registry, &repository, "bad", &misplaced).await;
    assert!(matches!(refused, Err(image::ImageError::OtherRepository { .. })), "{refused:?}");
}
