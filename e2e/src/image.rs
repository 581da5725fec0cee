//! Test images: incompressible layers of chosen sizes, pushed to the local registry, so that
//! no test fetches anything from the internet.
//!
//! [`push`] builds each layer as a file in a work directory, hashing while it streams, and
//! uploads it through the distribution API before building the next; memory stays bounded and
//! the disk holds one layer at a time, whatever the size of the image.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, BufWriter, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use flate2::{Compression, write::GzEncoder};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use reqwest::{StatusCode, Url, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio_util::io::ReaderStream;

/// The media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The media type of an OCI image configuration.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The largest piece of pseudo-random padding generated at once.
const NOISE_CHUNK: usize = 1024 * 1024;

/// How a layer's tar is stored in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    /// Gzip at its fastest level: `application/vnd.oci.image.layer.v1.tar+gzip`.
    Gzip,
    /// The tar as it is: `application/vnd.oci.image.layer.v1.tar`.
    None,
}

impl LayerCompression {
    /// The OCI media type of a layer stored this way.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// An image to build and push with [`push`].
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// The repository in the registry, e.g. `e2e/pull-1a2b`; give each test its own.
    pub repository: String,
    /// The tag the manifest is pushed under.
    pub tag: String,
    /// The layers, lowest first.
    pub layers: Vec<LayerSpec>,
    /// Seeds the padding: the same seed, sizes and compression give the same blobs, and a
    /// different seed gives different ones.
    pub seed: u64,
}

/// What one layer of an [`ImageSpec`] holds.
#[derive(Clone, Debug)]
pub enum LayerSpec {
    /// One file of `bytes` pseudo-random bytes, which no compression shrinks: the stored
    /// layer is about `bytes` long whatever the compression.
    Padding {
        /// The size of the padding file.
        bytes: u64,
        /// How the tar is stored.
        compression: LayerCompression,
    },
    /// Regular files, each given as (path in the root filesystem, content, mode). Parent
    /// directories are added with mode 0755.
    Files {
        /// The files, in the order they appear in the tar.
        files: Vec<(String, Vec<u8>, u32)>,
        /// How the tar is stored.
        compression: LayerCompression,
    },
    /// A ready-made tar, e.g. one with whiteouts, links or hostile paths, stored as given.
    RawTar {
        /// The uncompressed tar.
        tar: Vec<u8>,
        /// How the tar is stored.
        compression: LayerCompression,
    },
}

impl LayerSpec {
    fn compression(&self) -> LayerCompression {
        match self {
            LayerSpec::Padding { compression, .. }
            | LayerSpec::Files { compression, .. }
            | LayerSpec::RawTar { compression, .. } => *compression,
        }
    }
}

/// A reference to a blob: what the manifest lists for the config and each layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type, e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// `sha256:<64 hex digits>` of the stored bytes.
    pub digest: String,
    /// The stored size in bytes.
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256_digest(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }
}

/// An image [`push`] has stored in the registry.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// The image pinned by digest at the registry it was pushed to:
    /// `127.0.0.1:<port>/<repository>@sha256:…`.
    pub reference: String,
    /// The repository within the registry.
    pub repository: String,
    /// The digest of the manifest.
    pub manifest_digest: String,
    /// The size of the manifest in bytes.
    pub manifest_size: u64,
    /// The image configuration blob.
    pub config: Descriptor,
    /// The layers, lowest first.
    pub layers: Vec<Descriptor>,
}

impl PushedImage {
    /// The stored size of all layers together: what a pull downloads besides the manifest and
    /// the config.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(|layer| layer.size).sum()
    }

    /// The same image pinned by digest, but at `host`, e.g. a [`Link`](crate::link::Link) in
    /// front of the registry.
    pub fn reference_via(&self, host: SocketAddr) -> String {
        format!("{host}/{}@{}", self.repository, self.manifest_digest)
    }
}

