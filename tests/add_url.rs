//! `ADD <url>` against a real HTTP server on loopback: the file arrives
//! with mode 0600 and the server's Last-Modified time, `--checksum` is
//! enforced, archives are unpacked only with `--unpack`, and the download's
//! content (not its URL alone) is what the cache key sees.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{is_root, stderr, unpack_remote, TestRegistry};

/// Files a test server serves: (path, body), replaceable while it runs.
type Served = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Serves `files` (path → body) over HTTP/1.0 with a fixed Last-Modified,
/// until the test ends. Bodies can be replaced while it runs.
fn serve(files: Served) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..n]).into_owned();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let files = files.lock().unwrap();
            let reply = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let mut r = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    addr
}

fn tar_gz() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "inside.txt", &b"inside"[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn add_from_a_url() {
    let files = Arc::new(Mutex::new(vec![
        ("/tool.txt".to_string(), b"version 1\n".to_vec()),
        ("/bundle.tar.gz".to_string(), tar_gz()),
    ]));
    let server = serve(files.clone());
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let registry = TestRegistry::start(&[]);
    let image = format!("{}/add-url:1", registry.addr);
    let dockerfile = |checksum: &str| {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM busybox\n\
                 ADD http://{server}/tool.txt /out/\n\
                 ADD --checksum=sha256:{checksum} http://{server}/tool.txt /out/checked.txt\n\
                 ADD http://{server}/bundle.tar.gz /out/kept/\n\
                 ADD --unpack=true http://{server}/bundle.tar.gz /out/unpacked/\n\
                 RUN stat -c '%n %a %Y' /out/tool.txt /out/checked.txt\n"
            ),
        )
        .unwrap();
    };
    let build = || -> Output {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&root)
            .args(["-t", &image, "--push"])
            .arg(&ctx)
            .output()
            .unwrap()
    };
    dockerfile(&sha256(b"version 1\n"));
    let out = build();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let lines = common::step_lines(&out);
    assert!(
        lines.contains(&"/out/tool.txt 600 1700000000".to_string()),
        "{log}"
    );
    assert!(
        lines.contains(&"/out/checked.txt 600 1700000000".to_string()),
        "{log}"
    );
    if is_root() {
        let rootfs = unpack_remote(&image, work.path());
        assert!(rootfs.join("out/kept/bundle.tar.gz").is_file());
        assert_eq!(
            std::fs::read_to_string(rootfs.join("out/unpacked/inside.txt")).unwrap(),
            "inside"
        );
    } else {
        common::skip("the unpack check: umoci unpack here needs root");
    }

    // Same content again: every step cached. New content: the ADD reruns.
    let again = build();
    assert!(
        stderr(&again).contains("0 step(s) run"),
        "{}",
        stderr(&again)
    );
    files.lock().unwrap()[0].1 = b"version 2\n".to_vec();
    dockerfile(&sha256(b"version 2\n"));
    let changed = build();
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert!(!stderr(&changed).contains("0 step(s) run"));

    // A wrong checksum fails and names the URL.
    dockerfile(&sha256(b"something else"));
    let wrong = build();
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains(&format!("http://{server}/tool.txt: checksum mismatch")),
        "{}",
        stderr(&wrong)
    );
    assert!(Path::new(&root).exists());
}
