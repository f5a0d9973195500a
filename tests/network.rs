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
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
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
        // One network per test: the tests of this binary run side by side.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() % 1_000) * 10 + n;
        let subnet = 100 + ((std::process::id() * 3 + n) % 150) as u8;
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

    /// Runs `serve` on a thread that joined the outside's namespace
    /// (network namespaces are per thread), once `bind` has bound there.
    fn in_outside<S: Send + 'static>(
        &self,
        bind: impl FnOnce(Ipv4Addr) -> S + Send + 'static,
        serve: impl FnOnce(S) + Send + 'static,
    ) {
        let path = format!("/run/netns/{}", self.name);
        let addr = self.outside;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the test netns");
            // SAFETY: setns on this thread only, with an fd we own.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let bound = bind(addr);
            ready_tx.send(()).unwrap();
            serve(bound);
        });
        ready_rx.recv().unwrap();
    }

    /// Serves `body` on `port` of the outside's address.
    fn serve_outside(&self, port: u16, body: &'static str) {
        self.in_outside(
            move |addr| TcpListener::bind((addr, port)).expect("bind the outside server"),
            move |listener| answer(listener, body),
        );
    }

    /// Answers DNS queries on the outside's port 53: `name` is the
    /// outside's address, every other name does not exist.
    fn serve_dns(&self, name: &'static str) {
        let addr = self.outside;
        self.in_outside(
            |addr| UdpSocket::bind((addr, 53)).expect("bind the outside DNS"),
            move |socket| {
                let mut query = [0u8; 512];
                while let Ok((n, from)) = socket.recv_from(&mut query) {
                    let _ = socket.send_to(&dns_answer(&query[..n], name, addr), from);
                }
            },
        );
    }
}

/// The reply to one DNS query: an A record for `name`, NXDOMAIN for
/// anything else (RFC 1035 4.1; one question, name compressed to it).
fn dns_answer(query: &[u8], name: &str, addr: Ipv4Addr) -> Vec<u8> {
    let mut at = 12;
    let mut labels = Vec::new();
    while at < query.len() && query[at] != 0 {
        let len = query[at] as usize;
        labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).to_lowercase());
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
    let found = labels.join(".") == name;
    let mut reply = query[..question_end].to_vec();
    reply[2] = 0x84 | (query[2] & 0x01); // response, authoritative, RD copied
    reply[3] = if found { 0x00 } else { 0x03 };
    reply[6..12].copy_from_slice(&[0, u8::from(found && qtype == 1), 0, 0, 0, 0]);
    if found && qtype == 1 {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&addr.octets());
    }
    reply
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
         done; echo resolv: $(cat /etc/resolv.conf); echo hosts: $(hostname) $(cat /etc/hosts)\n",
    );
    run
}

fn build(dir: &Path, dockerfile: &str, flags: &[&str]) -> Output {
    build_as(&[], dir, dockerfile, flags)
}

/// setpriv's arguments for running as nobody.
const AS_NOBODY: [&str; 6] = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

