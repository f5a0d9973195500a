//! Applying layers onto directories: same tree as `umoci unpack`, whiteouts
//! and opaque directories as the OCI spec says, and no tar entry can write
//! or link outside the root.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{is_root, run_ok};
use rbuild::cache::ContentStore;
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::layout::write_oci_layout_dir;
use rbuild::image::media::MediaTypes;
use rbuild::image::Reference;
use rbuild::snapshot::{apply_gzip_layer, apply_layer, ApplyError, ApplyOptions};

/// (type, mode, uid, gid, content or link target) per relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, (String, u32, u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, data) = if ft.is_symlink() {
                (
                    "link",
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", std::fs::read(&path).unwrap())
            } else {
                ("other", format!("{:x}", meta.rdev()).into_bytes())
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                meta.permissions().mode() & 0o7777
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                (kind.to_string(), mode, meta.uid(), meta.gid(), data),
            );
        }
    }
    out
}

#[test]
fn busybox_layer_matches_umoci_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let image = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    let layer = &image.layers[0];
    let stats = apply_gzip_layer(
        &mine,
        store.open_blob(&layer.digest).unwrap(),
        layer.digest.as_str(),
        ApplyOptions::default(),
    )
    .unwrap();
    assert!(stats.written > 250, "{stats:?}");

    let names: Vec<Reference> = vec!["localhost/cmp/busybox:1".parse().unwrap()];
    write_oci_layout_dir(&store, &dir.path().join("layout"), &[(&image, &names)]).unwrap();
    let bundle = dir.path().join("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if !is_root() {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!("{}:1", dir.path().join("layout").display()))
            .arg(&bundle),
    );
    let theirs = tree(&bundle.join("rootfs"));
    let ours = tree(&mine);
    assert_eq!(ours.len(), theirs.len());
    for (path, entry) in &theirs {
        assert_eq!(ours.get(path), Some(entry), "{}", path.display());
    }
}

/// A tar entry written with raw header bytes, so names the `tar` crate
/// refuses to write (`..`, absolute) can be tested.
struct RawEntry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
}

fn raw(name: &str, kind: tar::EntryType) -> RawEntry<'_> {
    RawEntry {
        name,
        kind,
        link: "",
        data: b"",
        mode: 0o644,
    }
}

fn tarball(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let bytes = e.name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_cksum();
        out.append(&h, e.data).unwrap();
    }
    out.into_inner().unwrap()
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        data,
        ..raw(name, tar::EntryType::Regular)
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        link: target,
        mode: 0o777,
        ..raw(name, kind)
    }
}

#[test]
fn every_escape_is_refused_and_nothing_lands_outside() {
    use tar::EntryType::{Directory, Link, Symlink};
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        ("dot-dot name", vec![file("../evil", b"x")]),
        ("nested dot-dot", vec![file("a/../../evil", b"x")]),
        ("absolute name", vec![file("/evil", b"x")]),
        (
            "absolute symlink then file through it",
            vec![link("s", Symlink, "/"), file("s/evil", b"x")],
        ),
        (
            "climbing symlink then file through it",
            vec![link("s", Symlink, "../.."), file("s/evil", b"x")],
        ),
        (
            "symlink to outside dir then nested file",
            vec![
                raw("d", Directory),
                link("d/up", Symlink, "../../outside"),
                file("d/up/evil", b"x"),
            ],
        ),
        (
            "hardlink to dot-dot",
            vec![link("h", Link, "../outside/secret")],
        ),
        (
            "hardlink to absolute path",
            vec![link("h", Link, "/etc/passwd")],
        ),
        (
            "hardlink through an escaping symlink",
            vec![link("s", Symlink, "/etc"), link("h", Link, "s/passwd")],
        ),
        (
            "whiteout through an escaping symlink",
            vec![
                link("s", Symlink, "../outside"),
                raw("s/.wh.secret", tar::EntryType::Regular),
            ],
        ),
    ];
    for (what, entries) in cases {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"keep").unwrap();
        let before = tree(base.path());
        let err = apply_layer(
            &root,
            tarball(&entries).as_slice(),
            "sha256:test",
            ApplyOptions::default(),
        )
        .expect_err(what);
        assert!(matches!(err, ApplyError::Escape { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("sha256:test") && text.contains("escapes the root"),
            "{what}: {text}"
        );
        assert_eq!(
            std::fs::read(outside.join("secret")).unwrap(),
            b"keep",
            "{what}"
        );
        let after = tree(base.path());
        let outside_before: Vec<_> = before.keys().filter(|p| !p.starts_with("root")).collect();
        let outside_after: Vec<_> = after.keys().filter(|p| !p.starts_with("root")).collect();
        assert_eq!(
            outside_before, outside_after,
            "{what}: nothing new outside the root"
        );
        assert!(
            !base.path().join("evil").exists() && !Path::new("/evil").exists(),
            "{what}"
        );
    }
}

