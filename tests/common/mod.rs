//! Shared test fixtures: a real Docker distribution registry on loopback.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's `docker-registry` (Docker distribution 2.8) on a free loopback
/// port, with storage in a temp dir; killed when dropped.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's log (access log included).
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry; with `users`, htpasswd Basic auth for them.
    pub fn start(users: &[(&str, &str)]) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let mut lines = String::new();
            for (user, password) in users {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(out.status.success());
                lines.push_str(String::from_utf8(out.stdout).unwrap().trim());
                lines.push('\n');
            }
            std::fs::write(&htpasswd, lines).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        TestRegistry::start_with(dir, &auth)
    }

    /// Starts a registry with Bearer token auth trusting `tokens`.
    pub fn start_with_tokens(tokens: &TokenServer) -> TestRegistry {
        let auth = format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.addr,
            tokens.cert.display()
        );
        TestRegistry::start_with(tempfile::tempdir().unwrap(), &auth)
    }

    /// Starts a plain-HTTP registry on `ip` (another loopback address, so
    /// that the client's localhost rule does not apply).
    pub fn start_on(ip: &str) -> TestRegistry {
        TestRegistry::start_full(tempfile::tempdir().unwrap(), "", ip, "")
    }

    /// Starts a TLS registry on `ip` with a fresh self-signed certificate
    /// for that address; returns it and the certificate (PEM) path.
    pub fn start_tls(ip: &str) -> (TestRegistry, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("tls.key");
        let cert = dir.path().join("tls.crt");
        self_signed(
            &key,
            &cert,
            "rbuild-test-registry",
            &[
                "basicConstraints=critical,CA:FALSE".to_string(),
                "extendedKeyUsage=serverAuth".to_string(),
                format!("subjectAltName=IP:{ip}"),
            ],
        );
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        (TestRegistry::start_full(dir, "", ip, &tls), cert)
    }

    fn start_with(dir: tempfile::TempDir, auth: &str) -> TestRegistry {
        TestRegistry::start_full(dir, auth, "127.0.0.1", "")
    }

    fn start_full(dir: tempfile::TempDir, auth: &str, ip: &str, tls: &str) -> TestRegistry {
        let port = TcpListener::bind(format!("{ip}:0"))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("{ip}:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        let registry = TestRegistry {
            child,
            addr,
            log,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                // Any HTTP answer means it is serving (a TLS registry answers
                // this plain request with 400).
                if reply.starts_with("HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "registry on {} did not start:\n{}",
            self.addr,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// As [`TestRegistry::count_requests`], once every request made so far
    /// is in the log: a sentinel request is sent, and the log read until
    /// its line is there (plain-HTTP registries). Waits on that event, not
    /// for a fixed time.
    pub fn count_requests_settled(&self, method: &str, fragment: &str) -> usize {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SENTINELS: AtomicU64 = AtomicU64::new(0);
        let sentinel = format!(
            "/v2/?settle={}-{}",
            std::process::id(),
            SENTINELS.fetch_add(1, Ordering::Relaxed)
        );
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.write_all(format!("GET {sentinel} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let _ = s.read_to_string(&mut String::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(&sentinel)
        {
            assert!(
                Instant::now() < deadline,
                "the registry never logged {sentinel}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.count_requests(method, fragment)
    }

    /// Requests in the access log matching `method` and a path fragment.
    pub fn count_requests(&self, method: &str, fragment: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(fragment))
            .count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a docker `config.json` with Basic credentials into `dir`.
pub fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
}

/// What the fault proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it (response body trickled in small pieces).
    Pass,
    /// Answer `500 Internal Server Error` and close.
    Error500,
    /// Close the connection without answering.
    Drop,
    /// Forward it, but cut the response body off halfway and close.
    Cut,
}

/// An HTTP/1.1 proxy on loopback in front of a real registry that injects
/// faults per request, chosen by `policy(request_number, request_line)`.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Faults injected so far.
    pub injected: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

type Policy = std::sync::Arc<dyn Fn(u64, &str) -> Fault + Send + Sync>;

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub fn start(
        upstream: &str,
        policy: impl Fn(u64, &str) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(AtomicU64::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let policy: Policy = Arc::new(policy);
        let (stop2, injected2, upstream) = (stop.clone(), injected.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (policy, counter, injected, upstream) = (
                    policy.clone(),
                    counter.clone(),
                    injected2.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, &upstream, &policy, &counter, &injected);
                });
            }
        });
        FaultProxy {
            addr,
            stop,
            injected,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads an HTTP head (up to the blank line) byte by byte.
fn read_head(s: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn copy_exact(
    from: &mut TcpStream,
    to: &mut TcpStream,
    mut n: u64,
    trickle: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; if trickle { 16 * 1024 } else { 256 * 1024 }];
    while n > 0 {
        let want = buf.len().min(n as usize);
        let got = from.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        to.write_all(&buf[..got])?;
        n -= got as u64;
        if trickle {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    Ok(())
}

/// Copies a chunked body through unchanged.
fn copy_chunked(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if from.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            line.push(byte[0]);
        }
        to.write_all(&line)?;
        let size = u64::from_str_radix(
            String::from_utf8_lossy(&line)
                .trim()
                .split(';')
                .next()
                .unwrap_or("0"),
            16,
        )
        .unwrap_or(0);
        copy_exact(from, to, size + 2, false)?;
        if size == 0 {
            return Ok(());
        }
    }
}

fn proxy_connection(
    mut client: TcpStream,
    upstream: &str,
    policy: &Policy,
    counter: &std::sync::atomic::AtomicU64,
    injected: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let mut server = TcpStream::connect(upstream)?;
    loop {
        let Some(head) = read_head(&mut client)? else {
            return Ok(());
        };
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let body_len: u64 = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let fault = policy(counter.fetch_add(1, Ordering::SeqCst), &request_line);
        if fault != Fault::Pass {
            injected.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Fault::Drop => return Ok(()),
            Fault::Error500 => {
                let mut sink = std::io::sink();
                let mut limited = (&mut client).take(body_len);
                std::io::copy(&mut limited, &mut sink)?;
                client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            Fault::Pass | Fault::Cut => {}
        }
        server.write_all(head.as_bytes())?;
        copy_exact(&mut client, &mut server, body_len, false)?;
        let Some(response) = read_head(&mut server)? else {
            return Ok(());
        };
        client.write_all(response.as_bytes())?;
        let status: u16 = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let no_body = request_line.starts_with("HEAD ")
            || status == 204
            || status == 304
            || (100..200).contains(&status);
        if no_body {
            continue;
        }
        if header_value(&response, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            copy_chunked(&mut server, &mut client)?;
            continue;
        }
        let len: u64 = header_value(&response, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if fault == Fault::Cut && len > 1 {
            copy_exact(&mut server, &mut client, len / 2, true)?;
            return Ok(());
        }
        copy_exact(&mut server, &mut client, len, true)?;
    }
}

/// Podman with its own throwaway storage, set up to run on this VM (vfs
/// storage, runc — crun refuses cgroup v1 hybrid hosts — and ulimits below
/// the hard limits, since root here lacks CAP_SYS_RESOURCE).
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// A podman with empty storage.
    pub fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `podman` with this instance's global flags.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--runtime",
                "runc",
            ]);
        c
    }

    /// `podman run --rm` with no network and ulimits this VM allows; add
    /// the image (or `--rootfs DIR`) and the command.
    pub fn run_cmd(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        c
    }

    /// Runs `image` with `args` (no network) and returns its stdout.
    pub fn run(&self, image: &str, args: &[&str]) -> String {
        let out = self.run_cmd().arg(image).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman run {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `podman system service` on a Unix socket; returns the
    /// DOCKER_HOST value and the service process (kill it when done).
    pub fn service(&self) -> (String, ServiceGuard) {
        let socket = self.dir.path().join("podman.sock");
        let child = self
            .cmd()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "podman service socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (format!("unix://{}", socket.display()), ServiceGuard(child))
    }
}

/// Kills a background service when dropped.
pub struct ServiceGuard(Child);

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `service` the test token server and registry agree on.
pub const TOKEN_SERVICE: &str = "rbuild-test";
/// The token issuer the registry trusts.
pub const TOKEN_ISSUER: &str = "rbuild-test-issuer";

/// A Docker token service on loopback: checks Basic credentials (anonymous
/// callers get pull only) and issues RS256 JWTs signed with `openssl`, whose
/// self-signed certificate the registry trusts (`rootcertbundle`).
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The signing certificate (PEM).
    pub cert: std::path::PathBuf,
    /// Tokens issued so far.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _dir: tempfile::TempDir,
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes `%XX` and `+` in a query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    /// Starts a token server accepting `user`/`password`.
    pub fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine as _;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        self_signed(&key, &cert, "rbuild-test-token", &[]);
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(AtomicU64::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let (counter, user) = (issued.clone(), user.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(Some(head)) = read_head(&mut stream) else {
                    continue;
                };
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let authenticated = match header_value(&head, "authorization") {
                    Some(a) if a == expected => true,
                    Some(_) => {
                        let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        continue;
                    }
                    None => false,
                };
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let mut access = Vec::new();
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if k != "scope" {
                        continue;
                    }
                    let scope = percent_decode(v);
                    let parts: Vec<&str> = scope.splitn(3, ':').collect();
                    if parts.len() != 3 {
                        continue;
                    }
                    let actions: Vec<&str> = parts[2]
                        .split(',')
                        .filter(|a| authenticated || *a == "pull")
                        .collect();
                    access.push(
                        serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}),
                    );
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": if authenticated { user.as_str() } else { "" }, "aud": TOKEN_SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", counter.load(Ordering::SeqCst)), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())
                    .unwrap();
                let signature = sign.wait_with_output().unwrap().stdout;
                let token = format!("{signing_input}.{}", b64url(&signature));
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
        });
        TokenServer {
            addr,
            cert,
            issued,
            _dir: dir,
        }
    }
}