/// As [`build`], run through `launcher` (empty: directly).
fn build_as(launcher: &[&str], dir: &Path, dockerfile: &str, flags: &[&str]) -> Output {
    let file = write_dockerfile(dir, dockerfile);
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(RBUILD);
            cmd
        }
        None => Command::new(RBUILD),
    };
    cmd.args(["build", "--no-cache", "--progress=plain", "--root"])
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
    // The step's own links in /sys (every tier, remapped too), and no
    // packet socket, whose frames would bypass the blocking routes.
    let dockerfile = format!(
        "{dockerfile}RUN echo links: $(ls /sys/class/net); \
         arping -c 1 -w 1 -I tap0 10.0.2.2 >/dev/null 2>&1 && echo frames-sent || echo no-frames; \
         echo metadata: $(ip route get 169.254.169.254 2>&1); echo elsewhere: $(ip route get 192.0.2.77)\n"
    );

    // Every network names the step's host name in the same /etc/hosts.
    let same_hosts = |log: &str| {
        assert!(
            log.contains(
                "hosts: rbuild 127.0.0.1 localhost rbuild ::1 localhost ip6-localhost \
                 ip6-loopback rbuild\n"
            ),
            "{log}"
        )
    };

    let out = build(dir.path(), &dockerfile, &[]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    same_hosts(&log);
    assert!(log.contains("from-the-outside"), "the outside: {log}");
    assert!(!log.contains("from-host-loopback"), "host loopback: {log}");
    assert!(
        !log.contains("from-a-host-address"),
        "a host address: {log}"
    );
    assert!(log.contains("resolv: nameserver 10.0.2.3"), "{log}");
    assert!(!log.contains("slirp"), "the stack's own chatter: {log}");
    assert!(log.contains("links: lo tap0\n"), "{log}");
    let said: Vec<&str> = log.lines().filter_map(common::output_text).collect();
    assert!(said.contains(&"no-frames"), "a packet socket: {log}");
    // Cloud metadata: refused by the step's own routing table (nothing
    // answers 169.254.169.254 here, so a connection attempt would prove
    // nothing), while other addresses go out through tap0.
    assert!(
        said.contains(&"metadata: ip: RTNETLINK answers: No route to host"),
        "169.254.169.254: {log}"
    );
    assert!(
        said.iter()
            .any(|l| l.starts_with("elsewhere: 192.0.2.77 via 10.0.2.2 dev tap0")),
        "{log}"
    );
    assert!(!said.contains(&"frames-sent"), "a packet socket: {log}");

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
    same_hosts(&log);
    // The host's network, the host's resolver.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let words: Vec<&str> = host_resolv.split_whitespace().collect();
    assert!(
        log.contains(&format!("resolv: {}\n", words.join(" "))),
        "{log}"
    );

    let out = build(dir.path(), &dockerfile, &["--network", "none"]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("from-"), "--network=none: {log}");
    same_hosts(&log);
}

#[test]
fn the_default_network_resolves_names_through_the_stacks_dns() {
    let Some(net) = TestNet::new() else { return };
    let web = port(3);
    net.serve_outside(web, "found-by-name");
    net.serve_dns("outside.rbuild.test");
    let dir = tempfile::tempdir().unwrap();
    // The stack's upstream: the outside's DNS, not this machine's.
    let resolv = dir.path().join("upstream-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\n", net.outside)).unwrap();
    let dockerfile = format!(
        "FROM busybox\nRUN grep nameserver /etc/resolv.conf && \
         ip=$(nslookup outside.rbuild.test | awk '/^Address/ {{a=$NF}} END {{print a}}') && \
         echo resolved: $ip && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | \
         timeout 5 nc $ip {web} | tail -n 1\n"
    );
    let out = build(
        dir.path(),
        &dockerfile,
        &["--network-resolv-conf", resolv.to_str().unwrap()],
    );
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("nameserver 10.0.2.3"), "{log}");
    assert!(log.contains(&format!("resolved: {}", net.outside)), "{log}");
    assert!(log.contains("found-by-name"), "{log}");
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

#[test]
fn without_a_usable_stack_a_step_gets_lo_never_the_hosts_network() {
    let Some(net) = TestNet::new() else { return };
    if Command::new("setpriv").arg("--help").output().is_err() {
        skip("network: setpriv is not installed");
        return;
    }
    let web = port(4);
    net.serve_outside(web, "from-the-outside");
    serve_host(Ipv4Addr::LOCALHOST, port(5), "from-host-loopback");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let dockerfile = fetch_all(&[(net.outside, web), (Ipv4Addr::LOCALHOST, port(5))]);
    // As nobody: whether /dev/net/tun opens for it decides the stack.
    let tun_opens = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args(["sh", "-c", "exec 3<>/dev/net/tun"])
        .status()
        .unwrap()
        .success();
    let out = build_as(&AS_NOBODY, dir.path(), &dockerfile, &[]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("from-host-loopback"), "{log}");
    if tun_opens {
        assert!(log.contains("from-the-outside"), "{log}");
    } else {
        assert!(log.contains("RUN steps get only lo"), "{log}");
        assert!(!log.contains("from-the-outside"), "{log}");
    }
}
