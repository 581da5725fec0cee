//! Tests of layer unpacking: formats, whiteouts, and every way out of the rootfs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use tar::{Builder, Header};
use tempfile::TempDir;

use super::*;

/// The modification time every test entry carries.
const MTIME: u64 = 1_600_000_000;

/// A layer tar built in memory, entry by entry. Paths are written into the header as raw
/// bytes, so tests can build the malicious names `tar::Builder` refuses.
struct TestLayer {
    builder: Builder<Vec<u8>>,
}

impl TestLayer {
    fn new() -> Self {
        TestLayer { builder: Builder::new(Vec::new()) }
    }

    fn entry(
        mut self,
        path: &[u8],
        kind: EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> Self {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(path.as_bytes(), EntryType::Directory, mode, None, b"")
    }

    fn file(self, path: &str, mode: u32, contents: &[u8]) -> Self {
        self.entry(path.as_bytes(), EntryType::Regular, mode, None, contents)
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path.as_bytes(), EntryType::Symlink, 0o777, Some(target), b"")
    }

    fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(path.as_bytes(), EntryType::Link, 0o644, Some(target), b"")
    }

    /// Appends a PAX extended header whose records apply to the next entry.
    fn pax(mut self, records: &[(&str, &str)]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // The length counts itself, so grow it until its digits fit.
            let body = format!(" {key}={value}\n");
            let mut length = body.len();
            while length.to_string().len() + body.len() != length {
                length = length.to_string().len() + body.len();
            }
            data.extend_from_slice(format!("{length}{body}").as_bytes());
        }
        let mut header = Header::new_ustar();
        header.set_path("PaxHeaders/entry").unwrap();
        header.set_entry_type(EntryType::XHeader);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data.as_slice()).unwrap();
        self
    }

    fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// A temporary directory holding `rootfs` and a sibling `outside` that no layer may touch.
struct Sandbox {
    _temp: TempDir,
    rootfs: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let rootfs = temp.path().join("rootfs");
        let outside = temp.path().join("outside");
        fs::create_dir(&rootfs).unwrap();
        fs::create_dir(&outside).unwrap();
        Sandbox { _temp: temp, rootfs, outside }
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
        unpack_layer(tar, Compression::None, &self.rootfs)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.rootfs.join(relative)
    }

    fn exists(&self, relative: &str) -> bool {
        fs::symlink_metadata(self.path(relative)).is_ok()
    }

    fn outside_is_empty(&self) -> bool {
        fs::read_dir(&self.outside).unwrap().next().is_none()
    }
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(tar).unwrap();
    encoder.finish().unwrap()
}

fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(tar, 0).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn assert_escapes(result: Result<UnpackStats, UnpackError>, expected_entry: &str) {
    match result {
        Err(UnpackError::PathEscapes { entry, .. }) => assert_eq!(entry, expected_entry),
        other => panic!("expected PathEscapes for {expected_entry:?}, got {other:?}"),
    }
}

