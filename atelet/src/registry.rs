//! Reading images from an OCI registry with `oci-client`: resolving a reference to the
//! node's platform manifest, and streaming blobs from an offset.

use std::{collections::HashMap, path::Path, time::Duration};

use base64::Engine as _;
use futures::stream::BoxStream;
use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol},
    errors::OciDistributionError,
    manifest::{ImageIndexEntry, OciDescriptor, OciManifest},
    secrets::RegistryAuth,
};
use serde::Deserialize;

use crate::digest::Digest;

/// Why an image could not be read from its registry.
///
/// [`RegistryError::is_retryable`] tells transient faults (retried with backoff, keeping the
/// bytes on disk) from terminal ones (the operation fails with [`RegistryError::reason`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse, or is not pinned by digest.
    #[error("invalid image reference {reference:?}: {message}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        message: String,
    },
    /// The registry has no manifest for the reference.
    #[error("image {reference} was not found in its registry; check the repository and digest")]
    ManifestUnknown {
        /// The reference.
        reference: String,
    },
    /// The registry refused the credentials, or wants some and none are configured.
    #[error(
        "the registry refused access to {reference}; configure pull credentials for {registry} \
         (a docker config file) or check that they are still valid"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry host.
        registry: String,
    },
    /// The image index has no manifest for this node's platform.
    #[error("image {reference} has no manifest for {platform}; build the image for it")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// e.g. `linux/amd64`.
        platform: String,
    },
    /// A manifest or layer has a media type this node cannot use.
    #[error("image {reference} uses unsupported media type {media_type}")]
    UnsupportedMediaType {
        /// The reference.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// The manifest fetched does not hash to the digest it was asked by.
    #[error("the manifest of {reference} does not match its digest (got {actual})")]
    ManifestDigestMismatch {
        /// The reference.
        reference: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A network fault or a server-side error (5xx, 429): worth retrying.
    #[error("registry request for {what} failed: {message}")]
    Transient {
        /// What was requested.
        what: String,
        /// The fault, without credentials.
        message: String,
    },
    /// Any other refusal from the registry.
    #[error("registry refused {what}: {message}")]
    Refused {
        /// What was requested.
        what: String,
        /// The registry's answer.
        message: String,
    },
    /// The credentials file could not be read.
    #[error("reading registry credentials {path}: {message}")]
    Credentials {
        /// The file.
        path: String,
        /// What went wrong (never the credentials themselves).
        message: String,
    },
}

impl RegistryError {
    /// Whether trying again, unchanged, can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Transient { .. })
    }

    /// The CamelCase reason a condition reports for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::InvalidReference { .. } => "InvalidImageReference",
            RegistryError::ManifestUnknown { .. } => "ImageNotFound",
            RegistryError::Unauthorized { .. } => "Unauthorized",
            RegistryError::NoMatchingPlatform { .. } => "NoMatchingPlatform",
            RegistryError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            RegistryError::ManifestDigestMismatch { .. } => "DigestMismatch",
            RegistryError::Transient { .. } => "RegistryUnavailable",
            RegistryError::Refused { .. } => "RegistryRefused",
            RegistryError::Credentials { .. } => "InvalidCredentials",
        }
    }

    fn classify(
        error: OciDistributionError,
        reference: &str,
        registry: &str,
        what: &str,
    ) -> RegistryError {
        let what = what.to_owned();
        match error {
            OciDistributionError::ImageManifestNotFoundError(_) => {
                RegistryError::ManifestUnknown { reference: reference.to_owned() }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
                reference: reference.to_owned(),
                registry: registry.to_owned(),
            },
            OciDistributionError::UnsupportedMediaTypeError(media_type)
            | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
                RegistryError::UnsupportedMediaType { reference: reference.to_owned(), media_type }
            }
            OciDistributionError::ImageIndexParsingNoPlatformResolverError => {
                RegistryError::NoMatchingPlatform {
                    reference: reference.to_owned(),
                    platform: PLATFORM.to_owned(),
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 | 403 => RegistryError::Unauthorized {
                    reference: reference.to_owned(),
                    registry: registry.to_owned(),
                },
                404 => RegistryError::ManifestUnknown { reference: reference.to_owned() },
                408 | 429 | 500..=599 => {
                    RegistryError::Transient { what, message: format!("HTTP {code}: {message}") }
                }
                _ => RegistryError::Refused { what, message: format!("HTTP {code}: {message}") },
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<String> =
                    envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
                let codes = codes.join(", ");
                if codes.contains("ManifestUnknown") || codes.contains("NameUnknown") {
                    RegistryError::ManifestUnknown { reference: reference.to_owned() }
                } else if codes.contains("Unauthorized") || codes.contains("Denied") {
                    RegistryError::Unauthorized {
                        reference: reference.to_owned(),
                        registry: registry.to_owned(),
                    }
                } else if codes.contains("TooManyRequests") {
                    RegistryError::Transient { what, message: codes }
                } else {
                    RegistryError::Refused { what, message: codes }
                }
            }
            OciDistributionError::RequestError(error) => {
                // reqwest errors name the URL, which never carries credentials here.
                RegistryError::Transient { what, message: error.without_url().to_string() }
            }
            OciDistributionError::IoError(error) => {
                RegistryError::Transient { what, message: error.to_string() }
            }
            other => RegistryError::Refused { what, message: other.to_string() },
        }
    }
}