/// Writes a fresh RSA key and a self-signed certificate for `cn` with the
/// given `-addext` extensions.
fn self_signed(key: &Path, cert: &Path, cn: &str, extensions: &[String]) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
    ])
    .arg(format!("/CN={cn}"))
    .arg("-keyout")
    .arg(key)
    .arg("-out")
    .arg(cert)
    .stderr(Stdio::null());
    for extension in extensions {
        cmd.arg("-addext").arg(extension);
    }
    assert!(
        cmd.status().expect("openssl").success(),
        "openssl req for {cn}"
    );
}

/// Whether the tests run as root.
/// Says why a test does not run here; under `RBUILD_REQUIRE_PRIVILEGED=1`
/// (CI) that is a failure instead.
/// Every `.rs` file below `dir`, sorted (the source checks read `src/`).
pub fn rust_sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

pub fn skip(why: &str) {
    if std::env::var("RBUILD_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("RBUILD_REQUIRE_PRIVILEGED=1 but: {why}");
    }
    eprintln!("*** skipping: {why} ***");
}

/// `tests/fixtures/<name>.c` built static with gcc (so that it runs in a
/// busybox image) into this test binary's temp dir; the binary's path.
pub fn static_probe(name: &str) -> std::path::PathBuf {
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let source = format!("{}/tests/fixtures/{name}.c", env!("CARGO_MANIFEST_DIR"));
    run_ok(
        Command::new("gcc")
            .args(["-static", "-O1", "-Wall", "-o"])
            .arg(&out)
            .arg(source),
    );
    out
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs `cmd`, fails the test with its output unless it succeeds, and
/// returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `text` as `dir/Dockerfile` and returns its path.
pub fn write_dockerfile(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("Dockerfile");
    std::fs::write(&path, text).unwrap();
    path
}

/// A command's standard error as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A step's output line in rbuild's plain progress (`#N 0.123 text`):
/// the text.
pub fn output_text(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    let (id, rest) = rest.split_once(' ')?;
    id.parse::<usize>().ok()?;
    let (time, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let (secs, frac) = time.split_once('.')?;
    (secs.parse::<u64>().is_ok() && frac.len() == 3 && frac.parse::<u64>().is_ok()).then_some(text)
}

/// The lines RUN steps printed (both streams), in the order they came.
pub fn step_lines(out: &std::process::Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter_map(output_text)
        .map(str::to_string)
        .collect()
}

/// The instructions of the steps that ran (started and not `CACHED`), in
/// start order, from a plain progress log.
pub fn ran_steps_in(log: &str) -> Vec<String> {
    let mut started: Vec<(String, String)> = Vec::new();
    let mut cached = std::collections::HashSet::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, rest)) = rest.split_once(' ') else {
            continue;
        };
        if rest == "CACHED" {
            cached.insert(id.to_string());
        } else if rest.starts_with('[') {
            let text = rest.split_once("] ").map(|(_, t)| t).unwrap_or(rest);
            started.push((id.to_string(), text.to_string()));
        }
    }
    started
        .into_iter()
        .filter(|(id, _)| !cached.contains(id))
        .map(|(_, text)| text)
        .collect()
}

