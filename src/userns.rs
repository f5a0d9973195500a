//! The user namespace rbuild itself runs in.
//!
//! Two things live here, below the executor and the snapshot store so that
//! both can ask: whether this process runs in a user namespace other than
//! the host's (then overlay needs `userxattr` and no device node can be
//! made), and how many ids from 0 that namespace maps.
//!
//! The third is [`enter_own`]: a user without privileges whom
//! `/etc/subuid` and `/etc/subgid` grant subordinate ids (the `uidmap`
//! package's newuidmap and newgidmap map them, as for rootless podman and
//! buildah) enters, at the start of `main`, a user namespace of its own in
//! which its uid is 0 and its subordinate ids are 1…N. Everything after
//! that (layers applied with their owners, RUN steps as any `USER`, the
//! differ, GC) runs in that namespace and sees the ids an image holds.
//! The whole process enters, not only each step, because the files a step
//! leaves belong to subordinate ids the user cannot read or delete from
//! outside.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// One line of a `uid_map`/`gid_map`, or a subordinate range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First id inside the namespace.
    pub inside: u32,
    /// The id it is outside.
    pub outside: u32,
    /// How many ids follow.
    pub count: u32,
}

/// The extents of a `/proc/<pid>/uid_map` or `gid_map` text.
pub fn parse_map(text: &str) -> Vec<Extent> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
            let (inside, outside, count) = (fields.next()??, fields.next()??, fields.next()??);
            Some(Extent {
                inside: u32::try_from(inside).ok()?,
                outside: u32::try_from(outside).ok()?,
                count: count.min(u64::from(u32::MAX)) as u32,
            })
        })
        .collect()
}

/// How many ids from 0 the extents map without a gap (a namespace mapping
/// `0 → uid` and `1… → subordinate ids` maps 1 + N).
pub fn contiguous_from_zero(extents: &[Extent]) -> u32 {
    let mut sorted = extents.to_vec();
    sorted.sort_by_key(|e| e.inside);
    let mut next: u64 = 0;
    for extent in sorted {
        if u64::from(extent.inside) != next {
            break;
        }
        next += u64::from(extent.count);
    }
    next.min(u64::from(u32::MAX)) as u32
}

/// Whether this process runs in a user namespace other than the host's
/// (a user-namespaced container, or the namespace [`enter_own`] made):
/// the initial namespace maps all 2³²−1 ids to themselves.
pub fn nested() -> bool {
    static NESTED: OnceLock<bool> = OnceLock::new();
    *NESTED.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(text) => {
            parse_map(&text)
                != [Extent {
                    inside: 0,
                    outside: 0,
                    count: u32::MAX,
                }]
        }
        Err(_) => false,
    })
}

/// The first range of `/etc/subuid` or `/etc/subgid` text (`owner:start:count`)
/// whose owner is `name` or the numeric `id`, as shadow's newuidmap reads it.
pub fn subordinate(text: &str, name: Option<&str>, id: u32) -> Option<Extent> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if owner != id && Some(owner) != name {
            return None;
        }
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (count > 0).then_some(Extent {
            inside: 1,
            outside: start,
            count,
        })
    })
}

/// The environment variable that turns [`enter_own`] off (`0`).
pub const SUBIDS_ENV: &str = "RBUILD_SUBIDS";

/// The variable [`enter_own`] leaves for `rbuild info`: the maps it wrote.
pub const ENTERED_ENV: &str = "RBUILD_OWN_USERNS";

/// The ids a user namespace of our own would map: the caller's own id to
/// 0, then its subordinate range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    uid: u32,
    gid: u32,
    subuid: Extent,
    subgid: Extent,
    newuidmap: std::path::PathBuf,
    newgidmap: std::path::PathBuf,
}

impl Plan {
    fn map_args(own: u32, sub: Extent) -> Vec<String> {
        [0, own, 1, sub.inside, sub.outside, sub.count]
            .iter()
            .map(u32::to_string)
            .collect()
    }

