//! The operator's configuration: what every harness gets unless its spec says otherwise.

/// Where snapshots are kept when `--snapshot-location` is not given.
pub const DEFAULT_SNAPSHOT_LOCATION: &str = "s3://substrate-snapshots";

/// The port the gateway listens on inside the sandbox when `--gateway-port` is not given: the
/// OpenClaw gateway's own default.
pub const DEFAULT_GATEWAY_PORT: u16 = 18789;

/// How harness-operator builds the children of every harness.
///
/// Parsed from flags and environment variables by `main` (it is a [`clap::Args`]); tests build
/// one with [`Config::default`] and struct update syntax.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Config {
    /// Image that replaces the openclaw backend's default image for every harness that does
    /// not set spec.substrate.workloadImage, e.g. a gateway built for tests. Must be pinned by
    /// digest: <repository>@sha256:<64 hex digits>. The image's own entrypoint runs; it gets
    /// the same environment as the default image (GATEWAY_TOKEN, GATEWAY_PORT, OPENCLAW_CONFIG
    /// and the provider's API key).
    #[arg(long, env = "HARNESS_WORKLOAD_IMAGE", value_parser = parse_pinned_image)]
    pub workload_image: Option<String>,

    /// S3 location, s3://<bucket>[/<prefix>], under which each ActorTemplate keeps its
    /// snapshots, at <location>/<namespace>/<name>.
    #[arg(
        long,
        env = "HARNESS_SNAPSHOT_LOCATION",
        default_value = DEFAULT_SNAPSHOT_LOCATION,
        value_parser = parse_snapshot_location,
    )]
    pub snapshot_location: String,

    /// Port the gateway listens on inside the sandbox; also the port of its readiness check.
    #[arg(
        long,
        env = "HARNESS_GATEWAY_PORT",
        default_value_t = DEFAULT_GATEWAY_PORT,
        value_parser = clap::value_parser!(u16).range(1..),
    )]
    pub gateway_port: u16,

    /// Only reconcile AgentHarnesses in this namespace; every namespace when unset.
    #[arg(long, env = "HARNESS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workload_image: None,
            snapshot_location: DEFAULT_SNAPSHOT_LOCATION.to_owned(),
            gateway_port: DEFAULT_GATEWAY_PORT,
            watch_namespace: None,
        }
    }
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidFlag {
    /// The image is named by tag, or its digest is not a sha256 digest.
    #[error(
        "{image:?} is not pinned by digest; give <repository>@sha256:<64 lowercase hex digits> \
         so that every node and every snapshot runs the same bytes"
    )]
    ImageNotPinned {
        /// The value given.
        image: String,
    },
    /// The snapshot location is not an `s3://` URL with a valid bucket name.
    #[error(
        "{location:?} is not an S3 location; give s3://<bucket>[/<prefix>] with a bucket name of \
         3 to 63 lowercase letters, digits, '.' or '-'"
    )]
    NotAnS3Location {
        /// The value given.
        location: String,
    },
}

/// Checks that `image` is `<repository>@sha256:<64 lowercase hex digits>`, the form the
/// ActorTemplate's schema requires, and returns it unchanged.
///
/// # Errors
///
/// [`InvalidFlag::ImageNotPinned`] for a tag, a missing or malformed digest.
pub fn parse_pinned_image(image: &str) -> Result<String, InvalidFlag> {
    let pinned = image.split_once('@').is_some_and(|(repository, digest)| {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        !repository.is_empty()
            && hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if pinned {
        Ok(image.to_owned())
    } else {
        Err(InvalidFlag::ImageNotPinned { image: image.to_owned() })
    }
}

/// Checks that `location` is `s3://<bucket>[/<prefix>]` with a bucket name the
/// ActorTemplate's schema accepts, and returns it without trailing slashes.
///
/// # Errors
///
/// [`InvalidFlag::NotAnS3Location`] for another scheme or an invalid bucket name.
pub fn parse_snapshot_location(location: &str) -> Result<String, InvalidFlag> {
    let trimmed = location.trim_end_matches('/');
    let bucket = trimmed.strip_prefix("s3://").map(|rest| rest.split('/').next().unwrap_or(rest));
    let valid = bucket.is_some_and(|bucket| {
        let bytes = bucket.as_bytes();
        let inner =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-';
        let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        (3..=63).contains(&bytes.len())
            && bytes.iter().all(inner)
            && bytes.first().is_some_and(edge)
            && bytes.last().is_some_and(edge)
    });
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(InvalidFlag::NotAnS3Location { location: location.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:d52bee415dc4c0dba7164f9eabe727574c056d4f211781f20af249707883a3b4";

    #[test]
    fn an_image_pinned_by_digest_is_accepted() {
        let image = format!("127.0.0.1:5000/e2e/gateway@{DIGEST}");

        assert_eq!(parse_pinned_image(&image).unwrap(), image);
    }

    #[test]
    fn images_not_pinned_by_digest_are_refused() {
        let cases = [
            ("a tag", "ghcr.io/kagent-dev/gateway:latest".to_owned()),
            ("no repository", format!("@{DIGEST}")),
            ("a short digest", "ghcr.io/g@sha256:abc".to_owned()),
            ("uppercase hex", format!("ghcr.io/g@{}", DIGEST.to_uppercase())),
            ("another algorithm", format!("ghcr.io/g@sha512:{}", &DIGEST[7..])),
        ];

        for (name, image) in cases {
            let error = parse_pinned_image(&image).expect_err(name);
            assert!(error.to_string().contains("pinned by digest"), "{name}: {error}");
        }
    }

    #[test]
    fn a_snapshot_location_loses_its_trailing_slash() {
        assert_eq!(parse_snapshot_location("s3://snapshots/dev/").unwrap(), "s3://snapshots/dev");
        assert_eq!(
            parse_snapshot_location(DEFAULT_SNAPSHOT_LOCATION).unwrap(),
            "s3://substrate-snapshots"
        );
    }

    #[test]
    fn snapshot_locations_outside_s3_or_with_bad_buckets_are_refused() {
        for location in ["https://bucket/prefix", "s3://", "s3://ab", "s3://Bucket", "s3://-bucket"]
        {
            assert!(parse_snapshot_location(location).is_err(), "{location} was accepted");
        }
    }
}