/// Why an image could not be built or pushed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The HTTP client could not be set up.
    #[error("building an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The work directory could not be created.
    #[error("creating the work directory {path}: {source}")]
    Workdir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A layer could not be written to the work directory.
    #[error("building layer {index} of {repository} in {workdir}: {source}")]
    BuildLayer {
        /// `<registry>/<repository>`.
        repository: String,
        /// Which layer, counting from 0 at the bottom.
        index: usize,
        /// Where it was written.
        workdir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Asking the registry whether it has a blob failed.
    #[error("checking whether {repository} has blob {digest}: {source}")]
    CheckBlob {
        /// `<registry>/<repository>`.
        repository: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: RequestError,
    },
    /// The registry did not open an upload.
    #[error("starting the upload of blob {digest} to {repository}: {source}")]
    StartUpload {
        /// `<registry>/<repository>`.
        repository: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: RequestError,
    },
    /// A built layer could not be read back for the upload.
    #[error("opening blob {digest} at {path}: {source}")]
    OpenBlob {
        /// The blob.
        digest: String,
        /// Its file in the work directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The registry did not accept a blob.
    #[error("uploading blob {digest} to {repository}: {source}")]
    UploadBlob {
        /// `<registry>/<repository>`.
        repository: String,
        /// The blob.
        digest: String,
        /// The cause.
        #[source]
        source: RequestError,
    },
    /// The registry did not accept a manifest or an index.
    #[error("pushing manifest {tag} to {repository}: {source}")]
    PushManifest {
        /// `<registry>/<repository>`.
        repository: String,
        /// The tag pushed.
        tag: String,
        /// The cause.
        #[source]
        source: RequestError,
    },
    /// The registry stored a manifest under another digest than that of the bytes sent.
    #[error("{repository} stored manifest {tag} as {stored}, but its digest is {expected}")]
    ManifestDigest {
        /// `<registry>/<repository>`.
        repository: String,
        /// The tag pushed.
        tag: String,
        /// The digest of the bytes sent.
        expected: String,
        /// The digest the registry answered with.
        stored: String,
    },
    /// An image given to [`push_index`] lives in another repository than the index.
    #[error("image {image} is not in repository {repository}, where the index goes")]
    OtherRepository {
        /// The image's reference.
        image: String,
        /// The index's repository.
        repository: String,
    },
}

/// Why one request to the registry did not get the answer it needed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request could not be sent or its answer not read.
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The registry answered with another status than expected.
    #[error("the registry answered {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the answer's body, usually the registry's error JSON.
        body: String,
    },
    /// An upload was opened without a usable `Location` to send the blob to.
    #[error("the registry answered without a usable Location header: {location:?}")]
    Location {
        /// The header as received, if there was one.
        location: Option<String>,
    },
}

/// Splits `total_bytes` into five padding layers of different sizes (40, 25, 15, 12 and 8 %,
/// each at least one byte) that sum to exactly `total_bytes`; fewer layers, of one byte each,
/// when `total_bytes` is below five.
pub fn padding_layers(total_bytes: u64) -> Vec<u64> {
    const PERCENT: [u64; 4] = [40, 25, 15, 12];
    if total_bytes < 5 {
        return vec![1; total_bytes as usize];
    }

    // One byte each first, so that no layer is empty; the rest by proportion, the last layer
    // taking what rounding leaves.
    let rest = u128::from(total_bytes - 5);
    let mut sizes: Vec<u64> =
        PERCENT.iter().map(|percent| 1 + (rest * u128::from(*percent) / 100) as u64).collect();
    sizes.push(total_bytes - sizes.iter().sum::<u64>());
    sizes
}

/// Pushes an image of gzip padding layers of the given sizes to the shared test cluster's
/// registry as `<owner>/<name>-<pid>:latest`, different from every other test's image.
///
/// # Panics
///
/// When the push fails: the test cannot go on without its image.
pub async fn push_test_image(
    owner: &str,
    name: &str,
    layers: &[u64],
    workdir: &Path,
) -> PushedImage {
    let spec = ImageSpec {
        repository: format!("{owner}/{name}-{}", std::process::id()),
        tag: "latest".into(),
        layers: layers
            .iter()
            .map(|&bytes| LayerSpec::Padding { bytes, compression: LayerCompression::Gzip })
            .collect(),
        seed: layers.iter().sum::<u64>() ^ u64::from(std::process::id()),
    };
    push(crate::cluster::shared().registry, &spec, workdir).await.expect("pushing a test image")
}