/// The only platform sandboxes run on.
pub const PLATFORM: &str = "linux/amd64";

/// One layer (or the config) of an image, as its manifest describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Content digest.
    pub digest: Digest,
    /// Size in bytes, as stored (compressed for layers).
    pub size: u64,
    /// e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
}

/// An image reference resolved to the platform manifest this node runs.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The reference as given.
    pub reference: String,
    /// Digest of the platform manifest (differs from the reference's for an index).
    pub manifest_digest: Digest,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

impl ResolvedImage {
    /// The bytes a pull moves: the config and every layer, as stored.
    pub fn total_bytes(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// A blob's bytes as they arrive.
pub struct BlobStream {
    /// Whether the response starts at the requested offset (206) rather than at byte 0 (a
    /// registry that ignored `Range` and answered 200).
    pub from_offset: bool,
    /// The bytes.
    pub stream: BoxStream<'static, std::io::Result<bytes::Bytes>>,
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// `host:port`s reached over plain HTTP. Everything else uses HTTPS.
    pub insecure: Vec<String>,
    /// Credentials by registry host, from a docker config file.
    pub credentials: HashMap<String, (String, String)>,
    /// Give up a request when no byte arrives for this long.
    pub read_timeout: Duration,
}

impl RegistryConfig {
    /// Reads credentials from a docker config file (`{"auths": {"host": {"auth": "…"}}}`), as
    /// mounted from a `kubernetes.io/dockerconfigjson` Secret.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or parsed; the error never quotes its content.
    pub fn load_credentials(&mut self, path: &Path) -> Result<(), RegistryError> {
        #[derive(Deserialize)]
        struct DockerConfig {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let fail = |message: String| RegistryError::Credentials {
            path: path.display().to_string(),
            message,
        };

        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let config: DockerConfig = serde_json::from_slice(&bytes)
            .map_err(|_| fail("not a docker config JSON file".into()))?;
        for (host, entry) in config.auths {
            let pair = match (entry.username, entry.password, entry.auth) {
                (Some(user), Some(password), _) => (user, password),
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| fail(format!("the auth of {host} is not base64")))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| fail(format!("the auth of {host} is not UTF-8")))?;
                    let (user, password) = decoded
                        .split_once(':')
                        .ok_or_else(|| fail(format!("the auth of {host} is not user:password")))?;
                    (user.to_owned(), password.to_owned())
                }
                _ => {
                    return Err(fail(format!("{host} has neither auth nor username and password")));
                }
            };
            let host = host.trim_start_matches("https://").trim_start_matches("http://");
            self.credentials.insert(host.trim_end_matches('/').to_owned(), pair);
        }
        Ok(())
    }
}

/// A registry client shared by every pull of the node.
pub struct Registry {
    client: Client,
    config: RegistryConfig,
}

fn resolve_platform(manifests: &[ImageIndexEntry]) -> Option<String> {
    oci_client::client::linux_amd64_resolver(manifests)
}

