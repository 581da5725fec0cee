//! Streaming, confined unpacking of image layers into a root filesystem.
//!
//! [`unpack_layer`] applies one OCI or Docker layer, a tar stream that may be compressed, on top
//! of a rootfs that earlier layers have already filled. Layers come from untrusted images, so
//! every entry is placed by resolving its path one component at a time inside the rootfs:
//! entries that name a place outside it, directly or through a symlink, are refused and stop the
//! unpack. The stream is never held in memory; file contents are copied through a fixed buffer.
//!
//! The work is synchronous file system work: async callers run it in
//! `tokio::task::spawn_blocking`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use nix::libc;
use tar::{Archive, Entry, EntryType};
use tracing::debug;

/// Prefix of a whiteout entry: `dir/.wh.name` deletes `dir/name` from the lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Prefix of whiteout metadata (aufs bookkeeping such as `.wh..wh.plnk`), skipped except for
/// the opaque marker.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";

/// Marks its directory opaque: nothing the lower layers put in it stays visible.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Prefix of the PAX records that carry extended attributes.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How many symlinks one path resolution may follow before it counts as a loop (Linux's limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Size of the buffer file contents are copied through.
const COPY_BUFFER_SIZE: usize = 64 * 1024;

/// How a layer blob is compressed, as announced by its descriptor's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// A gzip-compressed tar stream; concatenated gzip members are read as one stream.
    Gzip,
    /// A zstd-compressed tar stream.
    Zstd,
}

