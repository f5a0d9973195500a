//! The pods CI really runs (issue 16), as real containers: Debian's dockerd
//! (started privately, its built-in default seccomp profile, which is
//! containerd's RuntimeDefault) runs the freshly built rbuild with each
//! common security setting, and rbuild builds with no flag but `--root`.
//! Each row records the tier `rbuild info` chose, what a RUN step got
//! (pid, network links, ids, `/proc`, `/dev/null`, a `USER 1000` step)
//! and the result, into `target/pod-matrix.md` (the README's table).
//!
//! What it holds rbuild to today: every row either builds, or stops with
//! a clear error (the environment's exit code 3 with the failed probes, or
//! a step's error at its Dockerfile line), never a panic; and the rows
//! issue 16 found working stay working. Needs root and docker.io.

mod common;

use std::path::Path;
use std::process::Command;

use common::{is_root, push_debian_minbase, skip, text, Dockerd, TestRegistry};

/// The Dockerfile each row builds: one line of what the step got, a
/// background process left behind, then a step as uid 1000.
const DOCKERFILE: &str = r#"FROM busybox
RUN echo "gets: pid=$$ net=$(echo $(ls /sys/class/net 2>/dev/null)) proc=$(head -1 /proc/self/status >/dev/null 2>&1 && echo yes || echo no) devnull=$( (echo x > /dev/null) 2>/dev/null && echo yes || echo no) ids=$(awk '{print $3}' /proc/self/uid_map 2>/dev/null || echo ?)"
RUN sleep 100 & echo left-a-process
RUN mkdir /owned && touch /owned/f && chown -R 1000:1000 /owned
USER 1000
RUN (echo x > /dev/null) && echo "user1000: $(id -u)"
"#;

/// One security setting: its name, who runs like this, the pod
/// securityContext it stands for, and whether it builds today.
struct Setting {
    name: &'static str,
    pod: Pod,
    /// Whether it builds today (and so must go on building).
    must_build: bool,
}

/// A container's securityContext, from which come both the `docker run`
/// flags the matrix runs with ([`Pod::docker_flags`]) and the manifest in
/// `docs/kubernetes/` ([`Pod::manifest`]): one source, so the two cannot
/// drift apart.
struct Pod {
    /// `docs/kubernetes/<file>.yaml`.
    file: &'static str,
    /// runAsUser and runAsGroup; None: the image's user, root.
    run_as: Option<u32>,
    /// seccompProfile: RuntimeDefault (docker's default profile, which
    /// containerd's RuntimeDefault is) or Unconfined.
    runtime_default: bool,
    /// capabilities.drop: [ALL].
    drop_all: bool,
    /// capabilities.add.
    add: &'static [&'static str],
    /// allowPrivilegeEscalation: false (docker's no-new-privileges).
    no_new_privs: bool,
}

