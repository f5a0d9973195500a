//! A registry that answers with something huge or malformed (issue 22):
//! a manifest body that never ends, a manifest that declares a gigabyte,
//! a token endpoint that streams without end, an error body of 100 MB, a
//! manifest that is not JSON, a header of 1 MB. Each is a
//! small plain-HTTP server on loopback written here (no real registry
//! misbehaves on purpose). `rbuild build` of `FROM <it>/app:1` must stop
//! with a clear error naming the limit (exit 3, the environment's), with
//! peak memory bounded: under 64 MB of RSS (GNU time's `%M`), while the
//! server offers hundreds of MB.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

mod common;

use common::stderr;

/// What the server does wrong.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// A manifest streamed without a length, 300 MB of it.
    EndlessManifest,
    /// A manifest whose Content-Length says 1 GB.
    DeclaredGigabyte,
    /// 401 with a Bearer challenge whose token endpoint streams 300 MB.
    EndlessToken,
    /// A 404 whose body is 100 MB.
    HugeErrorBody,
    /// A manifest that is not JSON.
    MalformedManifest,
    /// A response header of 1 MB.
    HugeHeader,
}

/// Serves one misbehaving registry on a loopback port until the test
/// ends; its `host:port`.
fn serve(how: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let realm = realm.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, how, &realm);
            });
        }
    });
    addr
}

/// Streams `total` bytes of `fill` (stops when the client hangs up).
fn stream_bytes(out: &mut TcpStream, total: usize, fill: u8) -> std::io::Result<()> {
    let chunk = vec![fill; 1 << 20];
    let mut sent = 0;
    while sent < total {
        out.write_all(&chunk)?;
        sent += chunk.len();
    }
    Ok(())
}

/// Answers one request. Every response says `Connection: close`, as the
/// server then closes: a client must not send its next request down a
/// connection the server is about to drop.
fn answer(mut stream: TcpStream, how: Misbehaviour, realm: &str) -> std::io::Result<()> {
    // One reader for the whole head (the body of a GET is empty).
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    match (how, path.as_str()) {
        (Misbehaviour::EndlessToken, p) if p.starts_with("/token") => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"token\":\"")?;
            stream_bytes(&mut stream, 300 << 20, b'a')
        }
        (Misbehaviour::EndlessToken, _) => {
            let head = format!(
                "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nWww-Authenticate: Bearer realm=\"{realm}\",service=\"x\"\r\nContent-Length: 0\r\n\r\n"
            );
            stream.write_all(head.as_bytes())
        }
        (_, "/v2/" | "/v2") => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        }
        (Misbehaviour::EndlessManifest, _) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {manifest_type}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            stream_bytes(&mut stream, 300 << 20, b' ')
        }
        (Misbehaviour::DeclaredGigabyte, _) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {manifest_type}\r\nContent-Length: {}\r\n\r\n",
                1u64 << 30
            );
            stream.write_all(head.as_bytes())?;
            stream_bytes(&mut stream, 300 << 20, b' ')
        }
        (Misbehaviour::MalformedManifest, _) => {
            let body = "{\"schemaVersion\": 2, \"layers\": [{\"digest\": ";
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {manifest_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.as_bytes())
        }
        (Misbehaviour::HugeHeader, _) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Padding: ")?;
            stream_bytes(&mut stream, 1 << 20, b'p')?;
            stream.write_all(b"\r\nContent-Length: 2\r\n\r\n{}")
        }
        (Misbehaviour::HugeErrorBody, _) => {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"")?;
            stream_bytes(&mut stream, 100 << 20, b'x')
        }
    }
}

/// `rbuild build` of `FROM <addr>/app:1` under GNU time: its output and
/// its peak RSS in KB.
fn build_from(addr: &str, work: &Path) -> (std::process::Output, u64) {
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {addr}/app:1\n")).unwrap();
    let rss = work.join("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .arg("build")
        .arg("--root")
        .arg(work.join("root"))
        .arg(&ctx)
        .env("DOCKER_CONFIG", work.join("no-docker-config"))
        .output()
        .unwrap();
    let kb = std::fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    (out, kb)
}

#[test]
fn a_registry_answering_with_huge_bodies_gets_a_clear_error_and_bounded_memory() {
    if !Path::new("/usr/bin/time").exists() {
        common::skip("GNU time (/usr/bin/time, Debian's time) measures the peak RSS");
        return;
    }
    for (how, name, says) in [
        (
            Misbehaviour::EndlessManifest,
            "endless manifest",
            "over 4 MiB",
        ),
        (
            Misbehaviour::DeclaredGigabyte,
            "a manifest declaring 1 GB",
            "over 4 MiB",
        ),
        (Misbehaviour::EndlessToken, "endless token", "over 1024 KiB"),
        (Misbehaviour::HugeErrorBody, "a 100 MB error body", "404"),
        (
            Misbehaviour::MalformedManifest,
            "a manifest that is not JSON",
            "invalid manifest: EOF while parsing",
        ),
        (
            Misbehaviour::HugeHeader,
            "a 1 MB header",
            "message head is too large",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let addr = serve(how);
        let (out, kb) = build_from(&addr, work.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{name}: exit 3\n{err}");
        assert!(err.contains(says), "{name}: the error says {says:?}\n{err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(
            err.len() < 8 << 10,
            "{name}: an error of {} bytes",
            err.len()
        );
        assert!(kb < 64 * 1024, "{name}: peak RSS {kb} KB");
        let said = err
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        eprintln!("{name}: exit 3, peak RSS {} MB: {said}", kb / 1024);
    }
}
