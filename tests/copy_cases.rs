//! The COPY/ADD case table (`testdata/dockerfiles/copy/cases.txt`): each
//! case is built by the real binary, pushed to the real registry, pulled
//! back and unpacked by umoci, and the tree under `/out` must be exactly
//! the one written out by hand.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{is_root, stderr, unpack_remote, TestRegistry};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/copy");

/// Writes the context a manifest describes into `dir`.
fn make_context(manifest: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut modes = Vec::new();
    let mut archives = Vec::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(4, ' ');
        let (kind, path) = (fields.next().unwrap(), fields.next().unwrap());
        let target = dir.join(path);
        match kind {
            "d" => {
                std::fs::create_dir_all(&target).unwrap();
                let mode = u32::from_str_radix(fields.next().unwrap(), 8).unwrap();
                modes.push((target, mode));
            }
            "f" => {
                let mode = u32::from_str_radix(fields.next().unwrap(), 8).unwrap();
                std::fs::write(&target, format!("{}\n", fields.next().unwrap_or(""))).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            "l" => std::os::unix::fs::symlink(fields.next().unwrap(), &target).unwrap(),
            "h" => std::fs::hard_link(dir.join(fields.next().unwrap()), &target).unwrap(),
            // Archives once every mode is in place (below).
            "a" => archives.push(line),
            "g" => {
                let text = line.splitn(3, ' ').nth(2).unwrap();
                std::fs::write(&target, compress("gz", text.as_bytes())).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            other => panic!("unknown manifest entry {other:?}"),
        }
    }
    // Directory modes last: 0700 and 0750 dirs must still be filled first.
    for (path, mode) in modes {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for line in archives {
        let fields: Vec<&str> = line.split(' ').collect();
        let [_, path, compression, source] = fields.as_slice() else {
            panic!("bad archive line {line:?}");
        };
        let target = dir.join(path);
        std::fs::write(&target, compress(compression, &tar_of(&dir.join(source)))).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// A tar of `dir`'s entries (sorted, owners 0:0, fixed times).
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut paths = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let child = rel.join(name);
            if std::fs::symlink_metadata(dir.join(&child))
                .unwrap()
                .is_dir()
            {
                stack.push(child.clone());
            }
            paths.push(child);
        }
    }
    paths.sort();
    for rel in paths {
        let meta = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_mode(meta.mode() & 0o7777);
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("{}/", rel.display()), std::io::empty())
                .unwrap();
        } else if meta.file_type().is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            let target = std::fs::read_link(dir.join(&rel)).unwrap();
            builder.append_link(&mut header, &rel, target).unwrap();
        } else {
            let data = std::fs::read(dir.join(&rel)).unwrap();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, &rel, &data[..]).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(data).unwrap();
            gz.finish().unwrap()
        }
        "bz2" => {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            bz.write_all(data).unwrap();
            bz.finish().unwrap()
        }
        "xz" => {
            let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
            xz.write_all(data).unwrap();
            xz.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("unknown compression {other}"),
    }
}

/// One case of the table.
#[derive(Debug, Default)]
struct Case {
    name: String,
    ignore_context: bool,
    instructions: String,
    dockerignore: Option<String>,
    expect: Option<Vec<String>>,
    absent: Option<Vec<String>>,
    error: Option<String>,
}

fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut section = "";
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("=== ") {
            let mut words = header.split_whitespace();
            cases.push(Case {
                name: words.next().unwrap().to_string(),
                ignore_context: words.any(|w| w == "ctx=ignore"),
                ..Case::default()
            });
            section = "instructions";
            continue;
        }
        let Some(case) = cases.last_mut() else {
            continue; // the file's leading comments
        };
        if let Some(name) = line.strip_prefix("--- ") {
            section = match name {
                "ignore" => {
                    case.dockerignore = Some(String::new());
                    "ignore"
                }
                "expect" => {
                    case.expect = Some(Vec::new());
                    "expect"
                }
                "absent" => {
                    case.absent = Some(Vec::new());
                    "absent"
                }
                "error" => "error",
                other => panic!("{}: unknown section {other}", case.name),
            };
            continue;
        }
        match section {
            "instructions" => {
                case.instructions.push_str(line);
                case.instructions.push('\n');
            }
            "ignore" => {
                let text = case.dockerignore.as_mut().unwrap();
                text.push_str(line);
                text.push('\n');
            }
            "expect" | "absent" if !line.trim().is_empty() => {
                let list = if section == "expect" {
                    case.expect.as_mut()
                } else {
                    case.absent.as_mut()
                };
                list.unwrap().push(line.to_string());
            }
            "error" if !line.trim().is_empty() => case.error = Some(line.to_string()),
            _ => {}
        }
    }
    cases
}