impl Pod {
    fn docker_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let mut push = |a: &str, b: String| flags.extend([a.to_string(), b]);
        if let Some(id) = self.run_as {
            push("--user", format!("{id}:{id}"));
        }
        if self.drop_all {
            push("--cap-drop", "ALL".into());
        }
        for cap in self.add {
            push("--cap-add", cap.to_string());
        }
        if self.no_new_privs {
            push("--security-opt", "no-new-privileges".into());
        }
        if !self.runtime_default {
            push("--security-opt", "seccomp=unconfined".into());
        }
        flags
    }

    /// The container's securityContext, as YAML at the manifest's indent.
    fn security_context(&self) -> String {
        let mut y = String::from("          securityContext:\n");
        if let Some(id) = self.run_as {
            y += &format!(
                "            runAsUser: {id}\n            runAsGroup: {id}\n            runAsNonRoot: true\n"
            );
        } else {
            y += "            runAsUser: 0\n";
        }
        y += &format!(
            "            allowPrivilegeEscalation: {}\n",
            !self.no_new_privs
        );
        if self.drop_all || !self.add.is_empty() {
            y += "            capabilities:\n";
            if self.drop_all {
                y += "              drop: [ALL]\n";
            }
            if !self.add.is_empty() {
                y += &format!("              add: [{}]\n", self.add.join(", "));
            }
        }
        let profile = if self.runtime_default {
            "RuntimeDefault"
        } else {
            "Unconfined"
        };
        y += &format!("            seccompProfile:\n              type: {profile}\n");
        y
    }

    /// The Job manifest of this row.
    fn manifest(&self, setting: &str) -> String {
        format!(
            "# rbuild in a pod with this security setting: {setting}.\n\
             # A row of the README's pod matrix: tests/pod_matrix.rs runs rbuild in a\n\
             # docker container with the same settings ({flags}), and\n\
             # checks that this file is what the row ran. The tier it picks, what a\n\
             # RUN step gets there and the result are in the README's table.\n\
             apiVersion: batch/v1\n\
             kind: Job\n\
             metadata:\n\
             \x20 name: rbuild-{file}\n\
             spec:\n\
             \x20 backoffLimit: 0\n\
             \x20 template:\n\
             \x20   spec:\n\
             \x20     restartPolicy: Never\n\
             \x20     initContainers:\n\
             \x20       - name: checkout\n\
             \x20         image: alpine/git:2.45.2\n\
             \x20         args: [\"clone\", \"--depth=1\", \"https://git.example.com/team/app.git\", \"/workspace\"]\n\
             \x20         volumeMounts:\n\
             \x20           - {{ name: workspace, mountPath: /workspace }}\n\
             \x20     containers:\n\
             \x20       - name: rbuild\n\
             \x20         image: registry.example.com/rbuild:1\n\
             \x20         args: [\"-t\", \"registry.example.com/team/app:$(BUILD_ID)\", \"--push\", \"/workspace\"]\n\
             \x20         env:\n\
             \x20           - {{ name: BUILD_ID, value: \"1\" }}\n\
             \x20           - {{ name: DOCKER_CONFIG, value: /docker }}\n\
             {context}\
             \x20         volumeMounts:\n\
             \x20           - {{ name: workspace, mountPath: /workspace }}\n\
             \x20           - {{ name: cache, mountPath: /var/lib/rbuild }}\n\
             \x20           - {{ name: docker-config, mountPath: /docker, readOnly: true }}\n\
             \x20     volumes:\n\
             \x20       - {{ name: workspace, emptyDir: {{}} }}\n\
             \x20       # A persistent volume here keeps the layer cache between builds.\n\
             \x20       - {{ name: cache, emptyDir: {{}} }}\n\
             \x20       - name: docker-config\n\
             \x20         secret:\n\
             \x20           secretName: registry-credentials\n\
             \x20           items: [{{ key: .dockerconfigjson, path: config.json }}]\n",
            flags = if self.docker_flags().is_empty() {
                "no flags: docker's defaults".to_string()
            } else {
                self.docker_flags().join(" ")
            },
            file = self.file,
            context = self.security_context(),
        )
    }
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "root, default caps, default seccomp (GitHub `container:`, GitLab docker executor, RuntimeDefault pods)",
        pod: Pod {
            file: "root-runtime-default",
            run_as: None,
            runtime_default: true,
            drop_all: false,
            add: &[],
            no_new_privs: false,
        },
        must_build: true,
    },
    Setting {
        name: "root, seccomp unconfined (a pod with no seccompProfile)",
        pod: Pod {
            file: "root-unconfined",
            run_as: None,
            runtime_default: false,
            drop_all: false,
            add: &[],
            no_new_privs: false,
        },
        must_build: true,
    },
    Setting {
        name: "root + CAP_SYS_ADMIN, default seccomp",
        pod: Pod {
            file: "root-sys-admin",
            run_as: None,
            runtime_default: true,
            drop_all: false,
            add: &["SYS_ADMIN"],
            no_new_privs: false,
        },
        must_build: true,
    },
    Setting {
        name: "uid 1000, all caps dropped, no_new_privs, seccomp unconfined",
        pod: Pod {
            file: "uid1000-unconfined",
            run_as: Some(1000),
            runtime_default: false,
            drop_all: true,
            add: &[],
            no_new_privs: true,
        },
        must_build: false,
    },
    Setting {
        name: "uid 1000, caps dropped, no_new_privs, RuntimeDefault (Kubernetes restricted)",
        pod: Pod {
            file: "restricted",
            run_as: Some(1000),
            runtime_default: true,
            drop_all: true,
            add: &[],
            no_new_privs: true,
        },
        must_build: false,
    },
];

/// `docs/kubernetes/<row>.yaml` is each row's manifest, rendered from the
/// settings the matrix runs with (no root or docker needed).
/// `RBUILD_BLESS=1` writes them.
#[test]
fn the_kubernetes_manifests_are_the_matrix_rows() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/kubernetes");
    let mut stale = Vec::new();
    for setting in SETTINGS {
        let path = dir.join(format!("{}.yaml", setting.pod.file));
        let want = setting.pod.manifest(setting.name);
        if std::env::var_os("RBUILD_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(format!("{}:\n{want}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "manifests differ from the matrix rows (RBUILD_BLESS=1 writes them):\n{}",
        stale.join("\n")
    );
}