#[test]
fn layers_unpack_files_directories_and_links_with_their_modes_in_every_compression() {
    let tar = TestLayer::new()
        .dir("etc/", 0o750)
        .file("etc/passwd", 0o644, b"root:x:0:0\n")
        .file("usr/bin/su", 0o4755, b"#!/bin/sh\n")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .hardlink("etc/passwd-", "etc/passwd")
        .tar();

    let blobs = [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (Compression::Zstd, zstd(&tar)),
    ];
    for (compression, blob) in blobs {
        let sandbox = Sandbox::new();
        let stats = unpack_layer(blob.as_slice(), compression, &sandbox.rootfs).unwrap();

        assert_eq!(stats, UnpackStats { entries: 5, bytes: 21, whiteouts: 0 }, "{compression:?}");
        assert_eq!(fs::read(sandbox.path("etc/passwd")).unwrap(), b"root:x:0:0\n");
        assert_eq!(mode(&sandbox.path("etc")), 0o750);
        assert_eq!(mode(&sandbox.path("etc/passwd")), 0o644);
        assert_eq!(mode(&sandbox.path("usr/bin/su")), 0o4755);
        assert_eq!(
            fs::read_link(sandbox.path("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );

        let original = fs::metadata(sandbox.path("etc/passwd")).unwrap();
        let link = fs::metadata(sandbox.path("etc/passwd-")).unwrap();
        assert_eq!(original.ino(), link.ino());

        let expected_mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME);
        assert_eq!(original.modified().unwrap(), expected_mtime);
        let etc = fs::metadata(sandbox.path("etc")).unwrap();
        assert_eq!(etc.modified().unwrap(), expected_mtime);
        let localtime = fs::symlink_metadata(sandbox.path("etc/localtime")).unwrap();
        assert_eq!(localtime.modified().unwrap(), expected_mtime);
    }
}

#[test]
fn whiteouts_delete_a_lower_file_and_a_lower_directory_tree() {
    let sandbox = Sandbox::new();
    let lower = TestLayer::new()
        .dir("a/", 0o755)
        .file("a/keep", 0o644, b"keep")
        .file("a/gone", 0o644, b"gone")
        .file("a/tree/deep/file", 0o644, b"deep")
        .tar();
    sandbox.unpack(&lower).unwrap();

    let upper =
        TestLayer::new().file("a/.wh.gone", 0o644, b"").file("a/.wh.tree", 0o644, b"").tar();
    let stats = sandbox.unpack(&upper).unwrap();

    assert_eq!(stats.whiteouts, 2);
    assert_eq!(stats.entries, 0);
    assert!(sandbox.exists("a/keep"));
    assert!(!sandbox.exists("a/gone"));
    assert!(!sandbox.exists("a/tree"));
    assert!(!sandbox.exists("a/.wh.gone"));
}

#[test]
fn opaque_whiteouts_clear_lower_contents_but_keep_entries_of_their_own_layer() {
    let sandbox = Sandbox::new();
    let lower = TestLayer::new()
        .file("d/old", 0o644, b"old")
        .file("d/sub/old", 0o644, b"old")
        .file("d/sub/deeper/old", 0o644, b"old")
        .file("other/old", 0o644, b"old")
        .tar();
    sandbox.unpack(&lower).unwrap();

    // The marker comes after this layer's own entries in the directory.
    let upper = TestLayer::new()
        .file("d/new", 0o644, b"new")
        .file("d/sub/new", 0o644, b"new")
        .file("d/.wh..wh..opq", 0o644, b"")
        .tar();
    let stats = sandbox.unpack(&upper).unwrap();

    assert_eq!(stats.whiteouts, 1);
    assert!(sandbox.exists("d/new"));
    assert!(sandbox.exists("d/sub/new"));
    assert!(!sandbox.exists("d/old"));
    assert!(!sandbox.exists("d/sub/old"));
    assert!(!sandbox.exists("d/sub/deeper"));
    assert!(!sandbox.exists("d/.wh..wh..opq"));
    assert!(sandbox.exists("other/old"));
}

#[test]
fn whiteouts_leave_entries_of_their_own_layer_alone() {
    let sandbox = Sandbox::new();
    let layer =
        TestLayer::new().file("a/file", 0o644, b"same layer").file("a/.wh.file", 0o644, b"").tar();
    sandbox.unpack(&layer).unwrap();

    assert_eq!(fs::read(sandbox.path("a/file")).unwrap(), b"same layer");
}

#[test]
fn whiteouts_naming_the_parent_directory_are_refused() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().file("a/b/c", 0o644, b"c").file("a/b/.wh...", 0o644, b"").tar();

    assert_escapes(sandbox.unpack(&layer), "a/b/.wh...");
    assert!(sandbox.exists("a/b/c"));
}

#[test]
fn entries_with_parent_components_are_refused_and_nothing_lands_outside() {
    for name in ["../x", "a/../../x", "../outside/x"] {
        let sandbox = Sandbox::new();
        let layer = TestLayer::new().entry(name.as_bytes(), EntryType::Regular, 0o644, None, b"x");

        assert_escapes(sandbox.unpack(&layer.tar()), name);
        assert!(sandbox.outside_is_empty());
        assert!(!sandbox.rootfs.parent().unwrap().join("x").exists());
    }
}

#[test]
fn absolute_entry_paths_are_refused() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().entry(b"/etc/x", EntryType::Regular, 0o644, None, b"x").tar();

    assert_escapes(sandbox.unpack(&layer), "/etc/x");
    assert!(!sandbox.exists("etc"));
}

