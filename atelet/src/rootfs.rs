//! Root filesystems unpacked from images in the content store.
//!
//! A root filesystem is unpacked into `<target>.partial` and renamed to `<target>` only when
//! every layer is in, so a crash mid-unpack leaves nothing that looks finished; the next
//! attempt removes the partial directory and starts it again. An [`Unpacker`] makes sure
//! that only one unpack of a root filesystem runs at a time.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
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

/// Unpacks root filesystems one at a time per target: operations that need the same one (say,
/// three templates of one image) wait for the first and then find it finished, instead of
/// writing into the same partial directory together.
#[derive(Debug, Default)]
pub struct Unpacker {
    targets: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Unpacker {
    /// As [`unpack_image`], after any unpack of the same `target` has finished.
    ///
    /// The unpack runs as a task of its own: an operation cancelled while waiting for it
    /// stops waiting, but the unpack finishes (or fails and cleans up) before anyone else
    /// touches the target.
    ///
    /// # Errors
    ///
    /// As [`unpack_image`].
    pub async fn unpack(
        &self,
        store: &Store,
        image: &ResolvedImage,
        target: &Path,
    ) -> Result<PathBuf, RootfsError> {
        let lock = {
            let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(targets.entry(target.to_owned()).or_default())
        };
        let (store, image, owned_target) = (store.clone(), image.clone(), target.to_owned());
        let task = tokio::spawn(async move {
            let _only_one = lock.lock().await;
            unpack_image(&store, &image, &owned_target).await
        });
        task.await.map_err(|e| RootfsError::Io {
            target: target.to_owned(),
            source: io::Error::other(format!("the unpack task ended: {e}")),
        })?
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