#[test]
fn in_root_symlinks_resolve_like_usrmerge() {
    use tar::EntryType::{Directory, Symlink};
    let base = tempfile::tempdir().unwrap();
    let root = base.path();
    let layer = tarball(&[
        raw("usr", Directory),
        raw("usr/lib", Directory),
        link("lib", Symlink, "usr/lib"),
        file("lib/libx.so", b"elf"),
    ]);
    apply_layer(root, layer.as_slice(), "l", ApplyOptions::default()).unwrap();
    assert_eq!(std::fs::read(root.join("usr/lib/libx.so")).unwrap(), b"elf");
}

#[test]
fn whiteouts_opaque_directories_and_replacements() {
    use tar::EntryType::{Directory, Link, Symlink};
    let base = tempfile::tempdir().unwrap();
    let root = base.path();
    let lower = tarball(&[
        raw("a", Directory),
        file("a/x", b"x"),
        file("a/y", b"y"),
        raw("b", Directory),
        file("b/old", b"old"),
        raw("b/sub", Directory),
        file("b/sub/deep", b"deep"),
        file("c", b"c is a file"),
        raw("d", Directory),
        file("d/keep", b"keep"),
    ]);
    apply_layer(root, lower.as_slice(), "lower", ApplyOptions::default()).unwrap();
    let upper = tarball(&[
        raw("a/.wh.x", tar::EntryType::Regular),
        file("b/new", b"new"),
        raw("b/.wh..wh..opq", tar::EntryType::Regular),
        raw("c", Directory),
        file("c/inside", b"now a dir"),
        file("d", b"d is now a file"),
        link("y-link", Symlink, "a/y"),
        link("y-hard", Link, "a/y"),
        RawEntry {
            mode: 0o4755,
            ..file("suid", b"#!")
        },
    ]);
    let stats = apply_layer(root, upper.as_slice(), "upper", ApplyOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 2);
    let got: Vec<String> = tree(root).keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        got,
        ["a", "a/y", "b", "b/new", "c", "c/inside", "d", "suid", "y-hard", "y-link"],
        "x whited out; b made opaque (its new file kept); c file→dir; d dir→file"
    );
    assert_eq!(std::fs::read(root.join("d")).unwrap(), b"d is now a file");
    assert_eq!(
        std::fs::read_link(root.join("y-link")).unwrap(),
        Path::new("a/y")
    );
    assert_eq!(
        std::fs::metadata(root.join("y-hard")).unwrap().ino(),
        std::fs::metadata(root.join("a/y")).unwrap().ino()
    );
    assert_eq!(
        std::fs::metadata(root.join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(root.join("b/new")).unwrap().mtime(),
        1_000_000
    );
    assert_eq!(
        std::fs::metadata(root.join("c")).unwrap().mtime(),
        1_000_000,
        "dir times set after children"
    );
}

#[test]
fn ownership_xattrs_and_devices_when_root() {
    if !is_root() {
        common::skip("needs root for chown, trusted xattrs and mknod");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(2);
    b.append_pax_extensions([("SCHILY.xattr.user.rbuild", b"yes".as_slice())])
        .unwrap();
    b.append_data(&mut h, "owned", b"hi".as_slice()).unwrap();
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Char);
    d.set_mode(0o666);
    d.set_device_major(1).unwrap();
    d.set_device_minor(3).unwrap();
    d.set_size(0);
    b.append_data(&mut d, "null", std::io::empty()).unwrap();
    let layer = b.into_inner().unwrap();
    apply_layer(base.path(), layer.as_slice(), "l", ApplyOptions::default()).unwrap();
    let meta = std::fs::metadata(base.path().join("owned")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    let mut value = [0u8; 8];
    let n = rustix::fs::getxattr(base.path().join("owned"), "user.rbuild", &mut value).unwrap();
    assert_eq!(&value[..n], b"yes");
    let null = std::fs::metadata(base.path().join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let mut buf = Vec::new();
    std::fs::File::open(base.path().join("owned"))
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap();
    assert_eq!(buf, b"hi");
}
