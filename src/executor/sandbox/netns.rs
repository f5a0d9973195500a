//! A network namespace for a step run as host root without CAP_NET_ADMIN
//! (a root container given CAP_SYS_ADMIN but not CAP_NET_ADMIN, as docker
//! and Kubernetes give by default): `unshare(CLONE_NEWNET)` succeeds
//! there, but `lo` cannot be brought up, since that needs CAP_NET_ADMIN
//! over the namespace's owning user namespace, the container's.
//!
//! So the namespace is made by a short-lived child inside a user namespace
//! of its own, which owns the network namespace and holds every capability
//! in it: the child brings `lo` up and hands the namespace back over a
//! socket (SCM_RIGHTS), and the helper joins it (CAP_SYS_ADMIN in the
//! container reaches child user namespaces). The child creates its user
//! namespace with an effective uid no build process has ([`OWNERS`]):
//! a process whose euid owns a user namespace holds every capability in
//! it, and a root step (euid 0) must not get CAP_NET_ADMIN over its own
//! network that way. Only `--network=none` takes this path: the namespace
//! holds `lo` and nothing else.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::sys::{check, SetupError};

/// Effective uids the child may own the user namespace as, tried in
/// order: one no passwd file holds, then one inside the 65536 ids a user
/// namespaced pod maps.
const OWNERS: [libc::uid_t; 2] = [u32::MAX - 1, 65533];

/// Whether steps run as host root (no user namespace of their own) that
/// lacks CAP_NET_ADMIN: then a step's own network namespace has to come
/// from [`enter`], and the default network's stack cannot be configured.
pub(super) fn root_without_net_admin(in_userns: bool) -> bool {
    use crate::executor::confine::caps;
    !in_userns && !caps::bit_of("CAP_NET_ADMIN").is_some_and(caps::holds)
}

/// Moves the calling helper into a new network namespace whose `lo` is up.
pub(super) fn enter() -> Result<(), SetupError> {
    let mut pair = [0; 2];
    // SAFETY: socketpair with a valid two-int array.
    check("socketpair", unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds were just returned to us.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // SAFETY: fork in the single-threaded helper.
    let child = unsafe { libc::fork() };
    match child {
        -1 => return Err(SetupError::sys("fork", std::io::Error::last_os_error())),
        0 => {
            drop(ours);
            let code = match lend(&theirs) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("rbuild sandbox: {e}");
                    1
                }
            };
            // SAFETY: leave without the helper's destructors.
            unsafe { libc::_exit(code) }
        }
        _ => {}
    }
    drop(theirs);
    let received = receive_fd(&ours);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let netns = received?;
    // SAFETY: setns on a namespace fd we own.
    check("join the step's network namespace", unsafe {
        libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET)
    })
}

/// The child: a user namespace owned by an unused uid, a network namespace
/// in it with `lo` up, and that namespace sent back.
fn lend(socket: &OwnedFd) -> Result<(), SetupError> {
    // Keep the capabilities across the euid change (needs CAP_SETPCAP,
    // which docker's default set has; without it the unshare below is an
    // unprivileged one, which most kernels allow too).
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            libc::SECBIT_NO_SETUID_FIXUP,
            0,
            0,
            0,
        )
    };
    let owned = OWNERS.iter().any(|uid| {
        // SAFETY: setresuid with plain integers; -1 leaves an id as it is.
        unsafe { libc::setresuid(u32::MAX, *uid, u32::MAX) == 0 }
    });
    if !owned {
        return Err(SetupError::sys(
            "take an unused uid to own the network's user namespace",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: unshare in the single-threaded child.
    check("unshare(CLONE_NEWUSER | CLONE_NEWNET)", unsafe {
        libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)
    })?;
    loopback_up()?;
    let netns = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| SetupError::sys("open the new network namespace", e))?;
    send_fd(socket, netns.as_raw_fd())
}

/// Brings `lo` up in the current network namespace.
pub(super) fn loopback_up() -> Result<(), SetupError> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check("socket", fd)?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            libc::close(fd);
            return check("bring lo up", rc);
        }
        libc::close(fd);
        check("read lo flags", rc)
    }
}

/// The buffers of a one-byte packet with room for one fd's control
/// message, kept together so that a msghdr can point into them.
struct Packet {
    byte: [u8; 1],
    iov: libc::iovec,
    control: [u64; 4],
}

impl Packet {
    fn new() -> Box<Packet> {
        let mut packet = Box::new(Packet {
            byte: [0],
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 1,
            },
            control: [0; 4],
        });
        packet.iov.iov_base = packet.byte.as_mut_ptr().cast();
        packet
    }

    /// A msghdr over the packet's buffers, `controllen` bytes of control.
    fn header(&mut self, controllen: usize) -> libc::msghdr {
        // SAFETY: msghdr is plain data; every pointer set below points
        // into this boxed packet, which outlives the send or receive.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut self.iov;
        message.msg_iovlen = 1;
        message.msg_control = self.control.as_mut_ptr().cast();
        message.msg_controllen = controllen as _;
        message
    }
}

/// Sends `fd` as the one SCM_RIGHTS control message of a one-byte packet.
fn send_fd(socket: &OwnedFd, fd: libc::c_int) -> Result<(), SetupError> {
    let mut packet = Packet::new();
    let int = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: CMSG_SPACE of one int fits `control`; CMSG_* stay in it.
    let rc = unsafe {
        let message = packet.header(libc::CMSG_SPACE(int) as usize);
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(int) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>(), fd);
        libc::sendmsg(socket.as_raw_fd(), &message, 0)
    };
    check("send the network namespace", rc as i32)
}

/// Receives the fd [`send_fd`] sent; the child's own error if it sent none.
fn receive_fd(socket: &OwnedFd) -> Result<OwnedFd, SetupError> {
    let mut packet = Packet::new();
    let room = std::mem::size_of_val(&packet.control);
    // SAFETY: as in send_fd; the received fd is checked before use.
    let fd = unsafe {
        let mut message = packet.header(room);
        let got = libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
        let header = libc::CMSG_FIRSTHDR(&message);
        if got != 1 || header.is_null() || (*header).cmsg_type != libc::SCM_RIGHTS {
            -1
        } else {
            std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>())
        }
    };
    if fd < 0 {
        return Err(SetupError::refused(
            "no network namespace with lo up could be made for the step (the error above says why)",
        ));
    }
    // SAFETY: an fd the kernel just installed for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fd_crosses_the_socket_as_a_new_fd_of_the_same_file() {
        let mut pair = [0; 2];
        // SAFETY: socketpair with a valid array.
        assert_eq!(0, unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, pair.as_mut_ptr())
        });
        // SAFETY: just returned.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        send_fd(&a, file.as_raw_fd()).unwrap();
        let got = receive_fd(&b).unwrap();
        assert_ne!(got.as_raw_fd(), file.as_raw_fd());
        let same = |fd: libc::c_int| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(same(got.as_raw_fd()), same(file.as_raw_fd()));
    }

    #[test]
    fn a_closed_socket_is_a_refusal_not_a_panic() {
        let mut pair = [0; 2];
        // SAFETY: socketpair with a valid array.
        assert_eq!(0, unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, pair.as_mut_ptr())
        });
        // SAFETY: just returned.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        drop(a);
        assert!(receive_fd(&b).is_err());
    }
}
