//! A RUN's own network (`--network=default`, [`Network::Private`]): a
//! network namespace with `lo` and a `tap0` link out through Debian's
//! slirp4netns, the user-mode stack rootless Podman and BuildKit use.
//!
//! slirp4netns must open its outbound sockets in the host's namespaces, so
//! the helper forks a keeper before it enters any namespace; after the
//! helper's `unshare(CLONE_NEWNET)` the keeper execs slirp4netns on the
//! helper's namespace and says when `tap0` is configured (`--ready-fd`). It
//! exits with the helper (`--exit-fd`, and the parent-death signal).
//! `--disable-host-loopback` keeps the step off the host's 127.0.0.1; the
//! step's init then adds unreachable routes to the host's own addresses
//! and to 169.254.0.0/16 (cloud metadata) before it drops its
//! capabilities, so the step, without CAP_NET_ADMIN, cannot remove them.
//!
//! [`Network::Private`]: super::Network::Private

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::sys::{check, cstr, pipe, SetupError};

/// The DNS server slirp4netns answers on (it forwards to the host's).
pub const STACK_DNS: &str = "10.0.2.3";

/// A destination the step must not reach: an address and prefix length.
pub type Prefix = (Ipv4Addr, u8);

/// Where the helper, whose environment is empty, finds slirp4netns:
/// execvp's default search path.
const STACK_PATHS: [&str; 2] = ["/bin/slirp4netns", "/usr/bin/slirp4netns"];

/// Why the default network's stack cannot run for a step of this tier
/// (`in_userns`: the step's namespaces belong to a user namespace of its
/// own), if it cannot: slirp4netns is not where the helper looks,
/// `/dev/net/tun` (where it makes `tap0`) cannot be opened, or host root
/// lacks CAP_NET_ADMIN (to configure `tap0` and the blocking routes).
pub fn stack_problem(in_userns: bool) -> Option<&'static str> {
    if !STACK_PATHS.iter().any(|p| Path::new(p).is_file()) {
        return Some("slirp4netns is not installed (apt-get install slirp4netns)");
    }
    if super::netns::root_without_net_admin(in_userns) {
        return Some(
            "this tier runs steps as host root, which here lacks CAP_NET_ADMIN \
             (a container without it: add it, or let rbuild remap step ids)",
        );
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun");
    tun.is_err().then_some(
        "/dev/net/tun cannot be opened (a pod needs the device; rootless, the device open to it)",
    )
}

/// The forked keeper, waiting to exec slirp4netns.
pub(super) struct Keeper {
    go: OwnedFd,
    ready: OwnedFd,
    exit: OwnedFd,
    /// The host's addresses and the link-local range, read before unshare.
    blocked: Vec<Prefix>,
}

impl Keeper {
    /// Forks the keeper while the helper is still in the host's namespaces.
    pub fn fork(in_userns: bool, resolv: Option<&Path>) -> Result<Keeper, SetupError> {
        let resolv = resolv.map(|p| cstr(&p.to_string_lossy()));
        let blocked = host_prefixes()?;
        let (go_r, go_w) = pipe()?;
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        // SAFETY: getpid has no preconditions.
        let helper = unsafe { libc::getpid() };
        // SAFETY: fork in the single-threaded helper.
        match unsafe { libc::fork() } {
            -1 => Err(SetupError::sys(
                "fork the network keeper",
                std::io::Error::last_os_error(),
            )),
            0 => {
                drop((go_w, ready_r, exit_w));
                keeper(helper, in_userns, resolv, go_r, ready_w, exit_r)
            }
            _ => Ok(Keeper {
                go: go_w,
                ready: ready_r,
                exit: exit_w,
                blocked,
            }),
        }
    }

    /// After the helper's `unshare(CLONE_NEWNET)`: starts slirp4netns on
    /// the new namespace and waits until `tap0` is up. The exit pipe is
    /// kept open (close-on-exec) for the helper's lifetime.
    pub fn start(self) -> Result<Vec<Prefix>, SetupError> {
        let Keeper {
            go,
            ready,
            exit,
            blocked,
        } = self;
        // slirp4netns opens /proc/<helper>/ns/*, which a non-dumpable
        // process keeps from its own uid without CAP_SYS_PTRACE (rootless,
        // containers). No step runs yet: dumpable only until it is ready.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        // SAFETY: one byte from a buffer we own on a pipe we own.
        let sent = unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(go);
        let mut byte = [0u8; 1];
        // SAFETY: one byte into a buffer we own.
        let got = unsafe { libc::read(ready.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        crate::executor::confine::protect_self();
        check("start slirp4netns", sent as i32)?;
        if got != 1 {
            return Err(SetupError::Refused(
                "slirp4netns did not start the step's network (install Debian's slirp4netns, \
                 or build with --network=none, or --allow network.host --network=host)"
                    .into(),
            ));
        }
        // The helper's exit closes it; slirp4netns then exits.
        std::mem::forget(exit);
        Ok(blocked)
    }
}

/// The keeper: waits for the helper's word, then becomes slirp4netns.
fn keeper(
    helper: i32,
    in_userns: bool,
    resolv: Option<CString>,
    go: OwnedFd,
    ready: OwnedFd,
    exit: OwnedFd,
) -> ! {
    // SAFETY: prctl/getppid/read/fcntl/execvp/_exit on values we own, in
    // the forked child of a single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != helper {
            libc::_exit(1);
        }
        let mut byte = [0u8; 1];
        if libc::read(go.as_raw_fd(), byte.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(0);
        }
        // slirp4netns talks on stdout and stderr: not into the step's log.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        // libslirp reads its upstream DNS from /etc/resolv.conf: another
        // file is bound over it in a mount namespace of the keeper's own.
        if let Some(resolv) = &resolv {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    resolv.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                libc::_exit(126);
            }
        }
        for fd in [ready.as_raw_fd(), exit.as_raw_fd()] {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        let mut args = vec![
            "slirp4netns".to_string(),
            "--configure".into(),
            "--mtu=65520".into(),
            "--disable-host-loopback".into(),
            format!("--ready-fd={}", ready.as_raw_fd()),
            format!("--exit-fd={}", exit.as_raw_fd()),
        ];
        if in_userns {
            args.push(format!("--userns-path=/proc/{helper}/ns/user"));
        }
        args.extend([helper.to_string(), "tap0".into()]);
        let owned: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a).expect("no NUL"))
            .collect();
        let mut argv: Vec<*const libc::c_char> = owned.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        libc::execvp(argv[0], argv.as_ptr());
        libc::_exit(127)
    }
}

