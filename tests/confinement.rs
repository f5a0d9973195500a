//! RUN confinement checked against outside references, in every tier.
//!
//! The oracle is Debian's `runc` running a container from its own default
//! spec (`runc spec`) on this machine, twice: verbatim, and with the three
//! settings docker and BuildKit put into every spec they hand runc
//! (docker's default capabilities, no_new_privs off, and docker's seccomp
//! profile, taken here from Debian's own copy in
//! golang-github-docker-docker-dev, not from rbuild's table). The same
//! static probe (`tests/fixtures/escape_probe.c`) runs in the oracle and
//! in rbuild's RUN steps: `/proc/self/status`, the mounts under `/proc`,
//! `/sys` and `/dev`, the `/dev` listing, and an escape corpus whose every
//! attempt is harmless if the protection is missing.
//!
//! Needs root (runc, podman, setpriv), gcc and runc; without them each
//! test says why and, under `RBUILD_REQUIRE_PRIVILEGED=1` (CI), fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

use common::{container_root, is_root, skip, step_lines, text, Podman};

/// Skips loudly, or fails where the environment promises everything.
/// Whether this machine can run the comparison; says why not.
fn ready() -> bool {
    if !is_root() {
        skip("runc, podman and setpriv need root");
        return false;
    }
    for tool in ["gcc", "runc", "podman", "setpriv"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            skip(&format!("{tool} is not installed"));
            return false;
        }
    }
    if !Path::new(DEBIAN_PROFILE).exists() || !Path::new(DEBIAN_CAPS).exists() {
        skip(&format!(
            "{DEBIAN_PROFILE} or {DEBIAN_CAPS} is missing \
             (apt-get install golang-github-docker-docker-dev)"
        ));
        return false;
    }
    true
}

/// Docker's default seccomp profile as Debian ships it with moby's source.
const DEBIAN_PROFILE: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";

/// Docker's source of its default capabilities, as Debian ships it.
const DEBIAN_CAPS: &str = "/usr/share/gocode/src/github.com/docker/docker/oci/caps/defaults.go";

/// Docker's default capabilities, read from moby's own source (the
/// oracle's inputs come from outside rbuild, not from its table).
fn docker_caps() -> Vec<String> {
    let source = std::fs::read_to_string(DEBIAN_CAPS).unwrap();
    let caps: Vec<String> = source
        .split('"')
        .filter(|word| word.starts_with("CAP_"))
        .map(str::to_string)
        .collect();
    assert!(caps.len() >= 10, "no capability list in {DEBIAN_CAPS}");
    caps
}

/// What a step reports about itself: `/report.sh PID DISK`, the script
/// both sides run.
const SCRIPT: &str = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' \
     /proc/self/status 2>/dev/null | sed 's/^/STATUS /'; \
     grep -E ' /(proc|sys|dev)[/ ]' /proc/self/mountinfo 2>/dev/null | sed 's/^/MOUNT /'; \
     ls -ln /dev 2>/dev/null | sed 1d | sed 's/^/DEV /'; \
     sed 's/^/UIDMAP /' /proc/self/uid_map 2>/dev/null; \
     /probe \"$1\" \"$2\"\n";

/// The probe, compiled once per test binary.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| common::static_probe("escape_probe"))
}

/// The host's root disk as MAJOR:MINOR (the block-device check reads it).
fn host_disk() -> String {
    let out = common::run_ok(Command::new("mountpoint").args(["-d", "/"]));
    out.trim().to_string()
}

/// One mount as compared: read-only or not and the flags that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountSeen {
    fstype: String,
    /// `/null` for /dev/null bound over a masked file.
    root: String,
    ro: bool,
    flags: BTreeSet<String>,
}

/// What one step saw.
#[derive(Debug, Default)]
struct Seen {
    status: BTreeMap<String, String>,
    mounts: BTreeMap<String, MountSeen>,
    dev: BTreeSet<String>,
    checks: BTreeMap<String, String>,
    /// `/proc/self/uid_map`, whitespace folded.
    uid_map: String,
}

