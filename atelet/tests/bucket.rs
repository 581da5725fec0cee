//! The snapshot bucket against a real S3 server (the local cluster's s3s-fs): multipart
//! uploads that go on after an interruption, downloads that go on with `Range` and check
//! their digest, and errors that name the object and never a credential.

use std::{path::Path, sync::Arc};

use atelet::bucket::{Bucket, BucketConfig, BucketError, PART_SIZE};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

const MIB: usize = 1024 * 1024;

async fn bucket(state: &Path) -> Bucket {
    let s3 = &e2e::cluster::shared().s3;
    let config = BucketConfig {
        bucket: s3.bucket.clone(),
        endpoint: Some(s3.url.clone()),
        region: "us-east-1".to_owned(),
        credentials_file: Some(s3.credentials_file.clone()),
    };
    Bucket::connect(&config, state).await
}

/// A file of `len` bytes that differ from one test to the next, and their sha256.
fn write_file(path: &Path, len: usize, seed: u8) -> String {
    let bytes: Vec<u8> =
        (0..len).map(|i| (i.wrapping_mul(31) as u8) ^ seed ^ (i >> 13) as u8).collect();
    std::fs::write(path, &bytes).unwrap();
    hex::encode(Sha256::digest(&bytes))
}

fn key(name: &str) -> String {
    format!("bucket-test-{}/{name}", std::process::id())
}

#[tokio::test]
async fn a_large_file_goes_up_in_parts_and_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(dir.path()).await;
    let source = dir.path().join("checkpoint.img");
    let sha = write_file(&source, 20 * MIB, 1);

    let uploaded = bucket.upload_file(&key("whole"), &source, |_| {}).await.unwrap();
    let dest = dir.path().join("restored.img");
    let downloaded = bucket.download_file(&key("whole"), &dest, &sha).await.unwrap();

    assert_eq!(uploaded.parts, 3);
    assert_eq!(uploaded.parts_reused, 0);
    assert_eq!(bucket.size(&key("whole")).await.unwrap(), Some(20 * MIB as u64));
    assert_eq!(downloaded, 20 * MIB as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&source).unwrap());
    assert!(!dest.with_extension("partial").exists());
}

#[tokio::test]
async fn an_interrupted_upload_goes_on_from_the_parts_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(dir.path()).await;
    let source = dir.path().join("checkpoint.img");
    let sha = write_file(&source, 5 * PART_SIZE as usize, 2);

    // Stop the first attempt as a crash would, once two parts are stored.
    let two_parts = Arc::new(Notify::new());
    let notify = Arc::clone(&two_parts);
    let resumed = key("resumed");
    let first = bucket.upload_file(&resumed, &source, move |done| {
        if done >= 2 * PART_SIZE {
            notify.notify_one();
        }
    });
    tokio::select! {
        result = first => panic!("the upload finished before it was interrupted: {result:?}"),
        () = two_parts.notified() => {}
    }
    assert_eq!(bucket.size(&key("resumed")).await.unwrap(), None, "no object before completion");

    let second = bucket.upload_file(&key("resumed"), &source, |_| {}).await.unwrap();

    assert_eq!(second.parts, 5);
    assert!((2..5).contains(&second.parts_reused), "{second:?}");
    let dest = dir.path().join("restored.img");
    bucket.download_file(&key("resumed"), &dest, &sha).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&source).unwrap());
}

#[tokio::test]
async fn a_partial_download_goes_on_and_a_wrong_digest_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(dir.path()).await;
    let source = dir.path().join("layer.tar.gz");
    let sha = write_file(&source, 3 * MIB, 3);
    bucket.upload_file(&key("partial"), &source, |_| {}).await.unwrap();

    // An earlier attempt stopped after 1 MiB.
    let dest = dir.path().join("layer");
    std::fs::write(dest.with_extension("partial"), &std::fs::read(&source).unwrap()[..MIB])
        .unwrap();
    let downloaded = bucket.download_file(&key("partial"), &dest, &sha).await.unwrap();
    assert_eq!(downloaded, 3 * MIB as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&source).unwrap());

    let wrong = dir.path().join("wrong");
    let error = bucket.download_file(&key("partial"), &wrong, &"0".repeat(64)).await.unwrap_err();
    assert!(matches!(error, BucketError::Digest { .. }), "{error}");
    assert!(error.to_string().contains(&key("partial")), "{error}");
    assert!(!wrong.exists() && !wrong.with_extension("partial").exists());
}

#[tokio::test]
async fn an_unreachable_bucket_is_an_error_naming_the_object_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = &e2e::cluster::shared().s3;
    let closed = e2e::port::free().unwrap();
    let config = BucketConfig {
        bucket: s3.bucket.clone(),
        endpoint: Some(format!("http://127.0.0.1:{closed}")),
        region: "us-east-1".to_owned(),
        credentials_file: Some(s3.credentials_file.clone()),
    };
    let bucket = Bucket::connect(&config, dir.path()).await;
    let source = dir.path().join("manifest.json");
    write_file(&source, 1000, 4);

    let error = bucket.upload_file(&key("unreachable"), &source, |_| {}).await.unwrap_err();

    let message = error.to_string();
    assert!(message.contains(&format!("s3://{}/{}", s3.bucket, key("unreachable"))), "{message}");
    let credentials = std::fs::read_to_string(&s3.credentials_file).unwrap();
    for secret in credentials.lines().filter_map(|line| line.split_once(" = ")).map(|(_, v)| v) {
        assert!(!message.contains(secret), "the error shows a credential: {message}");
    }
}

#[tokio::test]
async fn deleting_a_prefix_leaves_other_objects() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(dir.path()).await;
    for name in ["gone/a", "gone/b", "kept/c"] {
        bucket.put(&key(name), name.as_bytes().to_vec()).await.unwrap();
    }

    let deleted = bucket.delete_prefix(&key("gone/")).await.unwrap();

    assert_eq!(deleted, 2);
    assert_eq!(bucket.get(&key("gone/a")).await.unwrap(), None);
    assert_eq!(bucket.get(&key("kept/c")).await.unwrap().as_deref(), Some(&b"kept/c"[..]));
}