/// Builds the image `spec` describes in `workdir` (created if missing) and pushes it to the
/// registry at `registry` over plain HTTP: every layer, the config, and the manifest under
/// `spec.tag`. Blobs the repository already has are not uploaded again.
///
/// Each layer is written to a file in `workdir`, uploaded, and removed before the next is
/// built. The config is a minimal `linux/amd64` one whose `rootfs.diff_ids` are the digests
/// of the uncompressed tars.
///
/// # Errors
///
/// When a layer cannot be written to `workdir`, or the registry refuses a blob or the
/// manifest. Layer files are removed on errors too.
pub async fn push(
    registry: SocketAddr,
    spec: &ImageSpec,
    workdir: &Path,
) -> Result<PushedImage, ImageError> {
    let repository = Repository::new(registry, &spec.repository)?;
    tokio::fs::create_dir_all(workdir)
        .await
        .map_err(|source| ImageError::Workdir { path: workdir.to_owned(), source })?;

    let mut layers = Vec::with_capacity(spec.layers.len());
    let mut diff_ids = Vec::with_capacity(spec.layers.len());
    for (index, layer) in spec.layers.iter().enumerate() {
        let built = build_layer_file(layer, layer_seed(spec.seed, index), index, workdir)
            .await
            .map_err(|source| ImageError::BuildLayer {
                repository: repository.to_string(),
                index,
                workdir: workdir.to_owned(),
                source,
            })?;
        repository.push_blob(&built.descriptor, Content::File(&built.file.path)).await?;
        diff_ids.push(built.diff_id.clone());
        layers.push(built.descriptor.clone());
    }

    let config = image_config(&diff_ids);
    let config_descriptor = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
    repository.push_blob(&config_descriptor, Content::Bytes(config)).await?;

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_descriptor,
        "layers": layers,
    })
    .to_string()
    .into_bytes();
    let manifest_size = manifest.len() as u64;
    let manifest_digest =
        repository.push_manifest(&spec.tag, MANIFEST_MEDIA_TYPE, manifest).await?;

    Ok(PushedImage {
        reference: format!("{registry}/{}@{manifest_digest}", spec.repository),
        repository: spec.repository.clone(),
        manifest_digest,
        manifest_size,
        config: config_descriptor,
        layers,
    })
}

/// Pushes an OCI image index under `tag` in `repository` that lists `manifests`, images
/// already pushed to that repository, each for the platform (`os`, `arch`) given beside it.
/// Returns the index's digest.
///
/// The images' configs say `linux/amd64` whatever platform the index claims for them; the
/// index is for testing platform selection, not for running the images elsewhere.
///
/// # Errors
///
/// When an image is in another repository, or the registry refuses the index.
pub async fn push_index(
    registry: SocketAddr,
    repository: &str,
    tag: &str,
    manifests: &[(PushedImage, &str, &str)],
) -> Result<String, ImageError> {
    if let Some((image, ..)) = manifests.iter().find(|(image, ..)| image.repository != repository) {
        return Err(ImageError::OtherRepository {
            image: image.reference.clone(),
            repository: repository.to_owned(),
        });
    }
    let target = Repository::new(registry, repository)?;

    let entries: Vec<_> = manifests
        .iter()
        .map(|(image, os, arch)| {
            json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
                "platform": {"architecture": arch, "os": os},
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries});
    target.push_manifest(tag, INDEX_MEDIA_TYPE, index.to_string().into_bytes()).await
}

/// The seed of layer `index` of an image seeded with `seed`.
fn layer_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(index as u64)
}

/// A minimal OCI image configuration for `linux/amd64` with the given layer diff IDs.
fn image_config(diff_ids: &[String]) -> Vec<u8> {
    json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string()
    .into_bytes()
}

fn sha256_digest(hash: impl AsRef<[u8]>) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// A layer written to a file of the work directory.
struct BuiltLayer {
    file: LayerFile,
    /// The stored (compressed) blob.
    descriptor: Descriptor,
    /// The digest of the uncompressed tar.
    diff_id: String,
}

/// A file of the work directory, removed when dropped, so that no layer outlives its push.
struct LayerFile {
    path: PathBuf,
}

