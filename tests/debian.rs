//! RUN steps on a real distribution: Debian 12 from `debootstrap
//! --variant=minbase` (built once by the fixture), pushed to the real
//! registry and pulled by the build. `useradd` rewrites `/etc/passwd`,
//! `/etc/group` and their `-` backups; both the overlay and the copy tier
//! must carry every one of those changes into the layer (a same-size,
//! same-mtime rewrite of `/etc/group-` is what the copy tier's inode and
//! ctime check is for), USER must resolve the new account, and WORKDIR
//! must create its directory as that user.

mod common;

use common::{
    debug_run_cmd, push_debian_minbase, push_pull_unpack, run_ok, stderr, step_lines,
    write_dockerfile, Podman, TestRegistry,
};

#[test]
fn useradd_user_and_workdir_on_debian() {
    let registry = TestRegistry::start(&[]);
    if !push_debian_minbase(&registry) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "ARG REGISTRY\n\
         FROM ${REGISTRY}/library/debian:bookworm-minbase\n\
         RUN useradd -m -u 1000 -s /bin/bash app && grep -c '^app:' /etc/passwd\n\
         USER app\n\
         WORKDIR /home/app/work\n\
         RUN id && pwd && touch mine && stat -c '%u:%g %a' mine\n\
         USER root\n\
         RUN sha256sum /etc/group- /etc/gshadow- /etc/passwd- | cut -c1-64\n\
         CMD [\"id\"]\n",
    );
    for snapshots in ["overlay", "copy"] {
        let oci = work.path().join(format!("oci-{snapshots}"));
        let out = debug_run_cmd(&dockerfile, &work.path().join("root"), &oci)
            .env("RBUILD_SNAPSHOTS", snapshots)
            .args([
                "--build-arg",
                &format!("REGISTRY={}", registry.addr),
                "--no-cache",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{snapshots}: {}", stderr(&out));
        let lines = step_lines(&out);
        assert_eq!(
            lines[..4],
            [
                "1",
                "uid=1000(app) gid=1000(app) groups=1000(app)",
                "/home/app/work",
                "1000:1000 644"
            ],
            "{snapshots}"
        );
        let sandbox_hashes = &lines[4..7];

        // What umoci unpacks from the pushed image is what the RUN saw.
        let rootfs = push_pull_unpack(
            &oci,
            &registry,
            &format!("debian/app-{snapshots}"),
            work.path(),
        );
        for (file, seen) in ["etc/group-", "etc/gshadow-", "etc/passwd-"]
            .iter()
            .zip(sandbox_hashes)
        {
            let bytes = std::fs::read(rootfs.join(file)).unwrap();
            let hash: String = {
                use sha2::Digest as _;
                sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            };
            assert_eq!(
                &hash, seen,
                "{snapshots}: /{file} in the image is what the RUN left"
            );
        }
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("app:x:1000:1000::/home/app:/bin/bash"),
            "{passwd}"
        );
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::metadata(rootfs.join("home/app/work/mine")).unwrap();
        assert_eq!((mine.uid(), mine.gid()), (1000, 1000));
    }

    // podman runs what was built.
    let podman = Podman::new();
    run_ok(podman.cmd().args([
        "pull",
        "--tls-verify=false",
        &format!("{}/debian/app-overlay:1", registry.addr),
    ]));
    let out = podman.run(&format!("{}/debian/app-overlay:1", registry.addr), &[]);
    assert_eq!(out.trim(), "uid=0(root) gid=0(root) groups=0(root)");
    let out = podman.run(
        &format!("{}/debian/app-overlay:1", registry.addr),
        &["su", "app", "-c", "id -un && pwd"],
    );
    assert_eq!(out, "app\n/home/app/work\n");
}