impl Compression {
    /// Reads the compression from an OCI or Docker layer media type.
    ///
    /// Accepts the OCI layer types `application/vnd.oci.image.layer.v1.tar`, `…+gzip` and
    /// `…+zstd`, their `nondistributable` variants, and the Docker schema 2 layer types
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`, its `foreign` variant and the
    /// uncompressed `application/vnd.docker.image.rootfs.diff.tar`.
    ///
    /// # Errors
    ///
    /// [`UnpackError::UnsupportedMediaType`] for any other media type, including config and
    /// manifest types and layer formats this unpacker cannot read.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),

            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),

            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }

            _ => Err(UnpackError::UnsupportedMediaType { media_type: media_type.to_owned() }),
        }
    }
}

/// What applying one layer did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries written into the rootfs: files, directories, links and device nodes. Whiteouts,
    /// PAX global headers and skipped entries are not counted.
    pub entries: u64,
    /// Uncompressed bytes of regular file contents written.
    pub bytes: u64,
    /// Whiteout and opaque markers applied.
    pub whiteouts: u64,
}

/// Why a layer could not be applied.
///
/// The unpack stops at the first error; entries before it stay written, so the caller should
/// discard the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The media type names no layer format this unpacker reads.
    #[error("unsupported layer media type {media_type:?}")]
    UnsupportedMediaType {
        /// The media type as the descriptor gave it.
        media_type: String,
    },

    /// The rootfs to unpack into is missing or not a directory.
    #[error("rootfs {path} is not a usable directory")]
    Rootfs {
        /// The rootfs as the caller gave it.
        path: PathBuf,
        /// What went wrong looking it up.
        #[source]
        source: io::Error,
    },

    /// The layer stream is corrupt or truncated: a bad gzip or zstd stream, a failed checksum,
    /// an unreadable tar header or an entry whose data ends early.
    #[error("failed to read the layer stream, it is corrupt or truncated")]
    Read {
        /// The decoder's or tar reader's error.
        #[source]
        source: io::Error,
    },

    /// A tar header field of an entry could not be parsed.
    #[error("entry {entry:?} has an invalid header")]
    Header {
        /// The entry's path as the layer names it.
        entry: String,
        /// The parse error.
        #[source]
        source: io::Error,
    },

    /// The entry would be written outside the rootfs, or a hardlink would point outside it.
    #[error("entry {entry:?} would escape the rootfs: {reason}")]
    PathEscapes {
        /// The entry's path as the layer names it.
        entry: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// The entry is malformed in a way that says nothing about escaping the rootfs.
    #[error("entry {entry:?} is invalid: {reason}")]
    InvalidEntry {
        /// The entry's path as the layer names it.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Resolving the entry's path followed more than 40 symlinks.
    #[error("entry {entry:?} resolves through a symlink loop")]
    SymlinkLoop {
        /// The entry's path as the layer names it.
        entry: String,
    },

    /// A hardlink entry points at a path that does not exist in the rootfs.
    #[error("hardlink {entry:?} points at {target:?}, which does not exist in the rootfs")]
    HardlinkTargetMissing {
        /// The hardlink's path as the layer names it.
        entry: String,
        /// The link target as the layer names it.
        target: String,
    },

    /// A parent directory of the entry exists in the rootfs as something other than a directory.
    #[error("entry {entry:?} needs {path} to be a directory, but it is not")]
    NotADirectory {
        /// The entry's path as the layer names it.
        entry: String,
        /// The non-directory in the way.
        path: PathBuf,
    },

    /// Looking at what already exists in the rootfs failed.
    #[error("failed to inspect {path}")]
    Inspect {
        /// The path inspected.
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },

    /// Removing a path that the layer replaces or whites out failed.
    #[error("failed to remove {path}")]
    Remove {
        /// The path being removed.
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },

    /// Creating an entry or writing its contents or metadata failed.
    #[error("failed to write {path}")]
    Write {
        /// The path being written.
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
}

/// Applies one layer, a tar stream compressed as given, on top of `rootfs`, which must exist.
///
/// Entries replace what the lower layers left at their paths, whiteouts delete lower content
/// and opaque markers clear lower directory contents, following the OCI image layer rules.
/// Modes (setuid and friends included), modification times and, where the file system allows,
/// extended attributes are preserved; ownership is applied only when running as root. The
/// stream is read to its end so that compression checksums are verified.
///
/// Runs synchronously with bounded memory; call it from `spawn_blocking` in async code.
///
/// # Errors
///
/// - [`UnpackError::PathEscapes`] for absolute paths, `..` components, paths through a symlink
///   whose target is absolute or leaves the rootfs, and hardlinks pointing outside the rootfs;
/// - [`UnpackError::Read`] for corrupt or truncated streams;
/// - the other [`UnpackError`] variants for malformed entries and file system failures.
///
/// The unpack stops at the first error and leaves earlier entries in place.
pub fn unpack_layer(
    layer: impl Read,
    compression: Compression,
    rootfs: &Path,
) -> Result<UnpackStats, UnpackError> {
    let rootfs_error = |source| UnpackError::Rootfs { path: rootfs.to_path_buf(), source };

    // Resolve the rootfs once so every path below is built from a symlink-free prefix.
    let root = fs::canonicalize(rootfs).map_err(rootfs_error)?;
    if !fs::metadata(&root).map_err(rootfs_error)?.is_dir() {
        return Err(rootfs_error(io::Error::from(ErrorKind::NotADirectory)));
    }

    let stats = match compression {
        Compression::None => apply_layer(layer, root)?,
        Compression::Gzip => apply_layer(MultiGzDecoder::new(layer), root)?,
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(layer)
                .map_err(|source| UnpackError::Read { source })?;
            apply_layer(decoder, root)?
        }
    };

    debug!(
        rootfs = %rootfs.display(),
        entries = stats.entries,
        bytes = stats.bytes,
        whiteouts = stats.whiteouts,
        "unpacked layer"
    );
    Ok(stats)
}

/// Reads every entry of the decompressed tar stream and applies it to the canonical `root`.
fn apply_layer(stream: impl Read, root: PathBuf) -> Result<UnpackStats, UnpackError> {
    let mut layer = LayerUnpack::new(root);
    // TODO: the tar crate reads PAX and GNU long-name headers whole into memory without a size
    // limit, so a hostile layer can make one allocation as large as it claims; bounding them
    // needs a limit in the tar reader or our own header parsing.
    let mut archive = Archive::new(stream);

    for entry in archive.entries().map_err(|source| UnpackError::Read { source })? {
        let mut entry = entry.map_err(|source| UnpackError::Read { source })?;
        layer.apply_entry(&mut entry)?;
    }

    // The tar reader stops at the end-of-archive blocks; read the rest so the decoder reaches
    // its trailer and verifies the checksum.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|source| UnpackError::Read { source })?;

    layer.finish_directories()?;
    Ok(layer.stats)
}

/// The state of one layer being applied to a rootfs.
struct LayerUnpack {
    /// The canonical rootfs; every path written is this joined with a symlink-free suffix.
    root: PathBuf,
    /// Whether ownership is applied (the process runs as root).
    privileged: bool,
    /// Paths relative to `root` that hold content of this layer, with all their ancestors.
    /// Whiteouts and opaque markers only remove lower content, so they skip these.
    written: HashSet<PathBuf>,
    /// Directory modes and times, applied once the whole layer is written: writing children
    /// would move the times, and a read-only mode would block writing them.
    directories: Vec<DirectoryMetadata>,
    /// The buffer file contents are copied through.
    buffer: Vec<u8>,
    /// What has been applied so far.
    stats: UnpackStats,
}

/// Mode and time of a directory entry, applied after the layer's other entries.
struct DirectoryMetadata {
    /// The directory, relative to the rootfs.
    path: PathBuf,
    /// Permission bits, including setgid and sticky.
    mode: u32,
    /// Modification time.
    mtime: SystemTime,
}

/// Where resolving a directory inside the rootfs ended.
enum Resolved {
    /// The directory, relative to the rootfs, with no symlink in it.
    Dir(PathBuf),
    /// This path, relative to the rootfs, is missing or not a directory.
    Blocked(PathBuf),
}

/// The metadata an entry carries, from its header and PAX records.
struct Attributes {
    /// Permission bits, including setuid, setgid and sticky.
    mode: u32,
    /// Owner user id.
    uid: u32,
    /// Owner group id.
    gid: u32,
    /// Modification time, also used as access time.
    mtime: SystemTime,
    /// Extended attributes as name and value.
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// What an entry creates, from its tar type.
enum Kind {
    Directory,
    File,
    Symlink,
    Hardlink,
    /// A character or block device or a fifo, with its `S_IF*` type bits.
    Node(libc::mode_t),
}

/// Why a path named by a layer is refused before touching the file system.
enum BadPath {
    Absolute,
    ParentComponent,
    NulByte,
}

impl LayerUnpack {
    /// Gives `full` the entry's owner when running as root, without following a symlink.
    fn set_owner_nofollow(
        &self,
        name: &str,
        full: &Path,
        attributes: &Attributes,
    ) -> Result<(), UnpackError> {
        if !self.privileged {
            return Ok(());
        }
        let owned = std::os::unix::fs::lchown(full, Some(attributes.uid), Some(attributes.gid));
        tolerate_ownership_failure(name, full, owned)
    }

    fn new(root: PathBuf) -> Self {
        LayerUnpack {
            root,
            privileged: running_as_root(),
            written: HashSet::new(),
            directories: Vec::new(),
            buffer: vec![0; COPY_BUFFER_SIZE],
            stats: UnpackStats::default(),
        }
    }

    /// Applies one tar entry: a whiteout, or something written at the entry's path.
    fn apply_entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let entry_type = entry.header().entry_type();

        // What the entry creates; headers that only describe other entries are skipped.
        let kind = match entry_type {
            EntryType::Directory => Kind::Directory,
            // Old tars mark directories only by a trailing slash.
            EntryType::Regular if raw_path.ends_with(b"/") => Kind::Directory,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Char => Kind::Node(libc::S_IFCHR),
            EntryType::Block => Kind::Node(libc::S_IFBLK),
            EntryType::Fifo => Kind::Node(libc::S_IFIFO),
            other => {
                debug!(entry = %name, entry_type = ?other, "skipping tar entry that writes nothing");
                return Ok(());
            }
        };

        let names = split_path(&raw_path).map_err(|bad| match bad {
            BadPath::Absolute => UnpackError::PathEscapes {
                entry: name.clone(),
                reason: "absolute paths are not allowed in a layer",
            },
            BadPath::ParentComponent => UnpackError::PathEscapes {
                entry: name.clone(),
                reason: "`..` components are not allowed in a layer",
            },
            BadPath::NulByte => {
                UnpackError::InvalidEntry { entry: name.clone(), reason: "the path has a NUL byte" }
            }
        })?;

        // An entry such as `./` names the rootfs itself: only its metadata can change.
        let Some((leaf, parents)) = names.split_last() else {
            if !matches!(kind, Kind::Directory) {
                return Err(UnpackError::InvalidEntry {
                    entry: name,
                    reason: "only a directory may name the rootfs itself",
                });
            }
            let attributes = read_attributes(entry, &name)?;
            self.write_directory(&name, PathBuf::new(), attributes)?;
            self.stats.entries += 1;
            return Ok(());
        };

        if leaf.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.apply_whiteout(&name, parents, leaf);
        }

        let attributes = read_attributes(entry, &name)?;
        let parent = match self.resolve_dir(&name, parents, true)? {
            Resolved::Dir(parent) => parent,
            Resolved::Blocked(path) => {
                return Err(UnpackError::NotADirectory { entry: name, path: self.root.join(path) });
            }
        };
        let path = parent.join(leaf);

        let written = match kind {
            Kind::Directory => {
                self.write_directory(&name, path.clone(), attributes)?;
                true
            }
            Kind::File => {
                self.write_file(entry, &name, &path, attributes)?;
                true
            }
            Kind::Symlink => {
                self.write_symlink(entry, &name, &path, attributes)?;
                true
            }
            Kind::Hardlink => {
                self.write_hardlink(entry, &name, &path)?;
                true
            }
            Kind::Node(file_type) => self.write_node(entry, &name, &path, file_type, attributes)?,
        };

        if written {
            self.record_written(path);
            self.stats.entries += 1;
        }
        Ok(())
    }

    /// Applies a whiteout entry `parents/leaf`, where `leaf` starts with `.wh.`.
    fn apply_whiteout(
        &mut self,
        name: &str,
        parents: &[&OsStr],
        leaf: &OsStr,
    ) -> Result<(), UnpackError> {
        let leaf = leaf.as_bytes();

        if leaf == OPAQUE_MARKER {
            self.stats.whiteouts += 1;
            // A directory that does not exist has no lower content to hide.
            let Resolved::Dir(dir) = self.resolve_dir(name, parents, false)? else {
                return Ok(());
            };
            let full = self.root.join(&dir);
            for child in read_dir_names(&full)? {
                self.remove_lower(dir.join(child))?;
            }
            return Ok(());
        }

        if leaf.starts_with(WHITEOUT_META_PREFIX) {
            debug!(entry = %name, "skipping whiteout metadata entry");
            return Ok(());
        }

        let hidden = &leaf[WHITEOUT_PREFIX.len()..];
        match hidden {
            b"" | b"." => {
                return Err(UnpackError::InvalidEntry {
                    entry: name.to_owned(),
                    reason: "the whiteout names no file",
                });
            }
            b".." => {
                return Err(UnpackError::PathEscapes {
                    entry: name.to_owned(),
                    reason: "the whiteout names the parent directory",
                });
            }
            _ => {}
        }

        self.stats.whiteouts += 1;
        // Nothing lower can exist below a missing directory or a file.
        let Resolved::Dir(dir) = self.resolve_dir(name, parents, false)? else {
            return Ok(());
        };
        self.remove_lower(dir.join(OsStr::from_bytes(hidden)))
    }

    /// Removes what the lower layers left at `path` (relative to the rootfs), keeping anything
    /// this layer wrote there: a directory holding this layer's entries is emptied of the rest.
    fn remove_lower(&self, path: PathBuf) -> Result<(), UnpackError> {
        let mut pending = vec![path];
        while let Some(path) = pending.pop() {
            let full = self.root.join(&path);
            let Some(metadata) = symlink_metadata_if_exists(&full)? else {
                continue;
            };

            if !self.written.contains(&path) {
                remove_existing(&full, &metadata)?;
            } else if metadata.is_dir() {
                pending.extend(read_dir_names(&full)?.into_iter().map(|child| path.join(child)));
            }
        }
        Ok(())
    }

    /// Resolves the directory named by `names` inside the rootfs, following symlinks only while
    /// they stay inside it, and returns its symlink-free path relative to the rootfs.
    ///
    /// With `create`, missing directories are created (mode 0755); otherwise resolution stops
    /// at the first missing one. A non-directory in the way always stops it.
    fn resolve_dir(
        &self,
        entry: &str,
        names: &[&OsStr],
        create: bool,
    ) -> Result<Resolved, UnpackError> {
        let mut resolved = PathBuf::new();
        let mut pending: Vec<OsString> =
            names.iter().rev().map(|name| name.to_os_string()).collect();
        let mut hops = 0;

        while let Some(name) = pending.pop() {
            // `..` only comes from symlink targets: it climbs back from the symlink's directory.
            if name == ".." {
                if !resolved.pop() {
                    return Err(UnpackError::PathEscapes {
                        entry: entry.to_owned(),
                        reason: "a symlink on its path climbs out of the rootfs",
                    });
                }
                continue;
            }

            let next = resolved.join(&name);
            let full = self.root.join(&next);
            let Some(metadata) = symlink_metadata_if_exists(&full)? else {
                if !create {
                    return Ok(Resolved::Blocked(next));
                }
                DirBuilder::new()
                    .mode(0o755)
                    .create(&full)
                    .map_err(|source| UnpackError::Write { path: full, source })?;
                resolved = next;
                continue;
            };

            if metadata.is_dir() {
                resolved = next;
            } else if metadata.is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(UnpackError::SymlinkLoop { entry: entry.to_owned() });
                }
                let target = fs::read_link(&full)
                    .map_err(|source| UnpackError::Inspect { path: full, source })?;
                let target = target.as_os_str().as_bytes();
                // TODO: absolute targets are refused rather than resolved inside the rootfs the
                // way the sandbox will see them, so a layer writing through a link such as
                // Debian's `var/run -> /run` fails. Image builders record physical paths, so
                // this is rare, but resolving chroot-style would admit those layers too.
                if target.starts_with(b"/") {
                    return Err(UnpackError::PathEscapes {
                        entry: entry.to_owned(),
                        reason: "a symlink on its path has an absolute target",
                    });
                }

                // The target continues the walk from the symlink's directory, `resolved`.
                let parts = target.split(|byte| *byte == b'/');
                let parts = parts.filter(|part| !part.is_empty() && *part != b".");
                let before = pending.len();
                pending.extend(parts.map(|part| OsStr::from_bytes(part).to_os_string()));
                pending[before..].reverse();
            } else {
                return Ok(Resolved::Blocked(next));
            }
        }

        Ok(Resolved::Dir(resolved))
    }

    /// Creates or keeps the directory at `path` (relative to the rootfs) and schedules its
    /// mode and time for the end of the layer.
    fn write_directory(
        &mut self,
        name: &str,
        path: PathBuf,
        attributes: Attributes,
    ) -> Result<(), UnpackError> {
        let full = self.root.join(&path);

        // An existing directory keeps its contents; anything else is replaced.
        match symlink_metadata_if_exists(&full)? {
            Some(metadata) if metadata.is_dir() => {}
            existing => {
                if let Some(metadata) = existing {
                    remove_existing(&full, &metadata)?;
                }
                DirBuilder::new()
                    .mode(0o755)
                    .create(&full)
                    .map_err(|source| UnpackError::Write { path: full.clone(), source })?;
            }
        }

        self.set_owner_nofollow(name, &full, &attributes)?;
        set_xattrs(name, &full, &attributes.xattrs);

        self.directories.push(DirectoryMetadata {
            path,
            mode: attributes.mode,
            mtime: attributes.mtime,
        });
        Ok(())
    }

    /// Writes a regular file at `path` (relative to the rootfs) from the entry's contents.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        name: &str,
        path: &Path,
        attributes: Attributes,
    ) -> Result<(), UnpackError> {
        let full = self.root.join(path);

        // Remove whatever is there first, so a symlink is never written through and a file
        // shared by a hardlink keeps its contents. `create_new` refuses to follow a symlink.
        replace_existing(&full)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|source| UnpackError::Write { path: full.clone(), source })?;

        let expected = entry.size();
        let copied = copy_contents(entry, &mut file, &full, &mut self.buffer)?;
        if copied != expected {
            let message = format!("entry {name:?} ended after {copied} of {expected} bytes");
            let source = io::Error::new(ErrorKind::UnexpectedEof, message);
            return Err(UnpackError::Read { source });
        }
        self.stats.bytes += copied;

        // Ownership before mode: changing the owner clears setuid and setgid.
        if self.privileged {
            let owned =
                std::os::unix::fs::fchown(&file, Some(attributes.uid), Some(attributes.gid));
            tolerate_ownership_failure(name, &full, owned)?;
        }
        file.set_permissions(Permissions::from_mode(attributes.mode))
            .map_err(|source| UnpackError::Write { path: full.clone(), source })?;
        set_xattrs(name, &full, &attributes.xattrs);
        let times = FileTimes::new().set_accessed(attributes.mtime).set_modified(attributes.mtime);
        file.set_times(times).map_err(|source| UnpackError::Write { path: full, source })?;
        Ok(())
    }

    /// Creates a symlink at `path` (relative to the rootfs). Its target may be anything; it is
    /// never followed here.
    fn write_symlink<R: Read>(
        &self,
        entry: &Entry<'_, R>,
        name: &str,
        path: &Path,
        attributes: Attributes,
    ) -> Result<(), UnpackError> {
        let full = self.root.join(path);
        let target = entry.link_name_bytes().unwrap_or_default();
        if target.is_empty() {
            return Err(UnpackError::InvalidEntry {
                entry: name.to_owned(),
                reason: "the symlink has no target",
            });
        }

        replace_existing(&full)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full)
            .map_err(|source| UnpackError::Write { path: full.clone(), source })?;

        self.set_owner_nofollow(name, &full, &attributes)?;
        set_xattrs(name, &full, &attributes.xattrs);
        set_mtime_nofollow(&full, attributes.mtime)
            .map_err(|source| UnpackError::Write { path: full, source })
    }

    /// Creates a hardlink at `path` (relative to the rootfs) to an existing path of the rootfs.
    /// A target that is a symlink is linked itself, not followed.
    fn write_hardlink<R: Read>(
        &self,
        entry: &Entry<'_, R>,
        name: &str,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let full = self.root.join(path);
        let raw_target = entry.link_name_bytes().unwrap_or_default().into_owned();
        let target_name = String::from_utf8_lossy(&raw_target).into_owned();
        let missing = || UnpackError::HardlinkTargetMissing {
            entry: name.to_owned(),
            target: target_name.clone(),
        };

        let names = split_path(&raw_target).map_err(|bad| match bad {
            BadPath::Absolute => UnpackError::PathEscapes {
                entry: name.to_owned(),
                reason: "the hardlink target is an absolute path",
            },
            BadPath::ParentComponent => UnpackError::PathEscapes {
                entry: name.to_owned(),
                reason: "the hardlink target has a `..` component",
            },
            BadPath::NulByte => UnpackError::InvalidEntry {
                entry: name.to_owned(),
                reason: "the hardlink target has a NUL byte",
            },
        })?;
        let Some((leaf, parents)) = names.split_last() else {
            return Err(UnpackError::InvalidEntry {
                entry: name.to_owned(),
                reason: "the hardlink has no target",
            });
        };

        // The target's directories resolve by the same rules as entry paths; its last
        // component is taken as it is.
        let Resolved::Dir(target_dir) = self.resolve_dir(name, parents, false)? else {
            return Err(missing());
        };
        let target = target_dir.join(leaf);
        let target_full = self.root.join(&target);
        if symlink_metadata_if_exists(&target_full)?.is_none() {
            return Err(missing());
        }

        // A link to itself is already in place; removing it first would lose it.
        if target == path {
            return Ok(());
        }

        replace_existing(&full)?;
        fs::hard_link(&target_full, &full)
            .map_err(|source| UnpackError::Write { path: full, source })
    }

    /// Creates a device node or fifo at `path` (relative to the rootfs). Returns false when
    /// the process may not create it, which is common for devices outside the host's root.
    fn write_node<R: Read>(
        &self,
        entry: &Entry<'_, R>,
        name: &str,
        path: &Path,
        file_type: libc::mode_t,
        attributes: Attributes,
    ) -> Result<bool, UnpackError> {
        let full = self.root.join(path);
        let header_error = |source| UnpackError::Header { entry: name.to_owned(), source };

        // A fifo has no device number, and tars often leave its fields empty.
        let (major, minor) = if file_type == libc::S_IFIFO {
            (0, 0)
        } else {
            let header = entry.header();
            let major = header.device_major().map_err(header_error)?.unwrap_or(0);
            let minor = header.device_minor().map_err(header_error)?.unwrap_or(0);
            (major, minor)
        };

        replace_existing(&full)?;
        match make_node(&full, file_type | attributes.mode, major, minor) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EPERM) => {
                debug!(entry = %name, "skipping device node the process may not create");
                return Ok(false);
            }
            Err(source) => return Err(UnpackError::Write { path: full, source }),
        }

        self.set_owner_nofollow(name, &full, &attributes)?;
        // The node was just created at this path, so this does not follow a symlink.
        fs::set_permissions(&full, Permissions::from_mode(attributes.mode))
            .map_err(|source| UnpackError::Write { path: full.clone(), source })?;
        set_xattrs(name, &full, &attributes.xattrs);
        set_mtime_nofollow(&full, attributes.mtime)
            .map_err(|source| UnpackError::Write { path: full, source })?;
        Ok(true)
    }

    /// Records that `path` (relative to the rootfs) holds this layer's content, along with its
    /// ancestors, so whiteouts of this layer leave it alone.
    fn record_written(&mut self, path: PathBuf) {
        let mut path = path;
        while self.written.insert(path.clone()) {
            if !path.pop() || path.as_os_str().is_empty() {
                break;
            }
        }
    }

    /// Applies the deferred directory modes and times, skipping directories that later entries
    /// of the layer replaced.
    fn finish_directories(&self) -> Result<(), UnpackError> {
        for directory in &self.directories {
            let full = self.root.join(&directory.path);
            if !self.is_plain_directory(&directory.path)? {
                debug!(path = %full.display(), "skipping metadata of a replaced directory");
                continue;
            }

            let handle = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&full)
                .map_err(|source| UnpackError::Write { path: full.clone(), source })?;
            handle
                .set_permissions(Permissions::from_mode(directory.mode))
                .map_err(|source| UnpackError::Write { path: full.clone(), source })?;
            let times =
                FileTimes::new().set_accessed(directory.mtime).set_modified(directory.mtime);
            handle.set_times(times).map_err(|source| UnpackError::Write { path: full, source })?;
        }
        Ok(())
    }

    /// Whether `path` (relative to the rootfs) and each of its ancestors is a directory and
    /// not a symlink, so that opening it cannot leave the rootfs.
    fn is_plain_directory(&self, path: &Path) -> Result<bool, UnpackError> {
        let mut full = self.root.clone();
        for component in path.components() {
            full.push(component);
            match symlink_metadata_if_exists(&full)? {
                Some(metadata) if metadata.is_dir() => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Splits a path named by a layer into its components, dropping empty and `.` ones.
fn split_path(raw: &[u8]) -> Result<Vec<&OsStr>, BadPath> {
    if raw.starts_with(b"/") {
        return Err(BadPath::Absolute);
    }
    if raw.contains(&0) {
        return Err(BadPath::NulByte);
    }

    let mut names = Vec::new();
    for part in raw.split(|byte| *byte == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(BadPath::ParentComponent),
            name => names.push(OsStr::from_bytes(name)),
        }
    }
    Ok(names)
}

/// Reads an entry's mode, owner, time and extended attributes, letting PAX records override
/// the header fields.
fn read_attributes<R: Read>(
    entry: &mut Entry<'_, R>,
    name: &str,
) -> Result<Attributes, UnpackError> {
    let header_error = |source| UnpackError::Header { entry: name.to_owned(), source };
    let invalid =
        |what: &str| header_error(io::Error::new(ErrorKind::InvalidData, what.to_owned()));

    let header = entry.header();
    let mode = header.mode().map_err(header_error)? & 0o7777;
    let mut uid = header.uid().map_err(header_error)?;
    let mut gid = header.gid().map_err(header_error)?;
    let mut mtime =
        SystemTime::UNIX_EPOCH + Duration::from_secs(header.mtime().map_err(header_error)?);
    let mut xattrs = Vec::new();

    if let Some(extensions) = entry.pax_extensions().map_err(header_error)? {
        for extension in extensions {
            let extension = extension.map_err(header_error)?;
            let key = extension.key_bytes();
            let value = extension.value_bytes();

            if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                xattrs.push((OsStr::from_bytes(xattr).to_os_string(), value.to_vec()));
                continue;
            }
            match key {
                b"uid" => uid = parse_decimal(value).ok_or_else(|| invalid("invalid pax uid"))?,
                b"gid" => gid = parse_decimal(value).ok_or_else(|| invalid("invalid pax gid"))?,
                b"mtime" => {
                    mtime = parse_pax_time(value).ok_or_else(|| invalid("invalid pax mtime"))?
                }
                _ => {}
            }
        }
    }

    Ok(Attributes {
        mode,
        uid: u32::try_from(uid).map_err(|_| invalid("uid does not fit in 32 bits"))?,
        gid: u32::try_from(gid).map_err(|_| invalid("gid does not fit in 32 bits"))?,
        mtime,
        xattrs,
    })
}

/// Parses an unsigned decimal PAX value.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parses a PAX time, decimal seconds with an optional fraction. Times before the epoch are
/// clamped to it.
fn parse_pax_time(value: &[u8]) -> Option<SystemTime> {
    let value = std::str::from_utf8(value).ok()?;
    if value.starts_with('-') {
        return Some(SystemTime::UNIX_EPOCH);
    }

    let (seconds, fraction) = value.split_once('.').unwrap_or((value, ""));
    let seconds: u64 = seconds.parse().ok()?;
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let digits = &fraction[..fraction.len().min(9)];
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Copies an entry's contents into `file` through `buffer`, telling read failures of the
/// layer stream apart from write failures of the rootfs.
fn copy_contents(
    contents: &mut impl Read,
    file: &mut File,
    path: &Path,
    buffer: &mut [u8],
) -> Result<u64, UnpackError> {
    let mut copied = 0;
    loop {
        let read = match contents.read(buffer) {
            Ok(0) => return Ok(copied),
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(source) => return Err(UnpackError::Read { source }),
        };
        file.write_all(&buffer[..read])
            .map_err(|source| UnpackError::Write { path: path.to_path_buf(), source })?;
        copied += read as u64;
    }
}

/// The metadata of `path` without following a symlink there, or `None` if nothing is there.
fn symlink_metadata_if_exists(path: &Path) -> Result<Option<Metadata>, UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UnpackError::Inspect { path: path.to_path_buf(), source }),
    }
}

/// Removes whatever is at `path`, a whole tree for a directory, so a new entry can take it.
fn replace_existing(path: &Path) -> Result<(), UnpackError> {
    match symlink_metadata_if_exists(path)? {
        Some(metadata) => remove_existing(path, &metadata),
        None => Ok(()),
    }
}

/// Removes `path`, described by `metadata`. Directories go with their contents; symlinks are
/// removed themselves, never followed.
fn remove_existing(path: &Path, metadata: &Metadata) -> Result<(), UnpackError> {
    let removed = if metadata.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    removed.map_err(|source| UnpackError::Remove { path: path.to_path_buf(), source })
}

/// The names in directory `path`.
fn read_dir_names(path: &Path) -> Result<Vec<OsString>, UnpackError> {
    let inspect_error = |source| UnpackError::Inspect { path: path.to_path_buf(), source };
    fs::read_dir(path)
        .map_err(inspect_error)?
        .map(|child| child.map(|child| child.file_name()).map_err(inspect_error))
        .collect()
}

/// Accepts an ownership change refused by the kernel (no privilege, or an id unmapped in a
/// user namespace), logging it; other failures stop the unpack.
fn tolerate_ownership_failure(
    name: &str,
    path: &Path,
    result: io::Result<()>,
) -> Result<(), UnpackError> {
    match result {
        Ok(()) => Ok(()),
        Err(error) if matches!(error.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {
            debug!(entry = %name, %error, "leaving ownership unchanged");
            Ok(())
        }
        Err(source) => Err(UnpackError::Write { path: path.to_path_buf(), source }),
    }
}

/// Sets extended attributes on `path` without following a symlink there. File systems that
/// refuse them (tmpfs, `user.*` on symlinks, `security.*` without privilege) are logged only.
fn set_xattrs(name: &str, path: &Path, xattrs: &[(OsString, Vec<u8>)]) {
    for (key, value) in xattrs {
        if let Err(error) = set_xattr_nofollow(path, key, value) {
            debug!(entry = %name, key = ?key, %error, "skipping extended attribute");
        }
    }
}

/// Whether the process runs with effective user id 0, and so may set ownership.
fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Creates a device node or fifo; `mode` holds the `S_IF*` type and permission bits.
fn make_node(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};

    let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
    let permissions = Mode::from_bits_truncate(mode & 0o7777);
    mknod(path, kind, permissions, makedev(major.into(), minor.into())).map_err(io::Error::from)
}

/// Sets the access and modification times of `path` to `mtime`, on a symlink itself rather
/// than its target (std has no stable way to do this).
fn set_mtime_nofollow(path: &Path, mtime: SystemTime) -> io::Result<()> {
    use nix::sys::{
        stat::{UtimensatFlags, utimensat},
        time::TimeSpec,
    };

    let since_epoch = mtime.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let time = TimeSpec::from_duration(since_epoch);
    utimensat(nix::fcntl::AT_FDCWD, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(io::Error::from)
}

/// Sets one extended attribute on `path` without following a symlink there.
fn set_xattr_nofollow(path: &Path, key: &OsStr, value: &[u8]) -> io::Result<()> {
    xattr::set(path, key, value)
}

#[cfg(test)]
mod tests;
