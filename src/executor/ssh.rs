//! `--ssh` and `RUN --mount=type=ssh`: SSH agents forwarded into a step,
//! never stored.
//!
//! `--ssh default` forwards `$SSH_AUTH_SOCK`; `--ssh ID=PATH[,PATH…]`
//! forwards an agent socket, or, for key files, a private `ssh-agent`
//! (Debian's openssh-client) holding those keys for the build. A step
//! never sees the agent's own socket: it gets a new socket, owned and
//! moded as the mount says (default root, 0600), in a private directory
//! bind-mounted at the target, and a proxy thread carries each connection
//! to the agent. When the step ends the proxy and its socket go, and the
//! target's stub is not part of the layer, as with secrets.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The agents of one build, by id; private agents stop on drop.
#[derive(Debug, Default)]
pub struct Forwards {
    sockets: HashMap<String, PathBuf>,
    agents: Vec<(Child, tempfile::TempDir)>,
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for (child, _) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `--ssh` flag: its id and paths (none: `$SSH_AUTH_SOCK`).
pub fn parse_flag(spec: &str) -> Result<(String, Vec<PathBuf>), String> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (id, paths.split(',').map(PathBuf::from).collect()),
        None => (spec, Vec::new()),
    };
    if id.is_empty() || id.contains(',') {
        return Err(format!(
            "invalid --ssh {spec:?}: expected default, ID or ID=SOCKET|KEY[,KEY]"
        ));
    }
    Ok((id.to_string(), paths))
}

impl Forwards {
    /// Starts forwarding for each `(id, paths)`; key files get a private
    /// agent under `tmp`.
    pub fn start(flags: &[(String, Vec<PathBuf>)], tmp: &Path) -> Result<Forwards, String> {
        let mut out = Forwards::default();
        for (id, paths) in flags {
            let socket = match paths.as_slice() {
                [] => std::env::var_os("SSH_AUTH_SOCK")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        format!("--ssh {id}: SSH_AUTH_SOCK is not set (start an agent or give --ssh {id}=PATH)")
                    })?,
                [one] if is_socket(one) => one.clone(),
                keys => out.private_agent(id, keys, tmp)?,
            };
            out.sockets.insert(id.clone(), socket);
        }
        Ok(out)
    }

    /// The agent socket forwarded as `id`.
    pub fn socket(&self, id: &str) -> Option<&Path> {
        self.sockets.get(id).map(PathBuf::as_path)
    }

    fn private_agent(&mut self, id: &str, keys: &[PathBuf], tmp: &Path) -> Result<PathBuf, String> {
        for key in keys {
            if is_socket(key) {
                return Err(format!(
                    "--ssh {id}: {} is a socket; give one socket or only key files",
                    key.display()
                ));
            }
            std::fs::metadata(key).map_err(|e| format!("--ssh {id}: {}: {e}", key.display()))?;
        }
        std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("ssh-agent-")
            .tempdir_in(tmp)
            .map_err(|e| format!("--ssh {id}: {e}"))?;
        let socket = dir.path().join("agent.sock");
        let missing = |e: std::io::Error| {
            format!("--ssh {id}: key files need ssh-agent and ssh-add (apt-get install openssh-client): {e}")
        };
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(missing)?;
        self.agents.push((child, dir));
        for _ in 0..200 {
            if is_socket(&socket) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .map_err(missing)?;
        if !out.status.success() {
            return Err(format!(
                "--ssh {id}: ssh-add could not load the key (a passphrase-protected key needs an agent: --ssh {id}=$SSH_AUTH_SOCK): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(socket)
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// A listening socket whose connections are carried to an agent; stops
/// (and joins its thread) on drop.
#[derive(Debug)]
pub struct Proxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens at `path` (which must not exist) and forwards to `agent`.
    pub fn start(path: &Path, agent: &Path) -> std::io::Result<Proxy> {
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let agent = agent.to_path_buf();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else {
                    // The agent went away: the client sees a closed socket.
                    continue;
                };
                std::thread::spawn(move || splice(client, upstream));
            }
        });
        Ok(Proxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies both ways until either side closes.
fn splice(client: UnixStream, upstream: UnixStream) {
    let (Ok(client_read), Ok(upstream_read)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(client_read, upstream));
    pump(upstream_read, client);
    let _ = up.join();
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_an_id_and_paths() {
        assert_eq!(
            parse_flag("default").unwrap(),
            ("default".to_string(), vec![])
        );
        assert_eq!(
            parse_flag("deploy=/k1,/k2").unwrap(),
            (
                "deploy".to_string(),
                vec![PathBuf::from("/k1"), PathBuf::from("/k2")]
            )
        );
        assert!(parse_flag("=x").is_err());
    }

    #[test]
    fn the_proxy_carries_bytes_both_ways_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        let proxy_path = dir.path().join("proxy");
        let proxy = Proxy::start(&proxy_path, &agent_path).unwrap();
        let mut c = UnixStream::connect(&proxy_path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "HELLO");
        echo.join().unwrap();
        drop(proxy);
        assert!(!proxy_path.exists(), "the socket goes with the proxy");
    }
}
