//! The node's content store: blobs addressed by digest on disk.
//!
//! A blob being downloaded lives in `ingest/<hex>.partial`; its bytes survive cancellation,
//! retries and crashes, so the next download continues from its length. A blob is committed
//! only after its size and digest are verified, by an atomic rename into `blobs/sha256/<hex>`;
//! a blob that is already committed counts as success.

use std::{
    io,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};
use tokio::{
    fs::{self, File, OpenOptions},
    io::{AsyncReadExt, AsyncWriteExt},
};

use crate::digest::Digest;

/// Size of the one buffer used to re-hash a partial file when a download resumes.
const REHASH_BUFFER: usize = 64 * 1024;

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's files failed.
    #[error("content store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// More bytes arrived than the descriptor's size.
    #[error("blob {digest} is larger than its descriptor's {expected} bytes; discarded")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// The size the manifest gives.
        expected: u64,
    },
    /// The download ended before the descriptor's size was reached.
    #[error("blob {digest} has {actual} of its {expected} bytes")]
    Incomplete {
        /// The blob.
        digest: Digest,
        /// The size the manifest gives.
        expected: u64,
        /// What is on disk.
        actual: u64,
    },
    /// The bytes do not hash to the digest they were fetched as: the source served the wrong
    /// content, or it was corrupted on the way. The partial file is discarded.
    #[error("blob {expected} failed verification: its bytes hash to {actual}; discarded")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// The content store rooted at a directory of the node's state.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    ///
    /// # Errors
    ///
    /// When its directories cannot be created.
    pub async fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store { root: root.to_owned() };
        for dir in [store.blobs_dir(), store.ingest_dir()] {
            fs::create_dir_all(&dir).await.map_err(io_error(&dir))?;
        }
        Ok(store)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir().join(format!("{}.partial", digest.hex()))
    }

    /// Whether the blob is committed.
    pub async fn contains(&self, digest: &Digest) -> bool {
        fs::try_exists(self.blob_path(digest)).await.unwrap_or(false)
    }

    /// How many bytes of the blob are on disk: its size when committed, the partial file's
    /// length while downloading, else 0.
    pub async fn bytes_present(&self, digest: &Digest) -> u64 {
        for path in [self.blob_path(digest), self.partial_path(digest)] {
            if let Ok(metadata) = fs::metadata(&path).await {
                return metadata.len();
            }
        }
        0
    }

    /// Opens the blob's partial file to continue its download, re-hashing what is already
    /// there. A partial file longer than `size` cannot be a prefix of the blob and is emptied.
    ///
    /// # Errors
    ///
    /// When the partial file cannot be opened or read.
    pub async fn writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, StoreError> {
        let path = self.partial_path(digest);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .await
            .map_err(io_error(&path))?;
        let on_disk = file.metadata().await.map_err(io_error(&path))?.len();
        if on_disk > size {
            file.set_len(0).await.map_err(io_error(&path))?;
        }

        let mut hasher = Sha256::new();
        let mut written = 0;
        let mut buffer = vec![0; REHASH_BUFFER];
        loop {
            let n = file.read(&mut buffer).await.map_err(io_error(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            written += n as u64;
        }

        Ok(BlobWriter {
            file,
            hasher,
            written,
            size,
            digest: digest.clone(),
            partial: path,
            committed: self.blob_path(digest),
        })
    }
}

/// Appends a blob's bytes to its partial file, hashing them as they go.
///
/// Dropping a writer keeps the partial file: the next [`Store::writer`] continues from it.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    hasher: Sha256,
    written: u64,
    size: u64,
    digest: Digest,
    partial: PathBuf,
    committed: PathBuf,
}

