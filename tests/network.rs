//! RUN's network (issue 20) against a network the test makes itself: a
//! network namespace standing for "the outside", joined to the host by a
//! veth pair, with an HTTP server on its address; and servers on the
//! host's 127.0.0.1 and on the host's end of the veth. With the default
//! network a step reaches the outside and neither host server; with
//! `--allow network.host --network=host` it reaches the host's; with
//! `--network=none` nothing. Each step prints what busybox `nc` read, so
//! an assertion on a server's reply fails whichever way the isolation
//! breaks.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{is_root, skip, stderr, write_dockerfile};

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// The test's network: the namespace, the veth pair, the addresses.
struct TestNet {
    name: String,
    /// The host's end (a host address the step must not reach).
    host: Ipv4Addr,
    /// The outside's end, where the outside server listens.
    outside: Ipv4Addr,
}

impl TestNet {
    /// Makes the namespace and the veth pair; None (after a loud skip)
    /// when this machine cannot.
    fn new() -> Option<TestNet> {
        if !is_root() {
            skip("network: needs root (network namespaces, veth)");
            return None;
        }
        for tool in ["ip", "slirp4netns"] {
            if Command::new(tool).arg("-h").output().is_err() {
                skip(&format!("network: {tool} is not installed"));
                return None;
            }
        }
        let id = std::process::id() % 10_000;
        let subnet = 100 + (std::process::id() % 150) as u8;
        let net = TestNet {
            name: format!("rbt{id}"),
            host: Ipv4Addr::new(10, 214, subnet, 1),
            outside: Ipv4Addr::new(10, 214, subnet, 2),
        };
        let (h, o) = (format!("rbt{id}h"), format!("rbt{id}o"));
        let ns = net.name.clone();
        for args in [
            vec!["netns", "add", &ns],
            vec!["link", "add", &h, "type", "veth", "peer", "name", &o],
            vec!["link", "set", &o, "netns", &ns],
        ] {
            ip(&args);
        }
        let (host, outside) = (format!("{}/24", net.host), format!("{}/24", net.outside));
        ip(&["addr", "add", &host, "dev", &h]);
        ip(&["link", "set", &h, "up"]);
        for args in [
            vec!["addr", "add", &outside, "dev", &o],
            vec!["link", "set", &o, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", &ns];
            all.extend(args);
            ip(&all);
        }
        Some(net)
    }

    /// Serves `body` on `port` of the outside's address, from inside the
    /// namespace (a thread that joined it: network namespaces are per
    /// thread).
    fn serve_outside(&self, port: u16, body: &'static str) {
        let path = format!("/run/netns/{}", self.name);
        let addr = self.outside;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the test netns");
            // SAFETY: setns on this thread only, with an fd we own.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = TcpListener::bind((addr, port)).expect("bind the outside server");
            ready_tx.send(()).unwrap();
            answer(listener, body);
        });
        ready_rx.recv().unwrap();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
}

/// Serves `body` on the host at `addr:port` from a thread.
fn serve_host(addr: Ipv4Addr, port: u16, body: &'static str) {
    let listener = TcpListener::bind((addr, port)).expect("bind a host server");
    std::thread::spawn(move || answer(listener, body));
}

/// Answers every connection with an HTTP/1.0 reply carrying `body`.
fn answer(listener: TcpListener, body: &'static str) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request);
        let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n{body}\n");
    }
}

/// A port no other test binary running beside this one takes.
fn port(n: u16) -> u16 {
    20_000 + (std::process::id() % 4_000) as u16 * 8 + n
}

/// A RUN that fetches from each `addr:port` with busybox nc (busybox
/// wget is a static glibc build that crashes on any fetch here).
fn fetch_all(targets: &[(Ipv4Addr, u16)]) -> String {
    let mut run = String::from("FROM busybox\nRUN for t in");
    for (addr, port) in targets {
        run.push_str(&format!(" {addr}:{port}"));
    }
    run.push_str(
        "; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc ${t%:*} ${t#*:} | tail -n 1; \
         done; echo resolv: $(cat /etc/resolv.conf)\n",
    );
    run
}

fn build(dir: &Path, dockerfile: &str, flags: &[&str]) -> Output {
    let file = write_dockerfile(dir, dockerfile);
    Command::new(RBUILD)
        .args(["build", "--no-cache", "--progress=plain", "--root"])
        .arg(dir.join("root"))
        .arg("-f")
        .arg(file)
        .args(flags)
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn the_default_network_reaches_the_outside_but_not_the_host() {
    let Some(net) = TestNet::new() else { return };
    let (outside, loopback, host) = (port(0), port(1), port(2));
    net.serve_outside(outside, "from-the-outside");
    serve_host(Ipv4Addr::LOCALHOST, loopback, "from-host-loopback");
    serve_host(net.host, host, "from-a-host-address");
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = fetch_all(&[
        (net.outside, outside),
        (Ipv4Addr::LOCALHOST, loopback),
        (net.host, host),
        (Ipv4Addr::new(10, 0, 2, 2), loopback),
    ]);

    let out = build(dir.path(), &dockerfile, &[]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("from-the-outside"), "the outside: {log}");
    assert!(!log.contains("from-host-loopback"), "host loopback: {log}");
    assert!(
        !log.contains("from-a-host-address"),
        "a host address: {log}"
    );
    assert!(log.contains("resolv: nameserver 10.0.2.3"), "{log}");
    assert!(!log.contains("slirp"), "the stack's own chatter: {log}");

    let out = build(
        dir.path(),
        &dockerfile,
        &["--allow", "network.host", "--network", "host"],
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    for body in [
        "from-the-outside",
        "from-host-loopback",
        "from-a-host-address",
    ] {
        assert!(log.contains(body), "--network=host: {body}: {log}");
    }

    let out = build(dir.path(), &dockerfile, &["--network", "none"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("from-"), "--network=none: {log}");
}

#[test]
fn the_host_network_needs_the_network_host_entitlement() {
    let dir = tempfile::tempdir().unwrap();
    let out = build(
        dir.path(),
        "FROM busybox\nRUN true\n",
        &["--network", "host"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow network.host"),
        "{}",
        stderr(&out)
    );
    let out = build(
        dir.path(),
        "FROM busybox\nRUN true\nRUN --network=host true\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(":3:1: ") && stderr(&out).contains("--allow network.host"),
        "{}",
        stderr(&out)
    );
}