#[test]
fn files_through_a_symlink_with_an_absolute_target_are_refused() {
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_str().unwrap().to_owned();
    for target in [outside.as_str(), "/"] {
        let layer = TestLayer::new().symlink("evil", target).file("evil/x", 0o644, b"x").tar();

        assert_escapes(sandbox.unpack(&layer), "evil/x");
        assert!(!sandbox.outside.join("x").exists());
        assert!(sandbox.outside_is_empty());
    }
}

#[test]
fn files_through_a_symlink_that_climbs_out_of_the_rootfs_are_refused() {
    let sandbox = Sandbox::new();
    let layer =
        TestLayer::new().symlink("a/evil", "../../outside").file("a/evil/x", 0o644, b"x").tar();

    assert_escapes(sandbox.unpack(&layer), "a/evil/x");
    assert!(sandbox.outside_is_empty());
}

#[test]
fn hardlinks_to_targets_outside_the_rootfs_are_refused() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.outside.join("secret"), b"secret").unwrap();
    let layer = TestLayer::new().hardlink("stolen", "../outside/secret").tar();

    assert_escapes(sandbox.unpack(&layer), "stolen");
    assert!(!sandbox.exists("stolen"));
    assert_eq!(fs::metadata(sandbox.outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn hardlinks_through_a_symlink_out_of_the_rootfs_are_refused() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.outside.join("secret"), b"secret").unwrap();
    let outside = sandbox.outside.to_str().unwrap().to_owned();
    let layer = TestLayer::new().symlink("evil", &outside).hardlink("stolen", "evil/secret").tar();

    assert_escapes(sandbox.unpack(&layer), "stolen");
    assert!(!sandbox.exists("stolen"));
}

#[test]
fn hardlinks_to_missing_targets_are_refused() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().hardlink("link", "missing/file").tar();

    match sandbox.unpack(&layer) {
        Err(UnpackError::HardlinkTargetMissing { entry, target }) => {
            assert_eq!(entry, "link");
            assert_eq!(target, "missing/file");
        }
        other => panic!("expected HardlinkTargetMissing, got {other:?}"),
    }
}

#[test]
fn hardlinks_to_symlinks_link_the_symlink_itself() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().symlink("sym", "/does/not/exist").hardlink("link", "sym").tar();
    sandbox.unpack(&layer).unwrap();

    let link = fs::symlink_metadata(sandbox.path("link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(link.ino(), fs::symlink_metadata(sandbox.path("sym")).unwrap().ino());
}

#[test]
fn files_through_a_relative_symlink_inside_the_rootfs_land_at_its_target() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new()
        .dir("usr/bin/", 0o755)
        .symlink("bin", "usr/bin")
        .file("bin/sh", 0o755, b"#!")
        .tar();
    sandbox.unpack(&layer).unwrap();

    assert!(fs::symlink_metadata(sandbox.path("bin")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(sandbox.path("usr/bin/sh")).unwrap(), b"#!");
    assert!(sandbox.outside_is_empty());
}

#[test]
fn symlink_loops_are_refused() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().symlink("a", "b").symlink("b", "a").file("a/x", 0o644, b"x").tar();

    assert!(matches!(
        sandbox.unpack(&layer),
        Err(UnpackError::SymlinkLoop { entry }) if entry == "a/x"
    ));
}