impl Registry {
    /// Builds a client for `config`.
    pub fn new(config: RegistryConfig) -> Registry {
        let client_config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            platform_resolver: Some(Box::new(resolve_platform)),
            read_timeout: Some(config.read_timeout),
            connect_timeout: Some(Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        Registry { client: Client::new(client_config), config }
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        match self.config.credentials.get(reference.resolve_registry()) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Parses a reference, which must be pinned by digest.
    ///
    /// # Errors
    ///
    /// [`RegistryError::InvalidReference`].
    pub fn parse(reference: &str) -> Result<(Reference, Digest), RegistryError> {
        let invalid = |message: &str| RegistryError::InvalidReference {
            reference: reference.to_owned(),
            message: message.to_owned(),
        };
        let parsed: Reference = reference.parse().map_err(|_| invalid("not an image reference"))?;
        let digest = parsed
            .digest()
            .ok_or_else(|| invalid("not pinned by digest (<repository>@sha256:<hex>)"))?
            .parse::<Digest>()
            .map_err(|_| invalid("its digest is not sha256:<64 hex digits>"))?;
        Ok((parsed, digest))
    }

    /// Resolves a digest-pinned reference to this node's platform manifest.
    ///
    /// # Errors
    ///
    /// A [`RegistryError`]; see [`RegistryError::is_retryable`].
    pub async fn resolve(&self, reference: &str) -> Result<ResolvedImage, RegistryError> {
        let (parsed, pinned) = Registry::parse(reference)?;
        let registry = parsed.resolve_registry().to_owned();
        let classify = |e| RegistryError::classify(e, reference, &registry, "the manifest");

        let (manifest, digest) =
            self.client.pull_manifest(&parsed, &self.auth(&parsed)).await.map_err(classify)?;
        let manifest = match manifest {
            OciManifest::Image(image) => {
                if digest != pinned.to_string() {
                    return Err(RegistryError::ManifestDigestMismatch {
                        reference: reference.to_owned(),
                        actual: digest,
                    });
                }
                (image, digest)
            }
            OciManifest::ImageIndex(index) => {
                let platform = resolve_platform(&index.manifests).ok_or_else(|| {
                    RegistryError::NoMatchingPlatform {
                        reference: reference.to_owned(),
                        platform: PLATFORM.to_owned(),
                    }
                })?;
                let by_digest = parsed.clone_with_digest(platform);
                let (manifest, digest) = self
                    .client
                    .pull_image_manifest(&by_digest, &self.auth(&parsed))
                    .await
                    .map_err(classify)?;
                (manifest, digest)
            }
        };
        let (image, digest) = manifest;

        let descriptor = |d: &OciDescriptor| -> Result<Descriptor, RegistryError> {
            Ok(Descriptor {
                digest: d.digest.parse().map_err(|_| RegistryError::Refused {
                    what: "the manifest".into(),
                    message: format!("invalid digest {:?}", d.digest),
                })?,
                size: u64::try_from(d.size).unwrap_or(0),
                media_type: d.media_type.clone(),
            })
        };
        Ok(ResolvedImage {
            reference: reference.to_owned(),
            manifest_digest: digest.parse().map_err(|_| RegistryError::ManifestDigestMismatch {
                reference: reference.to_owned(),
                actual: digest.clone(),
            })?,
            config: descriptor(&image.config)?,
            layers: image.layers.iter().map(descriptor).collect::<Result<_, _>>()?,
        })
    }

    /// Starts streaming a blob of `reference`'s repository from byte `offset`.
    ///
    /// # Errors
    ///
    /// A [`RegistryError`]; see [`RegistryError::is_retryable`].
    pub async fn fetch(
        &self,
        reference: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let (parsed, _) = Registry::parse(reference)?;
        let registry = parsed.resolve_registry().to_owned();
        let what = format!("blob {}", blob.digest);
        let classify = |e| RegistryError::classify(e, reference, &registry, &what);
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.to_string(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };

        // The manifest request stored the registry's token for this repository; after a
        // restart the resolve step runs first again, so it is always there.
        let response = if offset == 0 {
            let stream =
                self.client.pull_blob_stream(&parsed, &descriptor).await.map_err(classify)?;
            BlobStream { from_offset: true, stream: stream.stream }
        } else {
            match self
                .client
                .pull_blob_stream_partial(&parsed, &descriptor, offset, None)
                .await
                .map_err(classify)?
            {
                oci_client::client::BlobResponse::Partial(stream) => {
                    BlobStream { from_offset: true, stream: stream.stream }
                }
                oci_client::client::BlobResponse::Full(stream) => {
                    BlobStream { from_offset: false, stream: stream.stream }
                }
            }
        };
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_auth_or_from_username_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let json = format!(
            r#"{{"auths": {{"https://ghcr.io/": {{"auth": "{auth}"}},
                "registry.local:5000": {{"username": "u", "password": "p"}}}}}}"#
        );
        std::fs::write(&path, json).unwrap();
        let mut config = RegistryConfig::default();

        config.load_credentials(&path).unwrap();

        assert_eq!(config.credentials["ghcr.io"], ("robot".to_owned(), "s3cret".to_owned()));
        assert_eq!(config.credentials["registry.local:5000"], ("u".to_owned(), "p".to_owned()));
    }

    #[test]
    fn a_broken_credentials_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"ghcr.io": {"auth": "not base64 s3cret!"}}}"#).unwrap();

        let error = RegistryConfig::default().load_credentials(&path).unwrap_err();

        assert!(error.to_string().contains("ghcr.io"), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn only_digest_pinned_references_are_accepted() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(Registry::parse(&format!("registry.local:5000/app@{digest}")).is_ok());

        for reference in ["registry.local:5000/app:latest", "registry.local:5000/app@sha256:abc"] {
            let error = Registry::parse(reference).unwrap_err();
            assert_eq!(error.reason(), "InvalidImageReference", "{reference}: {error}");
        }
    }
}
