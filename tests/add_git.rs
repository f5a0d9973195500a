//! `ADD <git url>` against real git servers on loopback: Debian's
//! `git daemon` (git://) and a static HTTP server (git's dumb HTTP
//! protocol). The oracle for what lands in the image is git itself:
//! `git ls-tree` and `git cat-file` of the commit give every path's type,
//! mode, link target and content. Covered: the remote's HEAD, a tag, a
//! branch with `:subdir`, the query form, `--checksum` (right and wrong),
//! `--keep-git-dir` with `--chown`, the cache (same commit hits, a new
//! commit reruns), COPY refusing git refs, and credentials in a URL
//! reaching neither the error nor a kept `.git`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{build_and_unpack, is_root, ran_steps, run_ok, skip, stderr};

fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir),
    )
    .trim()
    .to_string()
}

/// A bare repository served by `git daemon` on a free loopback port,
/// with a work tree to make commits in; the daemon is killed on drop.
struct GitServer {
    daemon: Child,
    port: u16,
    work: PathBuf,
    bare: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitServer {
    fn start() -> GitServer {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("sub/deep")).unwrap();
        git(dir.path(), &["init", "-q", "work"]);
        std::fs::write(work.join("a.txt"), "one\n").unwrap();
        std::fs::write(work.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
        std::fs::set_permissions(work.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", work.join("link")).unwrap();
        std::fs::write(work.join("sub/deep/s.txt"), "deep\n").unwrap();
        std::fs::write(work.join("sub/top.txt"), "top\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "one"]);
        git(&work, &["tag", "v1"]);
        git(&work, &["checkout", "-qb", "feature"]);
        std::fs::write(work.join("sub/feature.txt"), "feature\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "feature"]);
        git(&work, &["checkout", "-q", "main"]);
        std::fs::write(work.join("a.txt"), "two\n").unwrap();
        git(&work, &["commit", "-qam", "two"]);
        let srv = dir.path().join("srv");
        std::fs::create_dir(&srv).unwrap();
        git(
            dir.path(),
            &["clone", "-q", "--bare", "work", "srv/repo.git"],
        );
        let bare = srv.join("repo.git");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", srv.display()))
            .arg(&srv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = GitServer {
            daemon,
            port,
            work,
            bare,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("git daemon did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/repo.git", self.port)
    }

    fn rev(&self, rev: &str) -> String {
        git(&self.bare, &["rev-parse", rev])
    }

    /// What git says `rev` (`commit` or `commit:subdir`) holds: one line
    /// per path, as [`tree_of`] prints an unpacked directory.
    fn expected(&self, rev: &str, owner: &str) -> BTreeSet<String> {
        let listing = git(&self.bare, &["ls-tree", "-r", "-t", rev]);
        listing
            .lines()
            .map(|line| {
                let (meta, path) = line.split_once('\t').unwrap();
                let fields: Vec<&str> = meta.split_whitespace().collect();
                let (mode, kind, object) = (fields[0], fields[1], fields[2]);
                let blob = || git(&self.bare, &["cat-file", "blob", object]);
                match (kind, mode) {
                    ("tree", _) => format!("{path} dir 755 {owner}"),
                    ("blob", "120000") => format!("{path} symlink {owner} {}", blob()),
                    ("blob", m) => format!("{path} file {} {owner} {}", &m[3..], blob()),
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The same lines for a directory of an unpacked image (`.git` left out).
fn tree_of(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let owner = format!("{}:{}", meta.uid(), meta.gid());
            let line = if meta.is_dir() {
                stack.push(path.clone());
                format!("{rel} dir {:o} {owner}", meta.mode() & 0o7777)
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                format!("{rel} symlink {owner} {}", target.display())
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                format!(
                    "{rel} file {:o} {owner} {}",
                    meta.mode() & 0o7777,
                    text.trim()
                )
            };
            out.insert(line);
        }
    }
    out
}

fn build(ctx: &Path, root: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--root"])
        .arg(root)
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

fn ready() -> bool {
    if !is_root() {
        skip("RUN and ADD in the full tier need root");
        return false;
    }
    if Command::new("git").arg("--version").output().is_err() {
        skip("git is not installed (apt-get install git)");
        return false;
    }
    true
}

#[test]
fn add_a_git_repository_as_git_checks_it_out() {
    if !ready() {
        return;
    }
    let server = GitServer::start();
    let url = server.url();
    let v1 = server.rev("v1");
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             ADD {url}#v1 /v1\n\
             ADD {url}#feature:sub /feature-sub\n\
             ADD {url}?tag=v1&subdir=sub /query\n\
             ADD --checksum={v1} {url}#v1 /checked\n\
             ADD --keep-git-dir=true --chown=7:8 {url}#v1 /kept\n\
             ADD {url} /head\n"
        ),
    )
    .unwrap();
    // build_and_unpack keeps its store in work/root: the rebuilds below
    // use it too.
    let root = work.path().join("root");
    let (_, rootfs) = build_and_unpack(&ctx, work.path(), &[], &[]);
    for (dir, rev, owner) in [
        ("head", "main".to_string(), "0:0"),
        ("v1", "v1".to_string(), "0:0"),
        ("feature-sub", "feature:sub".to_string(), "0:0"),
        ("query", "v1:sub".to_string(), "0:0"),
        ("checked", "v1".to_string(), "0:0"),
        ("kept", "v1".to_string(), "7:8"),
    ] {
        assert_eq!(
            tree_of(&rootfs.join(dir)),
            server.expected(&rev, owner),
            "/{dir} holds what git has at {rev}"
        );
    }
    assert!(
        !rootfs.join("head/.git").exists(),
        ".git is removed by default"
    );
    let kept = rootfs.join("kept/.git");
    assert_eq!(
        git(
            &rootfs,
            &["--git-dir", &kept.to_string_lossy(), "rev-parse", "HEAD"]
        ),
        v1,
        "--keep-git-dir keeps a repository at the commit"
    );

    // Same commits: every step cached. A new commit on main reruns the
    // ADD of the remote's HEAD (the last step) only.
    let again = build(&ctx, &root, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(ran_steps(&again), Vec::<String>::new());
    std::fs::write(server.work.join("a.txt"), "three\n").unwrap();
    git(&server.work, &["commit", "-qam", "three"]);
    git(
        &server.work,
        &["push", "-q", &server.bare.to_string_lossy(), "main"],
    );
    let moved = build(&ctx, &root, &[]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert_eq!(ran_steps(&moved), vec![format!("ADD {url} /head")]);
}

#[test]
fn git_sources_refuse_what_buildkit_refuses() {
    if !ready() {
        return;
    }
    let server = GitServer::start();
    let url = server.url();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let cases = [
        (
            format!("ADD --checksum={} {url}#v1 /x", "0".repeat(40)),
            "checksum mismatch",
        ),
        (
            format!("COPY {url} /x"),
            "source can't be a git ref for COPY",
        ),
        (format!("ADD {url}#no-such-branch /x"), "no-such-branch"),
        (
            "ADD git://user:s3cret@127.0.0.1:1/repo.git /x".to_string(),
            "git fetch",
        ),
    ];
    for (line, expected) in cases {
        let ctx = work.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\n{line}\n")).unwrap();
        let out = build(&ctx, &root, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{line} built");
        assert!(err.contains(expected), "{line}: {err}");
        assert!(
            err.contains("Dockerfile:2:"),
            "{line}: the error names the line: {err}"
        );
        assert!(
            !err.contains("s3cret"),
            "{line}: a credential leaked: {err}"
        );
    }
}

/// Serves `root`'s files over HTTP/1.0 (git's dumb protocol needs nothing
/// more).
fn serve_dir(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 8192];
            let n = stream.read(&mut request).unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..n]).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            let path = path
                .split('?')
                .next()
                .unwrap_or("/")
                .trim_start_matches('/');
            let file = root.join(path);
            let reply = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let mut r =
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    addr
}

#[test]
fn credentials_in_a_git_url_stay_out_of_a_kept_git_dir() {
    if !ready() {
        return;
    }
    let server = GitServer::start();
    git(&server.bare, &["update-server-info"]);
    let addr = serve_dir(server.bare.parent().unwrap().to_path_buf());
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --keep-git-dir=true http://ci:s3cret@{addr}/repo.git#v1 /kept\n"
        ),
    )
    .unwrap();
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), &[], &[]);
    assert!(
        !stderr(&out).contains("s3cret"),
        "the log shows the credential"
    );
    assert_eq!(tree_of(&rootfs.join("kept")), server.expected("v1", "0:0"));
    let mut found = Vec::new();
    let mut stack = vec![rootfs.join("kept/.git")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(6)
                .any(|w| w == b"s3cret")
            {
                found.push(path);
            }
        }
    }
    assert!(
        found.is_empty(),
        "the kept .git holds the credential: {found:?}"
    );
}