/// The host's own IPv4 addresses (but loopback, which the namespace has
/// its own of) and the link-local range.
fn host_prefixes() -> Result<Vec<Prefix>, SetupError> {
    let mut out = vec![(Ipv4Addr::new(169, 254, 0, 0), 16)];
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    check("getifaddrs", unsafe { libc::getifaddrs(&mut list) })?;
    let mut at = list;
    while !at.is_null() {
        // SAFETY: a node of the list getifaddrs made.
        let entry = unsafe { &*at };
        if !entry.ifa_addr.is_null()
            // SAFETY: ifa_addr is a valid sockaddr.
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !addr.is_loopback() && !out.contains(&(addr, 32)) {
                out.push((addr, 32));
            }
        }
        at = entry.ifa_next;
    }
    // SAFETY: the list from getifaddrs above.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

/// Adds an unreachable route to each prefix in the current network
/// namespace (rtnetlink RTM_NEWROUTE, as `ip route add unreachable`).
pub(super) fn block(prefixes: &[Prefix]) -> Result<(), SetupError> {
    if prefixes.is_empty() {
        return Ok(());
    }
    // SAFETY: a socket we own, closed by OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    check("netlink socket", fd)?;
    // SAFETY: fd was just returned by socket.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for (seq, (addr, len)) in prefixes.iter().enumerate() {
        let message = route_message(seq as u32 + 1, *addr, *len);
        // SAFETY: sending a buffer we own.
        let sent =
            unsafe { libc::send(sock.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
        check("send RTM_NEWROUTE", sent as i32)?;
        acknowledged(&sock, &format!("unreachable route to {addr}/{len}"))?;
    }
    Ok(())
}

/// An RTM_NEWROUTE request: header, rtmsg, RTA_DST.
fn route_message(seq: u32, addr: Ipv4Addr, len: u8) -> Vec<u8> {
    const HEADER: usize = 16;
    const RTMSG: usize = 12;
    const ATTR: usize = 8;
    let total = HEADER + RTMSG + ATTR;
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    m.extend_from_slice(&(flags as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    m.extend_from_slice(&[
        libc::AF_INET as u8,
        len,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNREACHABLE,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&(ATTR as u16).to_ne_bytes());
    m.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
    m.extend_from_slice(&addr.octets());
    m
}

/// Reads the kernel's acknowledgement: an NLMSG_ERROR whose error is 0.
fn acknowledged(sock: &OwnedFd, what: &str) -> Result<(), SetupError> {
    let mut buf = [0u8; 1024];
    // SAFETY: receiving into a buffer we own.
    let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    check("recv netlink", got as i32)?;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    let error = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if got < 20 || i32::from(kind) != libc::NLMSG_ERROR || error > 0 {
        return Err(SetupError::Refused(format!("{what}: no acknowledgement")));
    }
    match -error {
        0 => Ok(()),
        errno => Err(SetupError::sys(
            what,
            std::io::Error::from_raw_os_error(errno),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_request_is_laid_out_as_rtnetlink_reads_it() {
        let m = route_message(7, Ipv4Addr::new(169, 254, 0, 0), 16);
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 24); // RTM_NEWROUTE
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..24], &[2, 16, 0, 0, 254, 4, 0, 7]);
        assert_eq!(u16::from_ne_bytes(m[30..32].try_into().unwrap()), 1); // RTA_DST
        assert_eq!(&m[32..36], &[169, 254, 0, 0]);
    }

    #[test]
    fn the_host_prefixes_hold_the_link_local_range_and_no_loopback() {
        let prefixes = host_prefixes().unwrap();
        assert_eq!(prefixes[0], (Ipv4Addr::new(169, 254, 0, 0), 16));
        assert!(prefixes.iter().all(|(a, _)| !a.is_loopback()));
    }
}