impl Drop for LayerFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Builds layer `index` into a new file of `workdir`, on a blocking thread.
async fn build_layer_file(
    layer: &LayerSpec,
    seed: u64,
    index: usize,
    workdir: &Path,
) -> io::Result<BuiltLayer> {
    let file =
        LayerFile { path: workdir.join(format!(".layer-{:016x}.part", rand::random::<u64>())) };
    let layer = layer.clone();
    tokio::task::spawn_blocking(move || build_layer(&layer, seed, index, file))
        .await
        .map_err(io::Error::other)?
}

/// Writes the tar of `layer` through its compression into `file`, hashing the tar and the
/// stored bytes on the way.
fn build_layer(
    layer: &LayerSpec,
    seed: u64,
    index: usize,
    file: LayerFile,
) -> io::Result<BuiltLayer> {
    let compression = layer.compression();
    let stored = Hashing::new(BufWriter::with_capacity(NOISE_CHUNK, File::create(&file.path)?));
    let mut tar = Hashing::new(Compressor::new(compression, stored));

    match layer {
        LayerSpec::Padding { bytes, .. } => write_padding_tar(&mut tar, *bytes, seed, index)?,
        LayerSpec::Files { files, .. } => write_files_tar(&mut tar, files)?,
        LayerSpec::RawTar { tar: raw, .. } => tar.write_all(raw)?,
    }

    let (diff_id, _, compressor) = tar.finish();
    let (digest, size, file_writer) = compressor.finish()?.finish();
    file_writer.into_inner().map_err(io::IntoInnerError::into_error)?;
    let descriptor = Descriptor { media_type: compression.media_type().to_owned(), digest, size };
    Ok(BuiltLayer { file, descriptor, diff_id })
}

/// A header with every numeric field filled in, owned by root, as image builders write them.
fn tar_header(entry_type: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// A tar of one file, `padding-<index>`, holding `bytes` pseudo-random bytes.
fn write_padding_tar(out: &mut impl Write, bytes: u64, seed: u64, index: usize) -> io::Result<()> {
    let mut header = tar_header(tar::EntryType::Regular, bytes, 0o644);
    let noise = Noise { rng: StdRng::seed_from_u64(seed), remaining: bytes };

    let mut builder = tar::Builder::new(out);
    builder.append_data(&mut header, format!("padding-{index}"), noise)?;
    builder.into_inner()?;
    Ok(())
}

/// A tar of `files` (path, content, mode), with their parent directories first.
fn write_files_tar(out: &mut impl Write, files: &[(String, Vec<u8>, u32)]) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut directories = BTreeSet::new();
    for (path, content, mode) in files {
        let path = Path::new(path.trim_start_matches('/'));

        let mut parents: Vec<&Path> =
            path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()).collect();
        parents.reverse();
        for parent in parents {
            if directories.insert(parent.to_owned()) {
                let mut header = tar_header(tar::EntryType::Directory, 0, 0o755);
                builder.append_data(&mut header, parent, io::empty())?;
            }
        }

        let mut header = tar_header(tar::EntryType::Regular, content.len() as u64, *mode);
        builder.append_data(&mut header, path, content.as_slice())?;
    }
    builder.into_inner()?;
    Ok(())
}

/// `remaining` pseudo-random bytes from a seeded generator: incompressible, and the same for
/// the same seed.
struct Noise {
    rng: StdRng,
    remaining: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len =
            buf.len().min(NOISE_CHUNK).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.rng.fill_bytes(&mut buf[..len]);
        self.remaining -= len as u64;
        Ok(len)
    }
}

