//! Cache keys: what a step's result depends on, hashed.
//!
//! A key is the sha256 of a canonical JSON object holding the step's kind,
//! its fully expanded parameters (command, environment, user, working
//! directory, network, mounts, platform), the key of the step before it and
//! the digests of its inputs (a bind mount's source tree). Times never
//! enter a key; secret values never do either (only their ids), nor do
//! the predefined proxy variables. Same key, same layer: that is the whole
//! contract of the cache index.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::dispatch::{Base, StepKind};
use crate::blob::Digest;
use crate::parser::{Mount, MountType, NetworkMode, SecurityMode, Source};

/// Version of the key format; bumping it invalidates every cache entry.
/// 2: steps that change nothing make an (empty) layer, and directory
/// mount points stay in RUN layers, as in BuildKit's images.
const KEY_VERSION: u32 = 2;

fn hash(value: &Value) -> Digest {
    // serde_json's maps are sorted by key: the text is canonical.
    Digest::of(value.to_string().as_bytes())
}

/// The key a stage starts from: its base image (by manifest digest), a
/// stage's final key, or scratch.
pub fn base_key(
    base: &Base,
    image_manifest: Option<&Digest>,
    stage_key: Option<&Digest>,
) -> Digest {
    match base {
        Base::Scratch => hash(&json!({"v": KEY_VERSION, "base": "scratch"})),
        Base::Image(name) => hash(&json!({
            "v": KEY_VERSION,
            "base": "image",
            "name": name,
            "manifest": image_manifest.map(Digest::as_str),
        })),
        Base::Stage(_) => stage_key
            .cloned()
            .unwrap_or_else(|| hash(&json!({"v": KEY_VERSION}))),
    }
}

/// The parent every `COPY --link` is keyed on: its layer is made on an
/// empty root, so what it lands on does not change it.
pub fn link_parent() -> Digest {
    hash(&json!({"v": KEY_VERSION, "parent": "copy --link"}))
}

/// Digest of a directory tree or file for a key: every path's relative
/// name, type, permission bits, link target and content hash, in sorted
/// order. Owners and times are left out (a context checked out by another
/// user or at another time is the same context).
pub fn tree_digest(path: &Path) -> std::io::Result<Digest> {
    let mut hasher = Sha256::new();
    walk(path, Path::new(""), &mut hasher)?;
    Ok(Digest::from_sha256(hasher.finalize().into()))
}

fn walk(root: &Path, rel: &Path, hasher: &mut Sha256) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path)?;
    let mode = meta.permissions().mode() & 0o7777;
    hasher.update(rel.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    if meta.is_dir() {
        hasher.update(format!("d{mode:o}\0"));
        let mut names: Vec<_> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            walk(root, &rel.join(name), hasher)?;
        }
    } else if meta.file_type().is_symlink() {
        hasher.update(format!("l{mode:o}\0"));
        hasher.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
        hasher.update([0]);
    } else {
        hasher.update(format!("f{mode:o}\0"));
        let mut file = std::fs::File::open(&path)?;
        let mut content = Sha256::new();
        std::io::copy(&mut file, &mut content)?;
        hasher.update(content.finalize());
    }
    Ok(())
}

fn mount_value(m: &Mount, bind_digest: Option<&Digest>) -> Value {
    let kind = match m.kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    };
    json!({
        "type": kind,
        "target": m.target,
        "source": m.source,
        "from": m.from,
        "id": m.id,
        "readonly": m.readonly,
        "sharing": m.sharing.map(|s| format!("{s:?}")),
        "mode": m.mode,
        "uid": m.uid,
        "gid": m.gid,
        "size": m.size,
        "env": m.env,
        "required": m.required,
        "content": bind_digest.map(Digest::as_str),
    })
}

