//! The README's quick start, run verbatim (bash, from the repository root)
//! on a clean `RBUILD_ROOT`, with podman configured for this machine
//! through its own config files rather than by editing the commands.

mod common;

use std::path::Path;
use std::process::Command;

fn quick_start_block(readme: &str) -> String {
    let section = readme
        .split("## Quick start")
        .nth(1)
        .expect("a Quick start section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .split("```")
        .next()
        .unwrap();
    block.to_string()
}

#[test]
fn the_quick_start_works_verbatim() {
    if !common::is_root() {
        common::skip("podman here needs root");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let block = quick_start_block(&std::fs::read_to_string(repo.join("README.md")).unwrap());
    let work = tempfile::tempdir().unwrap();
    // podman on this VM: runc (crun refuses cgroup v1 hybrid), ulimits
    // under the hard limits, storage of its own.
    let containers_conf = work.path().join("containers.conf");
    std::fs::write(
        &containers_conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nnetns = \"none\"\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
    )
    .unwrap();
    let storage_conf = work.path().join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            work.path().join("graph").display(),
            work.path().join("run").display()
        ),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(repo)
        .env("RBUILD_ROOT", work.path().join("rbuild-root"))
        .env("CONTAINERS_CONF", &containers_conf)
        .env("CONTAINERS_STORAGE_CONF", &storage_conf)
        .env_remove("CI")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{block}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("hello from built by rbuild"),
        "{stdout}\n{stderr}"
    );
    assert!(!repo.join("examples/hello/hello.oci.tar").exists());
}