fn parse(lines: &[String]) -> Seen {
    let mut seen = Seen::default();
    for line in lines {
        if let Some(rest) = line.strip_prefix("STATUS ") {
            if let Some((k, v)) = rest.split_once(':') {
                seen.status.insert(k.to_string(), v.trim().to_string());
            }
        } else if let Some(rest) = line.strip_prefix("MOUNT ") {
            let fields: Vec<&str> = rest.split(' ').collect();
            let dash = fields
                .iter()
                .position(|f| *f == "-")
                .unwrap_or(fields.len());
            let options: Vec<&str> = fields[5].split(',').collect();
            seen.mounts.insert(
                fields[4].to_string(),
                MountSeen {
                    fstype: fields.get(dash + 1).unwrap_or(&"").to_string(),
                    root: fields[3].to_string(),
                    ro: options.contains(&"ro"),
                    flags: options
                        .iter()
                        .filter(|o| ["nosuid", "nodev", "noexec"].contains(o))
                        .map(|o| o.to_string())
                        .collect(),
                },
            );
        } else if let Some(rest) = line.strip_prefix("DEV ") {
            // Mode, then the name (and link target); owners and times differ.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let mode = fields[0];
            let tail = if mode.starts_with('c') {
                format!("{} {}", &fields[4..6].join(""), fields[fields.len() - 1])
            } else {
                let name_at = fields.len() - if mode.starts_with('l') { 3 } else { 1 };
                fields[name_at..].join(" ")
            };
            seen.dev.insert(format!("{mode} {tail}"));
        } else if let Some(rest) = line.strip_prefix("UIDMAP ") {
            seen.uid_map = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        } else if let Some(rest) = line.strip_prefix("CHECK ") {
            if let Some((k, v)) = rest.split_once(' ') {
                seen.checks.insert(k.to_string(), v.to_string());
            }
        }
    }
    seen
}

