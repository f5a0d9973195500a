//! The escape corpus: COPY and ADD must never read outside the build
//! context nor write outside the image's root. Every attempt here is
//! either refused with an error naming the entry, or resolved inside the
//! context/root as docker does; a canary directory on the host must stay
//! empty and a canary file unchanged in every case.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use common::stderr;

/// A tar whose entries are written byte for byte (names with `..` or a
/// leading `/` included, which the tar crate's helpers refuse).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        out.append(&header, *data).unwrap();
    }
    out.into_inner().unwrap()
}

struct Setup {
    work: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let work = tempfile::tempdir().unwrap();
        let p = work.path();
        std::fs::create_dir_all(p.join("canary-dir")).unwrap();
        std::fs::write(p.join("canary-file"), "untouched\n").unwrap();
        std::fs::create_dir_all(p.join("ctx/inside")).unwrap();
        std::fs::write(p.join("ctx/a.txt"), "a\n").unwrap();
        std::fs::write(p.join("secret-outside"), "must not be read\n").unwrap();
        std::os::unix::fs::symlink("/etc", p.join("ctx/to-etc")).unwrap();
        std::os::unix::fs::symlink(p.join("secret-outside"), p.join("ctx/to-secret")).unwrap();
        std::os::unix::fs::symlink("../secret-outside", p.join("ctx/up-secret")).unwrap();
        std::os::unix::fs::symlink("../../..", p.join("ctx/inside/way-up")).unwrap();
        Setup { work }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.work.path().join(rel)
    }

    fn build(&self, dockerfile: &str) -> Output {
        let file = self.path("Dockerfile");
        std::fs::write(
            &file,
            dockerfile.replace("{WORK}", &self.work.path().to_string_lossy()),
        )
        .unwrap();
        let oci = self.path("oci");
        let _ = std::fs::remove_dir_all(&oci);
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("-f")
            .arg(&file)
            .args(["-o", &format!("type=oci,dest={},tar=false", oci.display())])
            .arg(self.path("ctx"))
            .output()
            .unwrap()
    }

    fn add_archive(&self, name: &str, tar: &[u8]) {
        std::fs::write(self.path("ctx").join(name), tar).unwrap();
    }

    /// The host canaries are as they were.
    fn check_canaries(&self, case: &str) {
        let entries: Vec<_> = std::fs::read_dir(self.path("canary-dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            entries.is_empty(),
            "{case}: wrote {entries:?} into the host canary dir"
        );
        assert_eq!(
            std::fs::read_to_string(self.path("canary-file")).unwrap(),
            "untouched\n",
            "{case}: changed the host canary file"
        );
        for stray in ["evil", "evil.txt", "x"] {
            assert!(
                !self.path(stray).exists() && !Path::new("/").join(stray).exists(),
                "{case}: created {stray} on the host"
            );
        }
    }
}

/// Reading: sources resolve inside the context or fail.
#[test]
fn copy_sources_never_leave_the_context() {
    let s = Setup::new();
    let refused = [
        ("COPY ../secret-outside /out/", "outside the build context"),
        ("COPY to-secret /out/", "not found"),
        ("COPY up-secret /out/", "not found"),
        ("COPY to-etc/passwd /out/", "not found"),
        ("COPY inside/way-up/etc/passwd /out/", "not found"),
        ("COPY /etc/passwd /out/", "not found"),
    ];
    for (instruction, error) in refused {
        let out = s.build(&format!("FROM busybox\n{instruction}\n"));
        assert!(!out.status.success(), "{instruction}: built");
        assert!(
            stderr(&out).contains(error),
            "{instruction}: {}",
            stderr(&out)
        );
        s.check_canaries(instruction);
    }
    // A wildcard through a link out matches nothing; a link inside a
    // copied dir is copied as a link, its target never read.
    let out = s.build(
        "FROM busybox\nRUN mkdir /out\nCOPY to-etc/pass* /out/\nCOPY . /ctx/\n\
         RUN test -z \"$(ls /out)\" && test -L /ctx/to-secret && ! grep -r 'must not be read' /ctx\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s.check_canaries("wildcards and links");
}

/// Writing: destinations resolve inside the root, whatever links it has.
#[test]
fn copy_destinations_never_leave_the_root() {
    let s = Setup::new();
    let out = s.build(
        "FROM busybox\n\
         RUN ln -s {WORK}/canary-dir /evil-abs && ln -s ../../../../../../{WORK}/canary-dir /evil-rel\n\
         COPY a.txt /evil-abs/\n\
         COPY a.txt /evil-rel/\n\
         COPY a.txt /../../../../{WORK}/canary-dir/\n\
         RUN test -f /{WORK}/canary-dir/a.txt\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    s.check_canaries("COPY through links");
}

/// ADD archives: every escaping entry is an error naming it.
#[test]
fn add_archives_never_write_outside_the_root() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let s = Setup::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[("../../../../evil.txt", Regular, "", b"x")]),
            "\"../../../../evil.txt\"",
        ),
        (
            "absolute",
            raw_tar(&[("/evil.txt", Regular, "", b"x")]),
            "\"/evil.txt\"",
        ),
        (
            "symlink-then-file",
            raw_tar(&[
                ("lnk", Symlink, "/work-placeholder", b""),
                ("lnk/evil.txt", Regular, "", b"x"),
            ]),
            "\"lnk/evil.txt\"",
        ),
        (
            "relative-symlink-then-file",
            raw_tar(&[
                ("up", Symlink, "../../../../../../..", b""),
                ("up/evil.txt", Regular, "", b"x"),
            ]),
            "\"up/evil.txt\"",
        ),
        (
            "hardlink-to-an-absolute-path",
            raw_tar(&[("hl", Link, "/etc/passwd", b"")]),
            "\"hl\"",
        ),
        (
            "hardlink-up",
            raw_tar(&[("hl", Link, "../../../../etc/passwd", b"")]),
            "\"hl\"",
        ),
        (
            "directory-then-dotdot",
            raw_tar(&[
                ("d/", Directory, "", b""),
                ("d/../../evil.txt", Regular, "", b"x"),
            ]),
            "\"d/../../evil.txt\"",
        ),
    ];
    for (name, tar, entry) in cases {
        // The absolute symlink points at the host canary dir.
        let canary = s.path("canary-dir");
        let tar = if name == "symlink-then-file" {
            raw_tar(&[
                ("lnk", Symlink, canary.to_str().unwrap(), b""),
                ("lnk/evil.txt", Regular, "", b"x"),
            ])
        } else {
            tar
        };
        let file = format!("{name}.tar");
        s.add_archive(&file, &tar);
        let out = s.build(&format!("FROM busybox\nADD {file} /unpacked/\n"));
        assert!(!out.status.success(), "{name}: built");
        assert!(
            stderr(&out).contains(entry),
            "{name}: the error does not name {entry}: {}",
            stderr(&out)
        );
        s.check_canaries(name);
    }
}

/// A context tar on standard input is unpacked with the same rules.
#[test]
fn a_context_tar_from_stdin_cannot_escape() {
    let s = Setup::new();
    let tar = raw_tar(&[
        ("Dockerfile", tar::EntryType::Regular, "", b"FROM busybox\n"),
        ("../evil.txt", tar::EntryType::Regular, "", b"x"),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(s.path("root"))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"../evil.txt\""), "{}", stderr(&out));
    s.check_canaries("stdin context");
    assert!(!s.path("root/evil.txt").exists() && !s.path("root/tmp/evil.txt").exists());
}