/// [`ran_steps_in`] of a command's stderr.
pub fn ran_steps(out: &std::process::Output) -> Vec<String> {
    ran_steps_in(&stderr(out))
}

/// `rbuild debug run -f DOCKERFILE --root ROOT --oci-dir OCI`, to add
/// flags to and run.
pub fn debug_run_cmd(dockerfile: &Path, root: &Path, oci: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["debug", "run", "--root"])
        .arg(root)
        .arg("-f")
        .arg(dockerfile)
        .arg("--oci-dir")
        .arg(oci);
    cmd
}

/// Starts `cmd` with stderr piped and waits until one of its steps prints
/// `line`; returns the running child (its stderr is drained in the
/// background, so it never blocks on a full pipe).
pub fn spawn_until_logged(cmd: &mut Command, line: &str) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn rbuild");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    for got in lines.by_ref() {
        if output_text(&got.expect("stderr line")) == Some(line) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// An OCI layout (tag `bookworm-minbase`) holding Debian 12 made by
/// `debootstrap --variant=minbase` from the Debian mirror, built once per
/// checkout under `target/tmp` and reused. None (with a loud message) when
/// not root: debootstrap needs it.
pub fn debian_minbase() -> Option<std::path::PathBuf> {
    use std::os::fd::AsFd;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-minbase");
    let layout = dir.join("oci");
    std::fs::create_dir_all(&dir).unwrap();
    // One builder at a time, across test processes.
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive).unwrap();
    if layout.join("index.json").exists() {
        return Some(layout);
    }
    if !is_root() {
        skip("building the Debian minbase fixture needs root (debootstrap)");
        return None;
    }
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    let mirror = std::env::var("RBUILD_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    run_ok(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror),
    );
    let store = rbuild::cache::ContentStore::open(dir.join("store")).unwrap();
    let image = rbuild::image::import::image_from_dir(
        &store,
        &rootfs,
        &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        &["bash"],
        "debootstrap --variant=minbase bookworm",
    )
    .unwrap();
    let staging = dir.join("oci.tmp");
    let _ = std::fs::remove_dir_all(&staging);
    let name: rbuild::image::reference::Reference = "debian:bookworm-minbase".parse().unwrap();
    rbuild::image::layout::write_oci_layout_dir(&store, &staging, &[(&image, &[name])]).unwrap();
    std::fs::rename(&staging, &layout).unwrap();
    let _ = std::fs::remove_dir_all(&rootfs);
    let _ = std::fs::remove_dir_all(dir.join("store"));
    Some(layout)
}

