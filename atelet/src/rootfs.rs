//! Root filesystems unpacked from images in the content store.
//!
//! A root filesystem is unpacked into `<target>.partial` and renamed to `<target>` only when
//! every layer is in, so a crash mid-unpack leaves nothing that looks finished; the next
//! attempt removes the partial directory and starts it again.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::{
    registry::ResolvedImage,
    store::Store,
    unpack::{Compression, UnpackError, unpack_layer},
};

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A layer could not be applied.
    #[error("unpacking layer {digest} into {target}: {source}")]
    Layer {
        /// The layer.
        digest: String,
        /// The root filesystem.
        target: PathBuf,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// The directories could not be prepared or published.
    #[error("preparing root filesystem {target}: {source}")]
    Io {
        /// The root filesystem.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    /// The CamelCase reason a condition reports for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            RootfsError::Layer { source: UnpackError::PathEscapes { .. }, .. } => "UnsafeLayer",
            RootfsError::Layer { .. } => "UnpackFailed",
            RootfsError::Io { .. } => "UnpackFailed",
        }
    }
}

/// Unpacks every layer of `image` (already committed in `store`) into `target`, bottom layer
/// first. Returns `target`; an existing `target` is taken as already unpacked.
///
/// # Errors
///
/// When a layer is refused (unsafe paths, unsupported media type, corrupt stream) or the
/// directories cannot be written. The partial directory is removed on failure.
pub async fn unpack_image(
    store: &Store,
    image: &ResolvedImage,
    target: &Path,
) -> Result<PathBuf, RootfsError> {
    if tokio::fs::try_exists(target).await.unwrap_or(false) {
        return Ok(target.to_owned());
    }
    let io_error = |source| RootfsError::Io { target: target.to_owned(), source };
    let partial = target.with_extension("partial");
    if tokio::fs::try_exists(&partial).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&partial).await.map_err(io_error)?;
    }
    tokio::fs::create_dir_all(&partial).await.map_err(io_error)?;

    for layer in &image.layers {
        let blob = store.blob_path(&layer.digest);
        let media_type = layer.media_type.clone();
        let into = partial.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let compression = Compression::from_media_type(&media_type)?;
            let file = std::fs::File::open(&blob).map_err(|source| UnpackError::Read { source })?;
            unpack_layer(io::BufReader::with_capacity(64 * 1024, file), compression, &into)
        })
        .await
        .map_err(|e| io_error(io::Error::other(e)))?;
        if let Err(source) = applied {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            return Err(RootfsError::Layer {
                digest: layer.digest.to_string(),
                target: target.to_owned(),
                source,
            });
        }
    }

    tokio::fs::rename(&partial, target).await.map_err(io_error)?;
    Ok(target.to_owned())
}