/// A bundle's root: Debian's static busybox and the probe.
fn probe_root(dir: &Path) {
    for sub in ["bin", "tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "grep", "sed", "ls"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::copy(probe(), dir.join("probe")).unwrap();
    std::fs::write(dir.join("report.sh"), SCRIPT).unwrap();
}

/// moby's `setupSeccomp` over Debian's profile for the default
/// capabilities on amd64, written as the OCI spec's `linux.seccomp`.
fn debian_docker_seccomp() -> serde_json::Value {
    let text = std::fs::read_to_string(DEBIAN_PROFILE).unwrap();
    let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kernel = {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut it = release.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    let docker_caps = docker_caps();
    let has = |cap: &String| docker_caps.contains(cap);
    let mut syscalls = Vec::new();
    for call in profile["syscalls"].as_array().unwrap() {
        let (inc, exc) = (&call["includes"], &call["excludes"]);
        let arch_ok = |list: Vec<String>| list.iter().any(|a| a == "amd64");
        if arch_ok(names(&exc["arches"])) || names(&exc["caps"]).iter().any(has) {
            continue;
        }
        let inc_arches = names(&inc["arches"]);
        if !inc_arches.is_empty() && !arch_ok(inc_arches) {
            continue;
        }
        if !names(&inc["caps"]).iter().all(has) {
            continue;
        }
        if let Some(min) = inc["minKernel"].as_str() {
            let mut it = min.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            if kernel < (it.next().unwrap_or(0), it.next().unwrap_or(0)) {
                continue;
            }
        }
        let mut rule = serde_json::json!({
            "names": call["names"],
            "action": call["action"],
            "args": call["args"].as_array().cloned().unwrap_or_default(),
        });
        if let Some(errno) = call["errnoRet"].as_u64() {
            rule["errnoRet"] = errno.into();
        }
        syscalls.push(rule);
    }
    serde_json::json!({
        "defaultAction": profile["defaultAction"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

/// Runs the probe in runc from `runc spec`; `docker_posture` applies what
/// docker and BuildKit change in that spec.
fn runc_oracle(docker_posture: bool, target_pid: u32) -> Seen {
    let bundle = tempfile::tempdir().unwrap();
    probe_root(&bundle.path().join("rootfs"));
    common::run_ok(Command::new("runc").arg("spec").current_dir(bundle.path()));
    let path = bundle.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] =
        serde_json::json!(["/bin/sh", "/report.sh", target_pid.to_string(), host_disk()]);
    // RUN steps write to their root.
    config["root"]["readonly"] = false.into();
    if docker_posture {
        let caps = docker_caps();
        config["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps,
        });
        config["process"]["noNewPrivileges"] = false.into();
        config["linux"]["seccomp"] = debian_docker_seccomp();
    }
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let id = format!("rbuild-oracle-{}-{}", std::process::id(), docker_posture);
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert!(out.status.success(), "runc run: {}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    parse(&lines)
}

/// A build context whose one RUN is the probe (`--security=` as given).
fn probe_context(dir: &Path, security: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(probe(), dir.join("escape_probe")).unwrap();
    std::fs::write(dir.join("report.sh"), SCRIPT).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nCOPY escape_probe /probe\nCOPY report.sh /report.sh\n\
             ARG TARGET_PID\nARG DISK\nRUN {security} sh /report.sh $TARGET_PID $DISK\n"
        ),
    )
    .unwrap();
}

/// The probe's step output under rbuild, started as `launcher… rbuild
/// build …` through `exec`, so the target pid is rbuild's own.
fn rbuild_seen(launcher: &str, root: &Path, context: &Path, extra: &str) -> (Output, Seen) {
    let cmd = format!(
        "exec {launcher} {rbuild} build --progress=plain --root {root} \
         --build-arg TARGET_PID=$$ --build-arg DISK={disk} {extra} {context}",
        rbuild = env!("CARGO_BIN_EXE_rbuild"),
        root = root.display(),
        disk = host_disk(),
        context = context.display(),
    );
    let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    let seen = parse(&step_lines(&out));
    (out, seen)
}

/// Outcomes that mean the attempt was stopped: by permission, a read-only
/// mount, or because the thing is not there to reach in this view.
const STOPPED: &[&str] = &["EPERM", "EACCES", "EROFS", "ENOENT", "ESRCH"];

fn assert_all_stopped(tier: &str, seen: &Seen) {
    // The README's table is made from these lines.
    for (check, outcome) in &seen.checks {
        eprintln!("CORPUS {tier} {check} {outcome}");
    }
    assert_eq!(
        seen.checks.len(),
        14,
        "{tier}: every check ran: {:?}",
        seen.checks
    );
    for (check, outcome) in &seen.checks {
        assert!(
            STOPPED.contains(&outcome.as_str()),
            "{tier}: {check} was {outcome}"
        );
    }
}

fn assert_docker_status(tier: &str, seen: &Seen, oracle: &Seen) {
    assert_eq!(seen.status, oracle.status, "{tier}: /proc/self/status");
    assert_eq!(seen.status["CapBnd"], "00000000a80425fb", "{tier}");
}

/// Every mount under /proc and /sys is read-only but /proc itself and
/// /dev/null bound over masked files; whatever runc masks is masked.
fn assert_masked_like(tier: &str, seen: &Seen, oracle: &Seen) {
    for (point, m) in &seen.mounts {
        let kernel_view = point.starts_with("/proc/") || point.starts_with("/sys");
        if kernel_view && m.root != "/null" {
            assert!(m.ro, "{tier}: {point} is writable: {m:?}");
        }
    }
    for (point, m) in &oracle.mounts {
        let masked = m.root == "/null" || (m.fstype == "tmpfs" && m.ro);
        if masked && !point.starts_with("/sys/fs/cgroup") {
            let ours = seen.mounts.get(point);
            assert!(
                ours.is_some(),
                "{tier}: {point} is masked by runc, not here"
            );
        }
    }
}

#[test]
fn the_full_tier_matches_runc_with_dockers_settings() {
    if !ready() {
        return;
    }
    let oracle = runc_oracle(true, std::process::id());
    let verbatim = runc_oracle(false, std::process::id());
    for (check, outcome) in &verbatim.checks {
        eprintln!("CORPUS runc-spec {check} {outcome}");
    }
    for (check, outcome) in &oracle.checks {
        eprintln!("CORPUS runc+docker {check} {outcome}");
    }
    // Real root: remapped by default (the step's root is an unused host
    // id), and as host root with --userns-remap=off. Where rbuild's outcome
    // differs from runc's, and why. Block device: runc's devices cgroup
    // refuses to open it (EPERM); a remapped step cannot make it (EPERM: a
    // user namespace makes no device nodes); host root's nodev mounts
    // refuse to open it (EACCES). core_pattern: in the remapped namespace
    // its owner is unmapped, so the permission check refuses (EACCES)
    // before the read-only mount would (EROFS).
    let remapped: &[(&str, &str)] = &[("block_device", "EPERM"), ("core_pattern", "EACCES")];
    let host_root: &[(&str, &str)] = &[("block_device", "EACCES")];
    for (tier, extra, uid_map, differences) in [
        ("full", "", "0 1879048192 65536", remapped),
        (
            "full-host-root",
            "--userns-remap=off",
            "0 0 4294967295",
            host_root,
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let context = work.path().join("ctx");
        probe_context(&context, "");
        let (out, seen) = rbuild_seen("", &work.path().join("root"), &context, extra);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("isolation: full"), "{}", text(&out));
        assert_eq!(seen.uid_map, uid_map, "{tier}: the step's ids");
        assert_same_as_runc(tier, &seen, &oracle);
        for (check, theirs) in &oracle.checks {
            let expected = differences
                .iter()
                .find(|(c, _)| c == check)
                .map_or(theirs.as_str(), |(_, outcome)| *outcome);
            assert_eq!(
                &seen.checks[check], expected,
                "{tier} {check} (runc: {theirs})"
            );
        }
        assert_all_stopped(tier, &seen);
        // runc's spec as it stands (3 capabilities, no seccomp) lets these
        // through; docker's settings, and rbuild, do not.
        for check in ["keyctl", "unshare_user"] {
            assert_eq!(verbatim.checks[check], "ALLOWED", "{check}");
            assert_eq!(seen.checks[check], "EPERM", "{tier} {check}");
        }
    }
}

/// Status, /dev and the mounts under /proc and /sys as runc gives them
/// with docker's settings: the same mount points, each at least as strict.
/// Listed difference: runc shows the container's own cgroups under
/// /sys/fs/cgroup; a step without --memory/--cpus/--pids-limit has no
/// cgroup of its own, so rbuild shows none there.
fn assert_same_as_runc(tier: &str, seen: &Seen, oracle: &Seen) {
    assert_docker_status(tier, seen, oracle);
    assert_eq!(seen.dev, oracle.dev, "{tier}: /dev listing");
    let points = |s: &Seen| -> BTreeSet<String> {
        s.mounts
            .keys()
            .filter(|p| {
                (p.starts_with("/proc") || p.starts_with("/sys"))
                    && !p.starts_with("/sys/fs/cgroup")
            })
            .cloned()
            .collect()
    };
    assert_eq!(points(seen), points(oracle), "{tier}: mount points");
    for point in points(oracle) {
        let (ours, theirs) = (&seen.mounts[&point], &oracle.mounts[&point]);
        if theirs.root == "/null" {
            // A masked file: /dev/null over it on both sides (runc binds
            // the container's node, rbuild the host's).
            assert_eq!(ours.root, "/null", "{tier}: {point}");
            continue;
        }
        assert!(
            ours.ro || !theirs.ro,
            "{tier}: {point}: {ours:?} vs runc {theirs:?}"
        );
        assert!(
            ours.flags.is_superset(&theirs.flags),
            "{tier}: {point}: {ours:?} vs runc {theirs:?}"
        );
    }
    assert!(!seen.mounts.keys().any(|p| p.starts_with("/sys/fs/cgroup")));
}

#[test]
fn the_rootless_tier_is_confined_the_same_way() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(work.path(), Some(65534), Some(65534)).unwrap();
    let context = work.path().join("ctx");
    probe_context(&context, "");
    let launcher = "setpriv --reuid 65534 --regid 65534 --clear-groups";
    let (out, seen) = rbuild_seen(launcher, &work.path().join("root"), &context, "");
    assert!(out.status.success(), "{}", text(&out));
    let oracle = runc_oracle(true, std::process::id());
    assert_docker_status("rootless", &seen, &oracle);
    assert_masked_like("rootless", &seen, &oracle);
    assert_all_stopped("rootless", &seen);
    for check in ["keyctl", "unshare_user", "mount", "bpf", "release_agent"] {
        assert_eq!(seen.checks[check], "EPERM", "rootless {check}");
    }
}

#[test]
fn the_chroot_tier_cannot_reach_rbuild_or_the_disks() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("ctx");
    probe_context(&context, "");
    let (out, seen) = rbuild_seen(
        "",
        &work.path().join("root"),
        &context,
        "--isolation=chroot",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_all_stopped("chroot", &seen);
    // No pid namespace: the guard filter and a non-dumpable rbuild.
    assert_eq!(seen.checks["kill_builder"], "EPERM");
    assert_eq!(seen.checks["ptrace_builder"], "EPERM");
    // No mount namespace for nodev: CAP_MKNOD is gone instead.
    assert_eq!(seen.checks["block_device"], "EPERM");
}

#[test]
fn the_nopidns_and_chroot_tiers_in_a_container_cannot_reach_rbuild() {
    if !ready() {
        return;
    }
    // rbuild inside a default podman container: no CAP_SYS_ADMIN, so a
    // user namespace without a pid namespace (the nopidns tier).
    let root = container_root("FROM busybox\n");
    let context = root.path().join("ctx");
    probe_context(&context, "");
    let podman = Podman::new();
    let cmd = format!(
        "exec /rbuild build --progress=plain --root /tmp/r --build-arg TARGET_PID=$$ \
         --build-arg DISK={} /ctx",
        host_disk()
    );
    let out = podman
        .run_cmd()
        .arg("--rootfs")
        .arg(root.path())
        .args(["/bin/busybox", "sh", "-c", &cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("isolation: nopidns"), "{}", text(&out));
    let seen = parse(&step_lines(&out));
    assert_all_stopped("nopidns", &seen);
    assert_eq!(seen.checks["kill_builder"], "EPERM");
    assert_eq!(seen.checks["ptrace_builder"], "EPERM");
    assert_eq!(seen.status["CapBnd"], "00000000a80425fb");
    assert_eq!(seen.status["Seccomp"], "2");

    // The chroot tier in the same container: no CAP_SYS_ADMIN to load the
    // filters with, so they go in under no_new_privs, and still hold.
    let out = podman
        .run_cmd()
        .arg("--rootfs")
        .arg(root.path())
        .args([
            "/bin/busybox",
            "sh",
            "-c",
            &cmd.replace("--root /tmp/r", "--root /tmp/r2 --isolation=chroot"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let seen = parse(&step_lines(&out));
    assert_all_stopped("chroot-in-container", &seen);
    assert_eq!(seen.checks["kill_builder"], "EPERM");
    assert_eq!(seen.checks["ptrace_builder"], "EPERM");
}

#[test]
fn insecure_needs_the_entitlement_and_lifts_the_confinement() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("ctx");
    probe_context(&context, "--security=insecure");
    let root = work.path().join("root");
    let (out, _) = rbuild_seen("", &root, &context, "");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Dockerfile:6:1: RUN --security=insecure")
            && text(&out).contains("--allow security.insecure"),
        "{}",
        text(&out)
    );
    let (out, seen) = rbuild_seen("", &root, &context, "--allow security.insecure");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(seen.status["Seccomp"], "0");
    // Every capability rbuild itself holds (root on a VM may lack some).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_bounding = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(seen.status["CapBnd"], own_bounding);
    assert_eq!(seen.checks["keyctl"], "ALLOWED");
}

/// One rule as "name action [errno] [index:op:value:value2 …]", the same
/// shape for both profiles.
fn rule_key(name: &str, action: &str, errno: Option<i64>, args: &[String]) -> String {
    let mut key = format!("{name} {action}");
    if let Some(e) = errno {
        key.push_str(&format!(" {e}"));
    }
    for a in args {
        key.push_str(&format!(" {a}"));
    }
    key
}

/// rbuild's restated profile, for the default capabilities on amd64.
fn our_rules() -> BTreeSet<String> {
    use rbuild::executor::confine::profile::{groups_for, Action, Compare};
    let mut keys = BTreeSet::new();
    let caps = docker_caps();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    for group in groups_for(&caps, "amd64", (6, 1)) {
        let args: Vec<String> = group
            .args
            .iter()
            .map(|(i, c)| match c {
                Compare::NotEqual(v) => format!("{i}:SCMP_CMP_NE:{v}:0"),
                Compare::Equal(v) => format!("{i}:SCMP_CMP_EQ:{v}:0"),
                Compare::MaskedEqual { mask, value } => {
                    format!("{i}:SCMP_CMP_MASKED_EQ:{mask}:{value}")
                }
            })
            .collect();
        let (action, errno) = match group.action {
            Action::Allow => ("SCMP_ACT_ALLOW", None),
            Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e as i64)),
        };
        for name in group.names.split_whitespace() {
            keys.insert(rule_key(name, action, errno, &args));
        }
    }
    keys
}

/// Debian's copy (moby 20.10), filtered the same way.
fn debian_rules() -> BTreeSet<String> {
    let seccomp = debian_docker_seccomp();
    let mut keys = BTreeSet::new();
    for rule in seccomp["syscalls"].as_array().unwrap() {
        let args: Vec<String> = rule["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{}:{}:{}:{}",
                    a["index"],
                    a["op"].as_str().unwrap(),
                    a["value"],
                    a["valueTwo"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        for name in rule["names"].as_array().unwrap() {
            keys.insert(rule_key(
                name.as_str().unwrap(),
                rule["action"].as_str().unwrap(),
                rule["errnoRet"].as_i64(),
                &args,
            ));
        }
    }
    keys
}

#[test]
fn the_profile_table_is_debians_docker_profile_plus_what_moby_added_since() {
    if !Path::new(DEBIAN_PROFILE).exists() || !Path::new(DEBIAN_CAPS).exists() {
        skip(&format!(
            "{DEBIAN_PROFILE} or {DEBIAN_CAPS} is missing \
             (apt-get install golang-github-docker-docker-dev)"
        ));
        return;
    }
    let (ours, debian) = (our_rules(), debian_rules());
    let only_ours: Vec<&String> = ours.difference(&debian).collect();
    let only_debian: Vec<&String> = debian.difference(&ours).collect();
    eprintln!(
        "only in rbuild's table: {only_ours:#?}\nonly in Debian's 20.10 profile: {only_debian:#?}"
    );
    assert_eq!(
        only_ours, ADDED_SINCE_20_10,
        "rules rbuild has that Debian's profile lacks"
    );
    assert_eq!(
        only_debian, REMOVED_SINCE_20_10,
        "rules Debian's profile has that rbuild lacks"
    );
}

/// What today's moby profile (the one rbuild restates) has and Debian's
/// 20.10 copy does not: memory-protection keys, name_to_handle_at and
/// process_vm_readv/writev (with ptrace on kernels from 4.8) were allowed
/// later, and `socket` is now allowed for every family but AF_VSOCK (40).
const ADDED_SINCE_20_10: &[&str] = &[
    "name_to_handle_at SCMP_ACT_ALLOW",
    "pkey_alloc SCMP_ACT_ALLOW",
    "pkey_free SCMP_ACT_ALLOW",
    "pkey_mprotect SCMP_ACT_ALLOW",
    "process_vm_readv SCMP_ACT_ALLOW",
    "process_vm_writev SCMP_ACT_ALLOW",
    "socket SCMP_ACT_ALLOW 0:SCMP_CMP_NE:40:0",
];
/// The 20.10 rule the AF_VSOCK condition replaced.
const REMOVED_SINCE_20_10: &[&str] = &["socket SCMP_ACT_ALLOW"];

#[test]
fn a_step_refused_an_operation_is_told_what_it_lacks_and_how_to_lift_it() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let build = |run: &str, extra: &[&str]| {
        let ctx = work.path().join(format!("ctx{}", extra.len()));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM busybox\nRUN {run}mkdir -p /m && mount -t tmpfs none /m && echo mounted\n"
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["build", "--progress=plain", "--root"])
            .arg(work.path().join("root"))
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap()
    };
    let refused = build("", &[]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains(
            "an operation was not permitted: RUN steps get docker's default capabilities"
        ) && said.contains("CAP_SYS_ADMIN")
            && said.contains("--allow security.insecure"),
        "{said}"
    );
    let lifted = build("--security=insecure ", &["--allow", "security.insecure"]);
    assert!(lifted.status.success(), "{}", text(&lifted));
    assert!(step_lines(&lifted).contains(&"mounted".to_string()));
}