/// The test data dir with `list-tree.sh`.
const SANDBOX_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");

/// Pushes the image tagged `latest` in the OCI layout `oci` to
/// `registry/repo:1` with skopeo, pulls it back into a fresh layout and
/// unpacks it with umoci (under `work`, in a dir named after `repo`);
/// returns the unpacked rootfs.
pub fn push_pull_unpack(
    oci: &Path,
    registry: &TestRegistry,
    repo: &str,
    work: &Path,
) -> std::path::PathBuf {
    let remote = format!("{}/{repo}:1", registry.addr);
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", oci.display()),
        &format!("docker://{remote}"),
    ]));
    let dir = work.join(repo.replace('/', "_"));
    std::fs::create_dir_all(&dir).unwrap();
    unpack_remote(&remote, &dir)
}

/// Pulls `reference` (plain HTTP) with skopeo into a fresh layout under
/// `work` and unpacks it with umoci; returns the rootfs.
pub fn unpack_remote(reference: &str, work: &Path) -> std::path::PathBuf {
    copy_and_unpack(
        &format!("docker://{reference}"),
        &["--src-tls-verify=false"],
        &work.join("pulled"),
        &work.join("bundle"),
    )
}

/// Copies the skopeo `source` (`oci:DIR`, `docker://REF`) into a fresh
/// OCI layout at `layout` and unpacks it with umoci into a fresh `bundle`;
/// returns the rootfs.
pub fn copy_and_unpack(
    source: &str,
    flags: &[&str],
    layout: &Path,
    bundle: &Path,
) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(layout);
    let _ = std::fs::remove_dir_all(bundle);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .args(flags)
            .arg(source)
            .arg(format!("oci:{}:x", layout.display())),
    );
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:x", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// Pushes the Debian minbase fixture to `registry` as
/// `library/debian:bookworm-minbase`; false (after a loud message) when
/// the fixture cannot be made here.
pub fn push_debian_minbase(registry: &TestRegistry) -> bool {
    let Some(layout) = debian_minbase() else {
        return false;
    };
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:bookworm-minbase", layout.display()),
        &format!("docker://{}/library/debian:bookworm-minbase", registry.addr),
    ]));
    true
}

