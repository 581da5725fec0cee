//! Tests of test images: layer contents, digests, seeds and sizes.

use super::*;

#[test]
fn padding_layers_differ_in_size_and_sum_to_the_total() {
    for total in [5, 6, 99, 100, 1_000_003, 2 << 30] {
        let sizes = padding_layers(total);
        assert_eq!(sizes.len(), 5, "{total}: {sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), total, "{total}: {sizes:?}");
        assert!(sizes.iter().all(|size| *size >= 1), "{total}: {sizes:?}");
    }
    let sizes = padding_layers(1_000_000);
    assert!(sizes.windows(2).all(|pair| pair[0] > pair[1]), "{sizes:?}");
}

#[test]
fn padding_layers_of_fewer_than_five_bytes_are_one_byte_each() {
    assert_eq!(padding_layers(0), Vec::<u64>::new());
    assert_eq!(padding_layers(3), vec![1, 1, 1]);
}

#[test]
fn a_padding_layer_is_a_tar_of_one_file_and_its_digests_match_its_bytes() {
    let workdir = tempfile::tempdir().unwrap();
    let layer = LayerSpec::Padding { bytes: 100_000, compression: LayerCompression::Gzip };
    let file = LayerFile { path: workdir.path().join("layer") };
    let built = build_layer(&layer, 7, 0, file).unwrap();

    let stored = std::fs::read(&built.file.path).unwrap();
    assert_eq!(built.descriptor.size, stored.len() as u64);
    assert_eq!(built.descriptor.digest, sha256_digest(Sha256::digest(&stored)));
    assert!(stored.len() > 100_000, "random bytes do not compress: {}", stored.len());

    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(stored.as_slice()).read_to_end(&mut tar).unwrap();
    assert_eq!(built.diff_id, sha256_digest(Sha256::digest(&tar)));
    let mut archive = tar::Archive::new(tar.as_slice());
    let sizes: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.path().unwrap().display().to_string(), entry.size())
        })
        .collect();
    assert_eq!(sizes, [("padding-0".to_owned(), 100_000)]);
}

#[test]
fn the_same_seed_builds_the_same_blob_and_another_seed_a_different_one() {
    let workdir = tempfile::tempdir().unwrap();
    let layer = LayerSpec::Padding { bytes: 10_000, compression: LayerCompression::None };
    let build = |seed, name: &str| {
        let file = LayerFile { path: workdir.path().join(name) };
        build_layer(&layer, seed, 0, file).unwrap().descriptor
    };
    assert_eq!(build(1, "a"), build(1, "b"));
    assert_ne!(build(1, "c").digest, build(2, "d").digest);
}

#[test]
fn a_files_layer_lists_parent_directories_before_their_files() {
    let workdir = tempfile::tempdir().unwrap();
    let files = vec![
        ("/etc/app/config".to_owned(), b"x=1".to_vec(), 0o600),
        ("etc/app/run.sh".to_owned(), b"#!/bin/sh".to_vec(), 0o755),
    ];
    let layer = LayerSpec::Files { files, compression: LayerCompression::None };
    let built = build_layer(&layer, 0, 0, LayerFile { path: workdir.path().join("l") }).unwrap();
    assert_eq!(built.diff_id, built.descriptor.digest, "an uncompressed layer is its tar");

    let stored = std::fs::read(&built.file.path).unwrap();
    let mut archive = tar::Archive::new(stored.as_slice());
    let entries: Vec<(String, u32)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.path().unwrap().display().to_string(), entry.header().mode().unwrap())
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("etc".to_owned(), 0o755),
            ("etc/app".to_owned(), 0o755),
            ("etc/app/config".to_owned(), 0o600),
            ("etc/app/run.sh".to_owned(), 0o755),
        ]
    );
}

#[test]
fn a_layer_file_is_removed_when_dropped() {
    let workdir = tempfile::tempdir().unwrap();
    let path = workdir.path().join("l");
    let layer = LayerSpec::RawTar { tar: vec![0; 1024], compression: LayerCompression::Gzip };
    drop(build_layer(&layer, 0, 0, LayerFile { path: path.clone() }).unwrap());
    assert!(!path.exists());
}