/// The tree under `rootfs/out`, one line per path, as cases.txt writes it.
fn describe_tree(rootfs: &Path) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    let mut stack = vec![PathBuf::from("out")];
    while let Some(rel) = stack.pop() {
        let full = rootfs.join(&rel);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        let kind = if meta.is_dir() {
            'd'
        } else if meta.file_type().is_symlink() {
            'l'
        } else {
            'f'
        };
        let mode = if kind == 'l' {
            0o777
        } else {
            meta.mode() & 0o7777
        };
        let mut line = format!(
            "/{} {kind}{mode:o} {}:{}",
            rel.display(),
            meta.uid(),
            meta.gid()
        );
        match kind {
            'd' => {
                for entry in std::fs::read_dir(&full).unwrap() {
                    stack.push(rel.join(entry.unwrap().file_name()));
                }
            }
            'l' => line.push_str(&format!(
                " -> {}",
                std::fs::read_link(&full).unwrap().display()
            )),
            _ => {
                let bytes = std::fs::read(&full).unwrap();
                match String::from_utf8(bytes) {
                    Ok(text) if !text.contains('\0') => {
                        line.push(' ');
                        line.push_str(&text.trim_end_matches('\n').replace('\n', "\\n"));
                    }
                    _ => line.push_str(" <binary>"),
                }
                if meta.nlink() > 1 {
                    line.push_str(&format!(" links={}", meta.nlink()));
                }
            }
        }
        lines.insert(line);
    }
    lines
}

/// Runs one case; returns a description of what went wrong, if anything.
fn run_case(
    case: &Case,
    contexts: &(PathBuf, PathBuf),
    root: &Path,
    registry: &str,
    work: &Path,
    full_ignore_tree: &BTreeSet<String>,
) -> Option<String> {
    let dir = work.join(&case.name);
    std::fs::create_dir_all(&dir).unwrap();
    let dockerfile = dir.join("Dockerfile");
    std::fs::write(
        &dockerfile,
        format!(
            "FROM busybox AS src\n\
             RUN mkdir -p /data/sub && echo d > /data/d.txt && echo s > /data/sub/s.txt \
             && chmod 0750 /data/sub && chown -R 123:45 /data\n\
             FROM busybox\n{}",
            case.instructions
        ),
    )
    .unwrap();
    if let Some(ignore) = &case.dockerignore {
        std::fs::write(dir.join("Dockerfile.dockerignore"), ignore).unwrap();
    }
    let context = if case.ignore_context {
        &contexts.1
    } else {
        &contexts.0
    };
    let image = format!("{registry}/copy/{}:1", case.name);
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(root)
        .args(["-t", &image, "--push", "-f"])
        .arg(&dockerfile)
        .arg(context)
        .output()
        .unwrap();
    if let Some(error) = &case.error {
        if out.status.success() {
            return Some(format!(
                "{}: built, but should fail with {error:?}",
                case.name
            ));
        }
        if !stderr(&out).contains(error.as_str()) {
            return Some(format!(
                "{}: the error does not contain {error:?}:\n{}",
                case.name,
                stderr(&out)
            ));
        }
        return None;
    }
    if !out.status.success() {
        return Some(format!(
            "{}: the build failed:\n{}",
            case.name,
            stderr(&out)
        ));
    }
    let rootfs = unpack_remote(&image, &dir);
    let got = describe_tree(&rootfs);
    let want: BTreeSet<String> = match (&case.expect, &case.absent) {
        (Some(expect), _) => expect.iter().cloned().collect(),
        (None, Some(absent)) => full_ignore_tree
            .iter()
            .filter(|line| {
                let path = line.split(' ').next().unwrap();
                !absent.iter().any(|a| a == path)
            })
            .cloned()
            .collect(),
        (None, None) => panic!("{}: no expectation", case.name),
    };
    if got == want {
        return None;
    }
    let missing: Vec<&String> = want.difference(&got).collect();
    let extra: Vec<&String> = got.difference(&want).collect();
    Some(format!(
        "{}:\n  expected but missing: {missing:#?}\n  present but not expected: {extra:#?}",
        case.name
    ))
}

#[test]
fn copy_and_add_cases() {
    if !is_root() {
        common::skip("umoci unpack here needs root");
        return;
    }
    let cases = parse_cases(&std::fs::read_to_string(Path::new(DATA).join("cases.txt")).unwrap());
    // The README's figure: adding a case means saying so there.
    assert_eq!(cases.len(), 98, "cases (the README says 98)");
    let work = tempfile::tempdir().unwrap();
    let contexts = (
        work.path().join("context"),
        work.path().join("ignore-context"),
    );
    for (manifest, dir) in [
        ("context.txt", &contexts.0),
        ("ignore-context.txt", &contexts.1),
    ] {
        make_context(
            &std::fs::read_to_string(Path::new(DATA).join(manifest)).unwrap(),
            dir,
        );
    }
    let full_ignore_tree: BTreeSet<String> =
        std::fs::read_to_string(Path::new(DATA).join("ignore-expect.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
    let registry = TestRegistry::start(&[]);
    let root = work.path().join("root");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                if let Some(failure) = run_case(
                    case,
                    &contexts,
                    &root,
                    &registry.addr,
                    work.path(),
                    &full_ignore_tree,
                ) {
                    failures.lock().unwrap().push(failure);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