/// The listing `testdata/dockerfiles/sandbox/list-tree.sh` prints for a
/// chroot of `rootfs` (needs root).
pub fn list_tree_in(rootfs: &Path) -> Vec<String> {
    let script = rootfs.join("list-tree");
    std::fs::copy(Path::new(SANDBOX_DATA).join("list-tree.sh"), &script).unwrap();
    let out = run_ok(
        Command::new("chroot")
            .arg(rootfs)
            .args(["/bin/sh", "/list-tree"]),
    );
    std::fs::remove_file(script).unwrap();
    out.lines().map(str::to_string).collect()
}

/// Lines only in one of two listings, marked `-` (what the RUN saw) and
/// `+` (what was unpacked).
pub fn listing_differences(run: &[String], unpacked: &[String]) -> Vec<String> {
    let a: std::collections::BTreeSet<&String> = run.iter().collect();
    let b: std::collections::BTreeSet<&String> = unpacked.iter().collect();
    a.difference(&b)
        .map(|l| format!("- {l}"))
        .chain(b.difference(&a).map(|l| format!("+ {l}")))
        .collect()
}

/// A root file system holding just the rbuild binary, the libraries it
/// links, Debian's static busybox and a Dockerfile.
pub fn container_root(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["tmp", "proc", "dev", "sys", "bin", "etc"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let binary = env!("CARGO_BIN_EXE_rbuild");
    std::fs::copy(binary, root.join("rbuild")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(lib, &target).unwrap();
    }
    std::fs::write(root.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        root.join("Dockerfile.chroot"),
        "FROM busybox\nRUN echo started > /started\nRUN cat /started\nRUN --network=none true\n",
    )
    .unwrap();
    dir
}

/// Runs rbuild in a default podman container on `rootfs`.
pub fn in_container(podman: &Podman, rootfs: &Path, args: &[&str]) -> std::process::Output {
    in_container_with(podman, &[], rootfs, args)
}

/// As [`in_container`], with `flags` for `podman run` (`--cap-add …`).
pub fn in_container_with(
    podman: &Podman,
    flags: &[&str],
    rootfs: &Path,
    args: &[&str],
) -> std::process::Output {
    podman
        .run_cmd()
        .args(flags)
        .arg("--rootfs")
        .arg(rootfs)
        .arg("/rbuild")
        .args(args)
        .output()
        .unwrap()
}

pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `context` with rbuild (`args` and `env` added) into an OCI
/// layout under `work`, tags it with skopeo and unpacks it with umoci;
/// returns the build's output and the unpacked root file system.
pub fn build_and_unpack(
    context: &Path,
    work: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, std::path::PathBuf) {
    let oci = work.join("oci");
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--root"])
        .arg(work.join("root"))
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", oci.display()))
        .args(args)
        .arg(context)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbuild build {args:?} {env:?}: {}",
        stderr(&out)
    );
    let rootfs = copy_and_unpack(
        &format!("oci:{}", oci.display()),
        &[],
        &work.join("tagged"),
        &work.join("unpacked"),
    );
    (out, rootfs)
}