impl BlobWriter {
    /// How many bytes of the blob are on disk: where the download continues.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The blob's size as its descriptor gives it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooLarge`] (the partial file is discarded) when the blob would grow past
    /// its size, or an I/O error.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.written + bytes.len() as u64 > self.size {
            self.discard().await;
            return Err(StoreError::TooLarge { digest: self.digest.clone(), expected: self.size });
        }
        self.file.write_all(bytes).await.map_err(io_error(&self.partial))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Verifies size and digest, then publishes the blob by renaming it into place.
    ///
    /// # Errors
    ///
    /// [`StoreError::Incomplete`] when bytes are missing (the partial file is kept, to be
    /// continued); [`StoreError::DigestMismatch`] when the bytes are wrong (the partial file is
    /// discarded); or an I/O error.
    pub async fn commit(mut self) -> Result<PathBuf, StoreError> {
        if self.written != self.size {
            return Err(StoreError::Incomplete {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.written,
            });
        }
        let actual = Digest::from_hasher(self.hasher.clone());
        if actual != self.digest {
            self.discard().await;
            return Err(StoreError::DigestMismatch { expected: self.digest.clone(), actual });
        }

        self.file.flush().await.map_err(io_error(&self.partial))?;
        self.file.sync_all().await.map_err(io_error(&self.partial))?;
        fs::rename(&self.partial, &self.committed).await.map_err(io_error(&self.committed))?;
        Ok(self.committed.clone())
    }

    async fn discard(&mut self) {
        let _ = fs::remove_file(&self.partial).await;
        self.written = 0;
        self.hasher = Sha256::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_verified_blob_is_committed_under_its_digest() {
        let (_dir, store) = store().await;
        let blob = b"hello, layer";
        let digest = Digest::of(blob);

        let mut writer = store.writer(&digest, blob.len() as u64).await.unwrap();
        writer.write(blob).await.unwrap();
        let path = writer.commit().await.unwrap();

        assert_eq!(std::fs::read(path).unwrap(), blob);
        assert!(store.contains(&digest).await);
        assert_eq!(store.bytes_present(&digest).await, blob.len() as u64);
    }

    #[tokio::test]
    async fn a_resumed_writer_continues_from_the_bytes_on_disk() {
        let (_dir, store) = store().await;
        let blob = b"0123456789abcdef";
        let digest = Digest::of(blob);
        let mut first = store.writer(&digest, 16).await.unwrap();
        first.write(&blob[..6]).await.unwrap();
        drop(first);

        let mut resumed = store.writer(&digest, 16).await.unwrap();
        assert_eq!(resumed.offset(), 6);
        resumed.write(&blob[6..]).await.unwrap();
        resumed.commit().await.unwrap();

        assert!(store.contains(&digest).await);
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_the_digest_are_discarded_and_not_committed() {
        let (_dir, store) = store().await;
        let digest = Digest::of(b"the real bytes");
        let mut writer = store.writer(&digest, 14).await.unwrap();
        writer.write(b"the fake bytes").await.unwrap();

        let error = writer.commit().await.unwrap_err();

        assert!(matches!(error, StoreError::DigestMismatch { .. }), "{error}");
        assert!(!store.contains(&digest).await);
        assert_eq!(store.bytes_present(&digest).await, 0, "the partial file was kept");
    }

    #[tokio::test]
    async fn an_incomplete_blob_is_kept_for_later() {
        let (_dir, store) = store().await;
        let digest = Digest::of(b"0123456789");
        let mut writer = store.writer(&digest, 10).await.unwrap();
        writer.write(b"01234").await.unwrap();

        let error = writer.commit().await.unwrap_err();

        assert!(matches!(error, StoreError::Incomplete { actual: 5, .. }), "{error}");
        assert_eq!(store.bytes_present(&digest).await, 5);
    }

    #[tokio::test]
    async fn writing_past_the_size_fails_and_discards() {
        let (_dir, store) = store().await;
        let digest = Digest::of(b"abc");
        let mut writer = store.writer(&digest, 3).await.unwrap();

        let error = writer.write(b"abcd").await.unwrap_err();

        assert!(matches!(error, StoreError::TooLarge { expected: 3, .. }), "{error}");
        assert_eq!(store.bytes_present(&digest).await, 0);
    }
}