/// The key of `step` after the step whose key is `parent`. `inputs` holds
/// the content digests the step reads: per mount of a RUN, its bind
/// source's (None for other mounts); per source of a COPY or ADD, the
/// selected files' (None for heredocs). `platform` is the stage's
/// `os/arch[/variant]`.
pub fn step_key(
    parent: &Digest,
    step: &StepKind,
    inputs: &[Option<Digest>],
    platform: &str,
) -> Digest {
    let mut value = match step {
        StepKind::Run(run) => json!({
            "v": KEY_VERSION,
            "op": "run",
            "parent": parent.as_str(),
            "platform": platform,
            "args": run.args,
            "env": run.env,
            "user": run.user,
            "workdir": run.workdir,
            "network": match run.network {
                NetworkMode::None => "none",
                NetworkMode::Host => "host",
                NetworkMode::Default => "default",
            },
            "mounts": run
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| mount_value(m, inputs.get(i).and_then(Option::as_ref)))
                .collect::<Vec<_>>(),
            "heredocs": run
                .heredocs
                .iter()
                .map(|h| json!([h.name, h.content, h.expand, h.chomp, h.file_descriptor]))
                .collect::<Vec<_>>(),
        }),
        StepKind::Mkdir { path, user } => json!({
            "v": KEY_VERSION,
            "op": "mkdir",
            "parent": parent.as_str(),
            "path": path,
            "user": user,
        }),
        StepKind::Copy(copy) => {
            let spec = &copy.spec;
            json!({
                "v": KEY_VERSION,
                "op": if copy.add { "add" } else { "copy" },
                "parent": parent.as_str(),
                "platform": platform,
                "sources": spec
                    .sources
                    .iter()
                    .enumerate()
                    .map(|(i, source)| {
                        let content = inputs.get(i).and_then(Option::as_ref).map(Digest::as_str);
                        match source {
                            Source::Path(p) => json!({"path": p, "content": content}),
                            Source::Heredoc(h) => json!({"heredoc": h.name, "body": h.body(), "expand": h.expand}),
                        }
                    })
                    .collect::<Vec<_>>(),
                "from": copy.from.as_ref().map(|f| format!("{f:?}")),
                "dest": copy.dest,
                "chown": spec.chown,
                "chmod": spec.chmod,
                "link": spec.link,
                "parents": spec.parents,
                "exclude": spec.exclude,
                "checksum": spec.checksum,
                "unpack": spec.unpack,
            })
        }
    };
    // Only insecure steps carry the field: keys of every other step stay
    // what they were before `--security` existed.
    if let StepKind::Run(run) = step {
        if run.security == SecurityMode::Insecure {
            value["security"] = json!("insecure");
        }
    }
    hash(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::dispatch::RunStep;

    fn run(args: &[&str], env: &[&str]) -> StepKind {
        StepKind::Run(RunStep {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            proxy_env: vec!["HTTP_PROXY=http://a".into()],
            user: String::new(),
            workdir: "/".into(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            mounts: vec![],
            mount_sources: vec![],
            heredocs: vec![],
            script: None,
        })
    }

    #[test]
    fn keys_follow_inputs_and_nothing_else() {
        let parent = Digest::of(b"p");
        let key = |parent: &Digest, script: &str, env: &str, platform: &str| {
            step_key(parent, &run(&["sh", "-c", script], &[env]), &[], platform)
        };
        let a = key(&parent, "x", "A=1", "linux/amd64");
        assert_eq!(a, key(&parent, "x", "A=1", "linux/amd64"));
        assert_ne!(a, key(&parent, "y", "A=1", "linux/amd64"));
        assert_ne!(a, key(&parent, "x", "A=2", "linux/amd64"));
        assert_ne!(a, key(&Digest::of(b"q"), "x", "A=1", "linux/amd64"));
        assert_ne!(a, key(&parent, "x", "A=1", "linux/arm64"));
        // Proxy variables are not part of the key.
        let mut other_proxy = run(&["sh", "-c", "x"], &["A=1"]);
        if let StepKind::Run(r) = &mut other_proxy {
            r.proxy_env = vec!["HTTP_PROXY=http://b".into()];
        }
        assert_eq!(a, step_key(&parent, &other_proxy, &[], "linux/amd64"));
    }

    #[test]
    fn tree_digests_see_content_and_modes_not_times() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"one").unwrap();
        let first = tree_digest(dir.path()).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("sub/f"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            first,
            tree_digest(dir.path()).unwrap(),
            "mtime is not content"
        );
        std::fs::set_permissions(
            dir.path().join("sub/f"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let moded = tree_digest(dir.path()).unwrap();
        assert_ne!(first, moded);
        std::fs::write(dir.path().join("sub/f"), b"two").unwrap();
        assert_ne!(moded, tree_digest(dir.path()).unwrap());
    }
}
