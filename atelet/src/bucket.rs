//! The snapshot bucket: large objects written and read with bounded memory, resumable both
//! ways, on any S3 API.
//!
//! An upload is multipart, [`PART_SIZE`] bytes a part and one part in memory at a time. Its
//! upload ID and the parts already stored are recorded in a small file under the node's state
//! directory after every part, so an upload cut off by an unreachable bucket or a crash goes
//! on from its completed parts the next time. A download writes into `<file>.partial`, asks
//! for the rest with `Range` when that file exists, checks the whole file's digest, and only
//! then takes the final name.
//!
//! Credentials come from a shared-credentials file (a mounted Secret) or the standard AWS
//! environment, never from a flag. Errors name the bucket and key, never a credential.

use std::{
    io,
    path::{Path, PathBuf},
};

use aws_config::{BehaviorVersion, Region};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_s3::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata as _},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// The size of each part of a multipart upload (the last may be smaller), and so the memory
/// an upload holds.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct BucketConfig {
    /// The bucket's name.
    pub bucket: String,
    /// The S3 endpoint, e.g. `http://rustfs.ate-system:9000`; AWS itself when `None`.
    pub endpoint: Option<String>,
    /// The region to sign for.
    pub region: String,
    /// An AWS shared-credentials file to read the `default` profile from; the standard AWS
    /// environment when `None`.
    pub credentials_file: Option<PathBuf>,
}

/// A connection to the bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: Client,
    bucket: String,
    uploads_dir: PathBuf,
}

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The S3 API refused the request or could not be reached (after the SDK's retries).
    #[error("S3 {operation} of s3://{bucket}/{key}: {message}")]
    S3 {
        /// The API call, e.g. `UploadPart`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// What the SDK said.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A downloaded object does not hash to the digest it was asked for.
    #[error(
        "s3://{bucket}/{key} hashes to sha256:{actual}, not sha256:{expected}; the download was discarded"
    )]
    Digest {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

/// How an upload went: how many parts it had and how many an earlier attempt had stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The object's size.
    pub bytes: u64,
    /// Parts of the upload (1 for an object smaller than a part).
    pub parts: u32,
    /// Parts found already stored by an earlier, interrupted attempt.
    pub parts_reused: u32,
}

/// The record of a multipart upload in progress, kept between attempts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    bytes: u64,
    upload_id: String,
    /// `(part number, ETag)` of each part stored.
    parts: Vec<(i32, String)>,
}