    /// Maps `pid`'s new user namespace with newuidmap and newgidmap.
    fn write_maps(&self, pid: libc::pid_t) -> Result<(), String> {
        for (tool, own, sub) in [
            (&self.newuidmap, self.uid, self.subuid),
            (&self.newgidmap, self.gid, self.subgid),
        ] {
            let out = std::process::Command::new(tool)
                .arg(pid.to_string())
                .args(Self::map_args(own, sub))
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", tool.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} {}: {}",
                    tool.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "uid 0 is {} and 1-{} are {}-{}; gid 0 is {} and 1-{} are {}-{}",
            self.uid,
            self.subuid.count,
            self.subuid.outside,
            u64::from(self.subuid.outside) + u64::from(self.subuid.count) - 1,
            self.gid,
            self.subgid.count,
            self.subgid.outside,
            u64::from(self.subgid.outside) + u64::from(self.subgid.count) - 1,
        )
    }
}

/// Why a user namespace of our own is not entered, or what it needs.
fn plan() -> Result<Plan, String> {
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if unsafe { libc::geteuid() } == 0 {
        return Err("root needs no subordinate ids".into());
    }
    if std::env::var(SUBIDS_ENV).is_ok_and(|v| v == "0") {
        return Err(format!("{SUBIDS_ENV}=0"));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status
        .lines()
        .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"]))
    {
        return Err("no_new_privs is set, so newuidmap cannot gain its privilege".into());
    }
    let tool = |name: &str| {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} is not installed (apt-get install uidmap)"))
    };
    let (newuidmap, newgidmap) = (tool("newuidmap")?, tool("newgidmap")?);
    let name = user_name(uid);
    let range = |file: &str, id: u32| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        subordinate(&text, name.as_deref(), id)
            .ok_or_else(|| format!("{file} grants uid {uid} no range"))
    };
    Ok(Plan {
        uid,
        gid,
        subuid: range("/etc/subuid", uid)?,
        subgid: range("/etc/subgid", uid)?,
        newuidmap,
        newgidmap,
    })
}

/// The login name of `uid`, as newuidmap looks it up.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into our buffers, sized as passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that enters a new user namespace and waits; the parent
/// maps it. Proves the maps can be written before this process commits
/// itself: a namespace entered but left unmapped cannot be left again.
fn try_on_child(plan: &Plan) -> Result<(), String> {
    let (ready, go) = (
        pipe().map_err(|e| e.to_string())?,
        pipe().map_err(|e| e.to_string())?,
    );
    // SAFETY: fork in the single-threaded start of main.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(ready.0);
            drop(go.1);
            // SAFETY: unshare in the single-threaded child.
            let byte: &[u8] = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                b"y"
            } else {
                b"n"
            };
            let mut ready = std::fs::File::from(ready.1);
            let _ = ready.write_all(byte);
            let mut wait = [0u8; 1];
            let _ = std::fs::File::from(go.0).read(&mut wait);
            // SAFETY: leave the child without the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        child => {
            drop(ready.1);
            drop(go.0);
            let mut byte = [0u8; 1];
            let got = std::fs::File::from(ready.0).read(&mut byte).unwrap_or(0);
            let result = match (got, byte[0]) {
                (1, b'y') => plan.write_maps(child),
                _ => Err(format!(
                    "unshare(CLONE_NEWUSER): not permitted here ({})",
                    std::io::Error::from_raw_os_error(libc::EPERM)
                )),
            };
            drop(go.1);
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            result
        }
    }
}

/// Enters this process into a user namespace of its own, mapped by a
/// forked child running newuidmap and newgidmap on it.
fn enter(plan: &Plan) -> Result<(), String> {
    let (go, done) = (
        pipe().map_err(|e| e.to_string())?,
        pipe().map_err(|e| e.to_string())?,
    );
    // SAFETY: plain getter.
    let me = unsafe { libc::getpid() };
    // SAFETY: fork in the single-threaded start of main.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(go.1);
            drop(done.0);
            let mut byte = [0u8; 1];
            let got = std::fs::File::from(go.0).read(&mut byte).unwrap_or(0);
            let message = match got {
                1 => plan.write_maps(me).err().unwrap_or_default(),
                _ => "rbuild gave up before the maps".to_string(),
            };
            let _ = std::fs::File::from(done.1).write_all(message.as_bytes());
            // SAFETY: leave the mapper without the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        mapper => {
            drop(go.0);
            drop(done.1);
            // SAFETY: unshare in the single-threaded start of main.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
            let error = std::io::Error::last_os_error();
            let mut go = std::fs::File::from(go.1);
            if unshared {
                let _ = go.write_all(b"g");
            }
            drop(go);
            let mut message = String::new();
            let _ = std::fs::File::from(done.0).read_to_string(&mut message);
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(mapper, std::ptr::null_mut(), 0) };
            match (unshared, message.is_empty()) {
                (false, _) => Err(format!("unshare(CLONE_NEWUSER): {error}")),
                (true, true) => Ok(()),
                (true, false) => Err(message),
            }
        }
    }
}