#[test]
fn truncated_gzip_layers_fail_with_a_read_error() {
    let sandbox = Sandbox::new();
    // Contents that do not compress, so the cut lands inside the file.
    let contents: Vec<u8> =
        (0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let blob = gzip(&TestLayer::new().file("big", 0o644, &contents).tar());
    let truncated = &blob[..blob.len() / 2];

    let result = unpack_layer(truncated, Compression::Gzip, &sandbox.rootfs);
    assert!(matches!(result, Err(UnpackError::Read { .. })), "{result:?}");
}

#[test]
fn gzip_layers_with_a_corrupt_checksum_fail_with_a_read_error() {
    let sandbox = Sandbox::new();
    let mut blob = gzip(&TestLayer::new().file("small", 0o644, b"small").tar());
    // The trailer is the CRC32 of the contents, then their length.
    let crc = blob.len() - 8;
    blob[crc] ^= 0xff;

    let result = unpack_layer(blob.as_slice(), Compression::Gzip, &sandbox.rootfs);
    assert!(matches!(result, Err(UnpackError::Read { .. })), "{result:?}");
}

#[test]
fn files_replace_symlinks_instead_of_writing_through_them() {
    let sandbox = Sandbox::new();
    let victim = sandbox.outside.join("file");
    fs::write(&victim, b"original").unwrap();
    let lower = TestLayer::new().symlink("link", victim.to_str().unwrap()).tar();
    sandbox.unpack(&lower).unwrap();

    let upper = TestLayer::new().file("link", 0o644, b"replaced").tar();
    sandbox.unpack(&upper).unwrap();

    let link = fs::symlink_metadata(sandbox.path("link")).unwrap();
    assert!(link.file_type().is_file());
    assert_eq!(fs::read(sandbox.path("link")).unwrap(), b"replaced");
    assert_eq!(fs::read(&victim).unwrap(), b"original");
}

#[test]
fn entries_replace_lower_entries_of_another_type() {
    let sandbox = Sandbox::new();
    let lower = TestLayer::new()
        .file("was_dir/child", 0o644, b"child")
        .file("was_file", 0o644, b"file")
        .file("still_dir/child", 0o644, b"child")
        .tar();
    sandbox.unpack(&lower).unwrap();

    let upper = TestLayer::new()
        .file("was_dir", 0o600, b"now a file")
        .dir("was_file/", 0o755)
        .dir("still_dir/", 0o700)
        .tar();
    sandbox.unpack(&upper).unwrap();

    assert_eq!(fs::read(sandbox.path("was_dir")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(sandbox.path("was_file")).unwrap().is_dir());
    assert!(sandbox.exists("still_dir/child"));
    assert_eq!(mode(&sandbox.path("still_dir")), 0o700);
}

#[test]
fn fifos_are_created_as_fifos() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().entry(b"run/pipe", EntryType::Fifo, 0o620, None, b"").tar();
    sandbox.unpack(&layer).unwrap();

    let pipe = fs::symlink_metadata(sandbox.path("run/pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o620);
}

#[test]
fn leading_dot_slash_paths_unpack_inside_the_rootfs() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new().dir("./", 0o755).file("./etc/hostname", 0o644, b"sandbox").tar();
    let stats = sandbox.unpack(&layer).unwrap();

    assert_eq!(stats.entries, 2);
    assert_eq!(fs::read(sandbox.path("etc/hostname")).unwrap(), b"sandbox");
}

#[test]
fn pax_records_override_the_header_time_and_xattrs_never_fail_the_unpack() {
    let sandbox = Sandbox::new();
    let layer = TestLayer::new()
        .pax(&[("mtime", "1234567890.5"), ("SCHILY.xattr.user.origin", "layer")])
        .file("stamped", 0o644, b"x")
        .tar();
    sandbox.unpack(&layer).unwrap();

    let modified = fs::metadata(sandbox.path("stamped")).unwrap().modified().unwrap();
    assert_eq!(modified, SystemTime::UNIX_EPOCH + Duration::new(1_234_567_890, 500_000_000));
}

#[test]
fn media_types_map_to_their_compression() {
    let cases = [
        ("application/vnd.oci.image.layer.v1.tar", Some(Compression::None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Compression::Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Compression::Zstd)),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar", Some(Compression::None)),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Some(Compression::Gzip)),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Some(Compression::Zstd)),
        ("application/vnd.docker.image.rootfs.diff.tar", Some(Compression::None)),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", Some(Compression::Gzip)),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Some(Compression::Gzip)),
        ("application/vnd.oci.image.config.v1+json", None),
        ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
        ("", None),
    ];

    for (media_type, expected) in cases {
        match (Compression::from_media_type(media_type), expected) {
            (Ok(compression), Some(expected)) => assert_eq!(compression, expected),
            (Err(UnpackError::UnsupportedMediaType { media_type: reported }), None) => {
                assert_eq!(reported, media_type)
            }
            (result, expected) => {
                panic!("{media_type:?}: got {result:?}, expected {expected:?}")
            }
        }
    }
}
