//! Tests of the link proxy's pieces: drop points, the token bucket, blob paths, byte flips.

use super::*;

#[test]
fn the_meter_cuts_once_at_each_multiple_of_the_drop_interval() {
    let mut meter = Meter { drop_every: Some(100), ..Meter::default() };

    assert_eq!(meter.admit(60), 60);
    assert_eq!(meter.admit(60), 40, "the chunk that crosses 100 stops at 100");
    assert_eq!(meter.admit(60), 60, "the drop point at 100 has been used");
    assert_eq!(meter.admit(40), 40, "a chunk ending exactly at 200 is not cut");
    assert_eq!(meter.admit(10), 0, "the next byte after 200 is");
    assert_eq!(meter.admit(10), 10);
    assert_eq!(meter.served, 210);
}

#[test]
fn a_meter_without_drop_interval_admits_everything() {
    let mut meter = Meter::default();
    assert_eq!(meter.admit(1 << 40), 1 << 40);
    meter.drop_every = Some(0);
    assert_eq!(meter.admit(5), 5);
    assert_eq!(meter.served, (1 << 40) + 5);
}

#[test]
fn the_bucket_lets_a_burst_through_then_queues_chunks_at_its_rate() {
    let start = Instant::now();
    let mut bucket = Bucket::new(Some(1_000_000.0), start);

    let first = bucket.reserve(CHUNK, start);
    assert_eq!(bucket.wait(first, start), Some(Duration::ZERO));

    let second = bucket.reserve(CHUNK, start);
    let third = bucket.reserve(CHUNK, start);
    let chunk_time = Duration::from_secs_f64(CHUNK as f64 / 1_000_000.0);
    let waits = [bucket.wait(second, start).unwrap(), bucket.wait(third, start).unwrap()];
    assert!(waits[0].abs_diff(chunk_time) < Duration::from_micros(10), "{waits:?}");
    assert!(waits[1].abs_diff(chunk_time * 2) < Duration::from_micros(10), "{waits:?}");

    assert_eq!(bucket.wait(second, start + chunk_time), Some(Duration::ZERO));
}

#[test]
fn an_idle_bucket_saves_up_no_more_than_one_burst() {
    let start = Instant::now();
    let mut bucket = Bucket::new(Some(1_000_000.0), start);
    let later = start + Duration::from_secs(60);

    let first = bucket.reserve(CHUNK, later);
    let second = bucket.reserve(CHUNK, later);
    assert_eq!(bucket.wait(first, later), Some(Duration::ZERO));
    assert!(bucket.wait(second, later).unwrap() > Duration::ZERO);
}

#[test]
fn a_bucket_at_zero_rate_waits_for_a_change_and_an_unlimited_one_not_at_all() {
    let start = Instant::now();
    let mut bucket = Bucket::new(Some(0.0), start);
    bucket.reserve(CHUNK, start);
    let stuck = bucket.reserve(CHUNK, start);
    assert_eq!(bucket.wait(stuck, start + Duration::from_secs(5)), None);

    bucket.set_rate(None, start + Duration::from_secs(5));
    assert_eq!(bucket.wait(stuck, start + Duration::from_secs(5)), Some(Duration::ZERO));
}

#[test]
fn blob_paths_yield_their_digest_and_other_paths_none() {
    assert_eq!(blob_digest("/v2/a/b/blobs/sha256:ab"), Some("sha256:ab"));
    assert_eq!(blob_digest("/v2/a/manifests/latest"), None);
    assert_eq!(blob_digest("/v2/a/blobs/uploads/123"), None);
    assert_eq!(blob_digest("/v2/a/blobs/"), None);
}

#[test]
fn flipping_changes_only_the_byte_at_the_offset() {
    let chunk = Bytes::from_static(&[1, 2, 3, 4]);
    assert_eq!(flip_byte(chunk.clone(), 10, 12).as_ref(), [1, 2, 3 ^ 0xff, 4]);
    assert_eq!(flip_byte(chunk.clone(), 10, 14), chunk);
    assert_eq!(flip_byte(chunk.clone(), 10, 9), chunk);
}