/// What [`enter_own`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Entered {
    /// The process now runs in its own user namespace, as its uid 0; the
    /// text says which ids map where.
    Yes(String),
    /// It stays where it was, for this reason.
    No(String),
}

/// For a user without privileges with subordinate ids: enters a user
/// namespace of its own (see the module docs). Call only from the start
/// of `main`, while the process has one thread. `storage_root` is the
/// default storage root as the caller is now; it is kept in `RBUILD_ROOT`
/// (unless that is set) because inside, the caller is uid 0.
///
/// An error means the namespace was entered but could not be mapped, and
/// the process cannot go on.
pub fn enter_own(storage_root: impl FnOnce() -> std::path::PathBuf) -> Result<(), String> {
    let entered = enter_if_granted(storage_root)?;
    let _ = OUTCOME.set(entered);
    Ok(())
}

static OUTCOME: OnceLock<Entered> = OnceLock::new();

/// What [`enter_own`] did in this process (None when it was not called:
/// a helper, or a library caller).
pub fn outcome() -> Option<&'static Entered> {
    OUTCOME.get()
}

fn enter_if_granted(storage_root: impl FnOnce() -> std::path::PathBuf) -> Result<Entered, String> {
    let plan = match plan() {
        Ok(plan) => plan,
        Err(why) => return Ok(Entered::No(why)),
    };
    if let Err(why) = try_on_child(&plan) {
        return Ok(Entered::No(why));
    }
    if std::env::var_os("RBUILD_ROOT").is_none() {
        // One thread so far: nothing reads the environment concurrently.
        std::env::set_var("RBUILD_ROOT", storage_root());
    }
    enter(&plan).map_err(|e| format!("entering a user namespace over subordinate ids: {e}"))?;
    // Uid and gid 0 of the new namespace (the caller's own ids outside).
    // SAFETY: identity syscalls with plain integers.
    let became = unsafe { libc::setresgid(0, 0, 0) == 0 && libc::setresuid(0, 0, 0) == 0 };
    if !became {
        return Err(format!(
            "becoming root of the new user namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    let described = plan.describe();
    // The helpers rbuild starts inherit the namespace and say so too.
    std::env::set_var(ENTERED_ENV, &described);
    Ok(Entered::Yes(described))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_counts_from_zero_across_its_lines_until_a_gap() {
        let map = parse_map("         0       1000          1\n         1     100000      65536\n");
        assert_eq!(map.len(), 2);
        assert_eq!(contiguous_from_zero(&map), 65537);
        assert_eq!(contiguous_from_zero(&parse_map("0 1000 1\n2 5 10\n")), 1);
        assert_eq!(contiguous_from_zero(&parse_map("1 5 10\n")), 0);
        assert_eq!(
            contiguous_from_zero(&parse_map("0 0 4294967295\n")),
            u32::MAX
        );
    }

    #[test]
    fn a_subordinate_range_is_found_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:165536:65536\nbob:231072:0\n";
        let by_name = subordinate(text, Some("alice"), 1000).unwrap();
        assert_eq!((by_name.outside, by_name.count), (100000, 65536));
        let by_uid = subordinate(text, Some("carol"), 1001).unwrap();
        assert_eq!(by_uid.outside, 165536);
        assert_eq!(subordinate(text, Some("bob"), 1002), None, "an empty range");
        assert_eq!(subordinate(text, None, 7), None);
        assert_eq!(subordinate("garbage\n", Some("x"), 1), None);
    }

    #[test]
    fn the_maps_name_the_callers_id_then_its_range() {
        let sub = Extent {
            inside: 1,
            outside: 100000,
            count: 65536,
        };
        assert_eq!(
            Plan::map_args(1000, sub),
            ["0", "1000", "1", "1", "100000", "65536"]
        );
    }
}