impl Bucket {
    /// Connects to the bucket; `state_dir` holds the records of uploads in progress.
    pub async fn connect(config: &BucketConfig, state_dir: &Path) -> Bucket {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()));
        if let Some(file) = &config.credentials_file {
            let files =
                EnvConfigFiles::builder().with_file(EnvConfigFileKind::Credentials, file).build();
            loader = loader.profile_files(files);
        }
        let shared = loader.load().await;
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared).force_path_style(true);
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Bucket {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket.clone(),
            uploads_dir: state_dir.join("uploads"),
        }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    /// The size of the object at `key`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the bucket cannot be asked.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, BucketError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).try_into().unwrap_or(0))),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(error) => Err(self.s3_error("HeadObject", key, error)),
        }
    }

    /// Writes a small object (a manifest) in one request.
    ///
    /// # Errors
    ///
    /// When the bucket refuses it.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.s3_error("PutObject", key, e))?;
        Ok(())
    }

    /// Reads a small object (a manifest) whole, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the bucket cannot be read.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BucketError> {
        let object = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => object,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(error) => return Err(self.s3_error("GetObject", key, error)),
        };
        let bytes = object.body.collect().await.map_err(|e| self.s3_error("GetObject", key, e))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Uploads the file at `path` to `key`, going on from the parts an earlier attempt
    /// stored, and calls `progress` with the bytes stored so far after each part.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or the bucket refuses a part; the parts stored so far
    /// stay, and the next call goes on from them.
    pub async fn upload_file(
        &self,
        key: &str,
        path: &Path,
        progress: impl Fn(u64),
    ) -> Result<Uploaded, BucketError> {
        let io_error = |source| BucketError::Io { path: path.to_owned(), source };
        let bytes = tokio::fs::metadata(path).await.map_err(io_error)?.len();
        if bytes < PART_SIZE {
            let body = ByteStream::from(tokio::fs::read(path).await.map_err(io_error)?);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .map_err(|e| self.s3_error("PutObject", key, e))?;
            progress(bytes);
            return Ok(Uploaded { bytes, parts: 1, parts_reused: 0 });
        }

        let record_path = self.record_path(key);
        let mut record = match self.load_record(&record_path, key, bytes).await {
            Some(record) => record,
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.s3_error("CreateMultipartUpload", key, e))?;
                let upload_id = created.upload_id().unwrap_or_default().to_owned();
                let record =
                    UploadRecord { key: key.to_owned(), bytes, upload_id, parts: Vec::new() };
                save_record(&record_path, &record).await?;
                record
            }
        };

        let parts = u32::try_from(bytes.div_ceil(PART_SIZE)).unwrap_or(u32::MAX);
        let parts_reused = u32::try_from(record.parts.len()).unwrap_or(0);
        let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
        let mut buffer = Vec::with_capacity(usize::try_from(PART_SIZE).unwrap_or(0));
        for number in 1..=i32::try_from(parts).unwrap_or(i32::MAX) {
            let offset = u64::try_from(number - 1).unwrap_or(0) * PART_SIZE;
            let length = PART_SIZE.min(bytes - offset);
            if record.parts.iter().any(|(n, _)| *n == number) {
                progress(offset + length);
                continue;
            }
            buffer.clear();
            file.seek(io::SeekFrom::Start(offset)).await.map_err(io_error)?;
            (&mut file).take(length).read_to_end(&mut buffer).await.map_err(io_error)?;
            let stored = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&record.upload_id)
                .part_number(number)
                .body(ByteStream::from(std::mem::take(&mut buffer)))
                .send()
                .await;
            let stored = match stored {
                Ok(stored) => stored,
                Err(error) => {
                    forget_if_gone(&record_path, error.code()).await;
                    return Err(self.s3_error("UploadPart", key, error));
                }
            };
            record.parts.push((number, stored.e_tag().unwrap_or_default().to_owned()));
            save_record(&record_path, &record).await?;
            progress(offset + length);
        }

        record.parts.sort_by_key(|(number, _)| *number);
        let all_parts = CompletedMultipartUpload::builder()
            .set_parts(Some(
                record
                    .parts
                    .iter()
                    .map(|(number, e_tag)| {
                        CompletedPart::builder().part_number(*number).e_tag(e_tag).build()
                    })
                    .collect(),
            ))
            .build();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&record.upload_id)
            .multipart_upload(all_parts)
            .send()
            .await;
        if let Err(error) = completed {
            forget_if_gone(&record_path, error.code()).await;
            return Err(self.s3_error("CompleteMultipartUpload", key, error));
        }
        let _ = tokio::fs::remove_file(&record_path).await;
        Ok(Uploaded { bytes, parts, parts_reused })
    }

    /// Downloads `key` to `dest`, going on from `<dest>.partial` when an earlier attempt left
    /// one, and keeps it only if the whole file hashes to `sha256` (lowercase hex).
    ///
    /// # Errors
    ///
    /// When the bucket cannot be read, the file cannot be written, or the digest differs (the
    /// partial file is then removed, so the next attempt starts clean).
    pub async fn download_file(
        &self,
        key: &str,
        dest: &Path,
        sha256: &str,
    ) -> Result<u64, BucketError> {
        let partial = dest.with_extension("partial");
        let io_error = |source| BucketError::Io { path: partial.clone(), source };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&partial)
            .await
            .map_err(io_error)?;

        // The digest covers the bytes already there, then the rest as it arrives.
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let read = file.read(&mut chunk).await.map_err(io_error)?;
            if read == 0 {
                break;
            }
            hasher.update(&chunk[..read]);
            have += read as u64;
        }

        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if have > 0 {
            request = request.range(format!("bytes={have}-"));
        }
        let mut object = match request.send().await {
            Ok(object) => Some(object),
            // Asking for the bytes after the last one: the partial file is already whole.
            Err(error)
                if have > 0 && error.raw_response().is_some_and(|r| r.status().as_u16() == 416) =>
            {
                None
            }
            Err(error) => return Err(self.s3_error("GetObject", key, error)),
        };
        if let Some(object) = object.as_mut() {
            while let Some(bytes) =
                object.body.try_next().await.map_err(|e| self.s3_error("GetObject", key, e))?
            {
                hasher.update(&bytes);
                file.write_all(&bytes).await.map_err(io_error)?;
                have += bytes.len() as u64;
            }
        }
        file.sync_all().await.map_err(io_error)?;
        drop(file);

        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(BucketError::Digest {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        tokio::fs::rename(&partial, dest).await.map_err(io_error)?;
        Ok(have)
    }

    /// Deletes every object whose key starts with `prefix`, and returns how many there were.
    ///
    /// # Errors
    ///
    /// When the bucket cannot be listed or an object cannot be deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, BucketError> {
        let mut deleted = 0;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.s3_error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| self.s3_error("DeleteObject", key, e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.uploads_dir.join(format!("{}.json", hex::encode(Sha256::digest(key.as_bytes()))))
    }

    /// The record of an earlier attempt at uploading `bytes` bytes to `key`, if one is usable.
    async fn load_record(&self, path: &Path, key: &str, bytes: u64) -> Option<UploadRecord> {
        let text = tokio::fs::read(path).await.ok()?;
        let record: UploadRecord = serde_json::from_slice(&text).ok()?;
        (record.key == key && record.bytes == bytes).then_some(record)
    }

    fn s3_error<E: std::error::Error + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        error: E,
    ) -> BucketError {
        BucketError::S3 {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message: DisplayErrorContext(error).to_string(),
        }
    }
}

/// Removes the record of an upload the bucket no longer knows (aborted, expired, or its
/// parts gone), so that the next attempt starts a new one instead of failing the same way.
async fn forget_if_gone(record: &Path, code: Option<&str>) {
    if matches!(code, Some("NoSuchUpload" | "InvalidPart")) {
        let _ = tokio::fs::remove_file(record).await;
    }
}

/// Writes the record through a temporary file and a rename, so a crash leaves the old one or
/// the new one, never half of either.
async fn save_record(path: &Path, record: &UploadRecord) -> Result<(), BucketError> {
    let io_error = |source| BucketError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io_error)?;
    }
    let temporary = path.with_extension("tmp");
    let json = serde_json::to_vec(record).map_err(|e| io_error(io::Error::other(e)))?;
    tokio::fs::write(&temporary, json).await.map_err(io_error)?;
    tokio::fs::rename(&temporary, path).await.map_err(io_error)
}