/// A private Docker daemon (Debian's docker.io) with BuildKit: its own
/// data root, exec root, pidfile and socket under a temp dir, no bridge,
/// no iptables. rbuild's busybox base is loaded as `busybox:latest`, so
/// both builders start from the same image. Stopped (and its mounts
/// released) on drop.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    /// Starts the daemon; `None` (with the reason) when docker.io is not
    /// installed or the daemon does not come up.
    pub fn start() -> Result<Dockerd, String> {
        if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/usr/bin/docker").exists() {
            return Err("Debian's docker.io is not installed (apt-get install docker.io)".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("rbuild-dockerd-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let p = dir.path();
        let log = std::fs::File::create(p.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args(["--bridge=none", "--iptables=false", "--ip-forward=false"])
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p.join("docker.sock").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("dockerd: {e}"))?;
        let dockerd = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dockerd
            .docker()
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dockerd.dir.path().join("dockerd.log"));
                return Err(format!(
                    "dockerd did not come up: {}",
                    log.unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd.load_busybox();
        Ok(dockerd)
    }

    /// Debian's `docker` client on this daemon, BuildKit on.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        )
        .env("DOCKER_BUILDKIT", "1")
        .env("DOCKER_CONFIG", self.dir.path().join("client"));
        c
    }

    fn load_busybox(&self) {
        let p = self.dir.path();
        let ctx = p.join("base-ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM busybox\n").unwrap();
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_rbuild"))
                .args(["build", "-q", "--root"])
                .arg(p.join("base-root"))
                .arg("-o")
                .arg(format!("type=docker,dest={}", p.join("base.tar").display()))
                .args(["-t", "busybox:latest"])
                .arg(&ctx),
        );
        run_ok(
            self.docker()
                .args(["load", "-q", "-i"])
                .arg(p.join("base.tar")),
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount its layers; SIGKILL after 20 s.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd leaves its default network namespace bound under its
        // exec root (an nsfs mount, even after a clean exit): it would
        // outlive the test and keep the temp dir from going.
        unmount_below(self.dir.path());
    }
}

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Ok(path) = std::ffi::CString::new(point.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; MNT_DETACH only unlinks the
            // mount from the tree.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The Debian app of issue 16: a user made with useradd, `COPY --chown`,
/// `chown -R`, a step as that user writing `/dev/null` and `$HOME`, a
/// background process left behind. Built from the minbase that
/// [`push_debian_minbase`] pushes, with `--build-arg REGISTRY=…` and a
/// context holding `greeting.txt`.
pub const DEBIAN_APP: &str = r#"ARG REGISTRY
FROM ${REGISTRY}/library/debian:bookworm-minbase
RUN useradd -m -u 1000 -s /bin/sh app
COPY --chown=app:app greeting.txt /home/app/greeting.txt
RUN mkdir -p /srv/data && touch /srv/data/a /srv/data/b && chown -R app:app /srv/data
RUN sleep 100 & echo started > /srv/started
USER app
RUN echo ok > /dev/null && echo "home $HOME" > "$HOME/where" && cat /home/app/greeting.txt
"#;

/// The layer digests of `reference`'s manifest, read by skopeo.
pub fn layer_digests(reference: &str) -> Vec<String> {
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{reference}"),
    ]));
    manifest_layers(&serde_json::from_str(&raw).unwrap())
}

/// The manifest of the one image in the OCI layout `oci`.
pub fn oci_manifest(oci: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(
        &std::fs::read(oci.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap()
}

/// The layer digests a manifest lists, in order.
pub fn manifest_layers(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// What [`DEBIAN_APP`]'s image must hold, as umoci unpacked it at
/// `rootfs`: the owners its steps set and the home its user wrote.
pub fn assert_debian_app_owners(rootfs: &Path, what: &str) {
    use std::os::unix::fs::MetadataExt;
    for (path, uid) in [
        ("home/app/greeting.txt", 1000),
        ("srv/data/b", 1000),
        ("srv/started", 0),
    ] {
        let meta = std::fs::metadata(rootfs.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, uid), "{what}: {path}");
    }
    assert_eq!(
        std::fs::read_to_string(rootfs.join("home/app/where")).unwrap(),
        "home /home/app\n",
        "{what}"
    );
}

/// The sandbox's layers Dockerfile (every kind of change a RUN makes)
/// with owners beyond root that survive to the image: /app/b/f is
/// 1000:1000 and /home/only 65534:65534. Needs every id from 0 to 65534.
pub fn layers_dockerfile_with_owners() -> String {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");
    std::fs::read_to_string(Path::new(data).join("layers/Dockerfile"))
        .unwrap()
        .replace(
            "RUN true\n",
            "RUN chown 1000:1000 /app/b/f && chown 65534:65534 /home/only\nRUN true\n",
        )
}

/// The owner (`uid:gid`) of `path` (`./app/b/f`) in a list-tree.sh listing.
pub fn listed_owner(listing: &[String], path: &str) -> Option<String> {
    let line = listing
        .iter()
        .find(|l| l.starts_with(&format!("{path}|")))?;
    Some(
        line.split('|')
            .skip(3)
            .take(2)
            .collect::<Vec<_>>()
            .join(":"),
    )
}