/// A writer that hashes (SHA-256) and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The digest and count of everything written, and the inner writer.
    fn finish(self) -> (String, u64, W) {
        (sha256_digest(self.hasher.finalize()), self.bytes, self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compression of a layer, as a writer in front of the stored bytes.
enum Compressor<W: Write> {
    Gzip(GzEncoder<W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(compression: LayerCompression, inner: W) -> Compressor<W> {
        match compression {
            LayerCompression::Gzip => Compressor::Gzip(GzEncoder::new(inner, Compression::fast())),
            LayerCompression::None => Compressor::None(inner),
        }
    }

    /// Writes what compression still holds and returns the inner writer.
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(encoder) => encoder.finish(),
            Compressor::None(inner) => Ok(inner),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(encoder) => encoder.write(buf),
            Compressor::None(inner) => inner.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(encoder) => encoder.flush(),
            Compressor::None(inner) => inner.flush(),
        }
    }
}

/// What a blob upload sends.
enum Content<'a> {
    /// A file, streamed.
    File(&'a Path),
    /// Bytes in memory, for small blobs such as the config.
    Bytes(Vec<u8>),
}

/// One repository of a registry, spoken to over the distribution API.
struct Repository {
    client: reqwest::Client,
    registry: SocketAddr,
    name: String,
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

impl Repository {
    fn new(registry: SocketAddr, name: &str) -> Result<Repository, ImageError> {
        // Bounded, but generous enough for a layer of gigabytes on a busy machine.
        let client = crate::http::client()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(ImageError::Client)?;
        Ok(Repository { client, registry, name: name.to_owned() })
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/v2/{}/{rest}", self.registry, self.name)
    }

    /// Uploads a blob unless the repository has it already.
    async fn push_blob(&self, blob: &Descriptor, content: Content<'_>) -> Result<(), ImageError> {
        let digest = &blob.digest;
        let has_blob = self.has_blob(digest).await.map_err(|source| ImageError::CheckBlob {
            repository: self.to_string(),
            digest: digest.clone(),
            source,
        })?;
        if has_blob {
            return Ok(());
        }

        let location = self.start_upload().await.map_err(|source| ImageError::StartUpload {
            repository: self.to_string(),
            digest: digest.clone(),
            source,
        })?;

        let body = match content {
            Content::Bytes(bytes) => reqwest::Body::from(bytes),
            Content::File(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|source| {
                    ImageError::OpenBlob { digest: digest.clone(), path: path.to_owned(), source }
                })?;
                reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, 256 * 1024))
            }
        };
        self.finish_upload(location, blob, body).await.map_err(|source| ImageError::UploadBlob {
            repository: self.to_string(),
            digest: digest.clone(),
            source,
        })
    }

    async fn has_blob(&self, digest: &str) -> Result<bool, RequestError> {
        let response = self.client.head(self.url(&format!("blobs/{digest}"))).send().await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refusal(response).await),
        }
    }

    /// Opens an upload and returns where to send the blob.
    async fn start_upload(&self) -> Result<Url, RequestError> {
        let response = self.client.post(self.url("blobs/uploads/")).send().await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(refusal(response).await);
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        // The Location may be relative, and may carry a query already.
        let base = Url::parse(&format!("http://{}/", self.registry)).ok();
        location
            .as_deref()
            .and_then(|location| base?.join(location).ok())
            .ok_or(RequestError::Location { location })
    }

    /// Sends the whole blob to an upload `location` and closes the upload with its digest.
    async fn finish_upload(
        &self,
        mut location: Url,
        blob: &Descriptor,
        body: reqwest::Body,
    ) -> Result<(), RequestError> {
        location.query_pairs_mut().append_pair("digest", &blob.digest);
        let response = self
            .client
            .put(location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, blob.size)
            .body(body)
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(refusal(response).await);
        }
        Ok(())
    }

    /// Pushes a manifest or an index under `tag` and returns its digest.
    async fn push_manifest(
        &self,
        tag: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ImageError> {
        let expected = Descriptor::of(media_type, &bytes).digest;
        let failed = |source| ImageError::PushManifest {
            repository: self.to_string(),
            tag: tag.to_owned(),
            source,
        };
        let response = self
            .client
            .put(self.url(&format!("manifests/{tag}")))
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes)
            .send()
            .await
            .map_err(|error| failed(error.into()))?;
        if response.status() != StatusCode::CREATED {
            return Err(failed(refusal(response).await));
        }

        let stored = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
        match stored {
            Some(stored) if stored != expected => Err(ImageError::ManifestDigest {
                repository: self.to_string(),
                tag: tag.to_owned(),
                expected,
                stored: stored.to_owned(),
            }),
            _ => Ok(expected),
        }
    }
}

/// The error for an answer with an unexpected status, with the start of its body.
async fn refusal(response: reqwest::Response) -> RequestError {
    let status = response.status().as_u16();
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(body.floor_char_boundary(512));
    RequestError::Status { status, body: body.trim_end().to_owned() }
}

#[cfg(test)]
mod tests;