/// What one row found.
struct Row {
    tier: String,
    gets: String,
    user1000: String,
    result: String,
}

#[test]
fn every_common_pod_setting_builds_or_says_why_not() {
    let Some(dockerd) = dockerd_or_skip() else {
        return;
    };
    let image = import_rbuild_image(&dockerd);
    let mut table = String::from(
        "| setting | tier chosen | what a RUN step gets | `USER 1000` step | result |\n|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for setting in SETTINGS {
        let row = run_row(&dockerd, &image, setting, &mut failures);
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            setting.name, row.tier, row.gets, row.user1000, row.result
        ));
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../pod-matrix.md");
    std::fs::write(&out, &table).unwrap();
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}\n{table}", failures.join("\n"));
}

/// A private dockerd, or None after a loud skip (not root, no docker.io).
fn dockerd_or_skip() -> Option<Dockerd> {
    if !is_root() {
        skip("the pod matrix runs docker containers: needs root");
        return None;
    }
    Dockerd::start()
        .map_err(|e| skip(&format!("the pod matrix needs dockerd: {e}")))
        .ok()
}

/// A docker image holding the rbuild under test, the libraries it links,
/// Debian's static busybox (rbuild's `FROM busybox` base) and the
/// Dockerfile, imported from a directory as `rbuild-matrix:test`.
fn import_rbuild_image(dockerd: &Dockerd) -> String {
    let root = common::container_root(DOCKERFILE);
    std::fs::set_permissions(
        root.path().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let tar = root.path().with_extension("tar");
    common::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    common::run_ok(
        dockerd
            .docker()
            .arg("import")
            .arg(&tar)
            .arg("rbuild-matrix:test"),
    );
    let _ = std::fs::remove_file(&tar);
    "rbuild-matrix:test".to_string()
}

/// `docker run` of rbuild with `args` under `setting`, after `run` (the
/// container's network, volumes, environment).
fn in_docker(
    dockerd: &Dockerd,
    image: &str,
    setting: &Setting,
    run: &[String],
    args: &[&str],
) -> std::process::Output {
    dockerd
        .docker()
        .args(["run", "--rm"])
        .args(run)
        .args(setting.pod.docker_flags())
        .arg(image)
        .arg("/rbuild")
        .args(args)
        .output()
        .unwrap()
}

fn run_row(dockerd: &Dockerd, image: &str, setting: &Setting, failures: &mut Vec<String>) -> Row {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // With no --root, the default storage root is one this user can make
    // (docker gives a uid with no passwd entry HOME=/).
    // No network, and `out` (a host dir anyone may write) at /out.
    let run = [
        "--network".to_string(),
        "none".to_string(),
        "-v".to_string(),
        format!("{}:/out", out.display()),
    ];
    let bare = text(&in_docker(dockerd, image, setting, &run, &["info"]));
    let root = bare.lines().find_map(|l| l.strip_prefix("storage root: "));
    let expected = if setting.pod.run_as == Some(1000) {
        "/tmp/rbuild-1000"
    } else {
        "/var/lib/rbuild"
    };
    if root != Some(expected) {
        failures.push(format!("{}: default storage root: {bare}", setting.name));
    }
    let info = in_docker(dockerd, image, setting, &run, &["info", "--root", "/tmp/r"]);
    let said = text(&info);
    let tier = said
        .lines()
        .find_map(|l| l.strip_prefix("tier: "))
        .map(|t| t.split(" (").next().unwrap_or(t).to_string())
        .unwrap_or_else(|| "?".to_string());
    let build = in_docker(
        dockerd,
        image,
        setting,
        &run,
        &[
            "build",
            "--progress=plain",
            "--root",
            "/tmp/r",
            "-f",
            "/Dockerfile",
            "-o",
            "type=oci,dest=/out/oci,tar=false",
            "/tmp",
        ],
    );
    let log = text(&build);
    let said: Vec<&str> = log.lines().filter_map(common::output_text).collect();
    let gets = said
        .iter()
        .find_map(|l| l.strip_prefix("gets: "))
        .unwrap_or("—")
        .to_string();
    let user1000 = said
        .iter()
        .find_map(|l| l.strip_prefix("user1000: "))
        .map(|uid| format!("runs as {uid}"))
        .unwrap_or_else(|| "—".to_string());
    let result = match build.status.code() {
        Some(0) => "builds".to_string(),
        code => {
            let why = log
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map_or("no error line".to_string(), short_error);
            format!(
                "exit {}: {why}",
                code.map_or("signal".into(), |c| c.to_string())
            )
        }
    };
    match build.status.code() {
        Some(0) => {
            // What the layers say a step chowned, read by umoci.
            let rootfs = common::copy_and_unpack(
                &format!("oci:{}", out.join("oci").display()),
                &[],
                &work.path().join("layout"),
                &work.path().join("bundle"),
            );
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(rootfs.join("owned/f")).map(|m| (m.uid(), m.gid()));
            if owner.as_ref().ok() != Some(&(1000, 1000)) {
                failures.push(format!(
                    "{}: /owned/f in the image: {owner:?}",
                    setting.name
                ));
            }
        }
        Some(101) | None => failures.push(format!("{}: rbuild crashed: {log}", setting.name)),
        Some(3) if !log.contains("Failed probes") => failures.push(format!(
            "{}: exit 3 without the failed probes: {log}",
            setting.name
        )),
        Some(1) if !log.contains("Dockerfile:") => failures.push(format!(
            "{}: a step failed without its line: {log}",
            setting.name
        )),
        Some(_) if setting.must_build => {
            failures.push(format!("{}: builds no more: {log}", setting.name))
        }
        Some(_) => {}
    }
    Row {
        tier,
        gets,
        user1000,
        result,
    }
}

/// An error line for the table: a step's error without the instruction
/// it repeats (its location stays), `|` escaped.
fn short_error(line: &str) -> String {
    let short = match line.find("Dockerfile:") {
        Some(at) => {
            let location = line[at..].split(':').take(3).collect::<Vec<_>>().join(":");
            let rest = ["the RUN sandbox", "RUN did not", "RUN was"]
                .iter()
                .find_map(|m| line.find(m).map(|i| &line[i..]))
                .unwrap_or(line);
            format!("{location}: {rest}")
        }
        None => line.to_string(),
    };
    short.replace('|', "\\|")
}

#[test]
fn the_debian_app_builds_in_every_root_row_to_the_root_vms_layers() {
    let Some(dockerd) = dockerd_or_skip() else {
        return;
    };
    let registry = TestRegistry::start(&[]);
    if !push_debian_minbase(&registry) {
        return;
    }
    let image = import_rbuild_image(&dockerd);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), common::DEBIAN_APP).unwrap();
    std::fs::write(ctx.path().join("greeting.txt"), "hello from the context\n").unwrap();
    let build_args = [
        "--build-arg".to_string(),
        format!("REGISTRY={}", registry.addr),
    ];
    let epoch = "1700000000";

    // The root VM's build: the reference.
    let vm = format!("{}/app-vm:1", registry.addr);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--push", "-t", &vm, "--root"])
        .arg(work.path().join("root"))
        .args(&build_args)
        .arg(ctx.path())
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let want = common::layer_digests(&vm);

    for (i, setting) in SETTINGS.iter().filter(|s| s.must_build).enumerate() {
        let reference = format!("{}/app-row{i}:1", registry.addr);
        // The host's network, for the test registry on 127.0.0.1.
        let run = [
            "--network".to_string(),
            "host".to_string(),
            "-e".to_string(),
            format!("SOURCE_DATE_EPOCH={epoch}"),
            "-v".to_string(),
            format!("{}:/ctx:ro", ctx.path().display()),
        ];
        let mut args = vec!["build", "--progress=plain", "--push", "-t", &reference];
        args.extend(["--root", "/tmp/r"]);
        args.extend(build_args.iter().map(String::as_str));
        args.push("/ctx");
        let built = in_docker(&dockerd, &image, setting, &run, &args);
        let log = text(&built);
        assert!(built.status.success(), "{}: {log}", setting.name);
        assert!(
            log.contains("hello from the context"),
            "{}: {log}",
            setting.name
        );
        assert_eq!(
            common::layer_digests(&reference),
            want,
            "{}: {log}",
            setting.name
        );
        // And what the layers hold, read by umoci.
        let unpacked = work.path().join(format!("row{i}"));
        std::fs::create_dir(&unpacked).unwrap();
        let rootfs = common::unpack_remote(&reference, &unpacked);
        common::assert_debian_app_owners(&rootfs, setting.name);
    }
}
