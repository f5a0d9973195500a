//! Running RUN steps in sandboxes and turning what they changed into layers.
//!
//! Owns syscalls, processes and per-step resources, not Dockerfiles: the
//! caller describes a [`Step`] (parent layers, argv, env, cwd, user,
//! network mode, mounts) and gets a [`StepOutcome`] (exit code, output,
//! the new layer, why it failed). The sandbox itself runs in a re-executed,
//! single-threaded copy of the `rbuild` binary ([`sandbox::helper_main`]
//! behind a hidden subcommand), never in the multithreaded caller; the
//! environment is probed the same way ([`probe`]) to choose the tier.

pub mod cgroup;
pub mod chmod;
pub mod confine;
pub mod copy;
pub mod mounts;
pub mod probe;
pub mod sandbox;
pub mod ssh;
pub mod user;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

pub use cgroup::{CgroupEvents, CgroupSupport, Limits};
pub use copy::CopySpec;
pub use probe::{choose, IsolationRequest, Plan, Probes, SnapshotMode};
pub use sandbox::{
    IdRange, MountKind, MountSpec, Namespaces, Remap, RootFs, SandboxSpec, Stub, SETUP_FAILED,
};

use crate::blob::LayerBlob;
use crate::cache::ContentStore;
use crate::cache::LayerError;
use crate::snapshot::backend::{CommitError, LayerWrite, StepSnapshots};
use crate::snapshot::diff::{self, IdMap, LayerOptions};
use crate::snapshot::{Layer, SnapshotError, SnapshotStore, Workspace};

/// The hidden subcommand the sandbox helper runs under.
pub const HELPER_SUBCOMMAND: &str = "__sandbox";
/// The hidden subcommand the probe helper runs under.
pub const PROBE_SUBCOMMAND: &str = "__probe";

/// What a sandboxed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code (128 + signal when killed; 125 when the sandbox could not be set up).
    pub code: i32,
    /// Standard output, whole.
    pub stdout: Vec<u8>,
    /// Standard error, whole.
    pub stderr: Vec<u8>,
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Starts sandboxes and probes through a helper binary.
#[derive(Debug, Clone)]
pub struct Executor {
    helper: PathBuf,
}

impl Executor {
    /// Uses `helper` (an `rbuild` binary) to create sandboxes.
    pub fn new(helper: impl Into<PathBuf>) -> Executor {
        Executor {
            helper: helper.into(),
        }
    }

    /// Uses the running executable (when it is `rbuild`).
    pub fn current() -> std::io::Result<Executor> {
        Ok(Executor::new(std::env::current_exe()?))
    }

    /// Runs `spec` to completion and collects its output.
    pub fn run(&self, spec: &SandboxSpec) -> std::io::Result<RunOutput> {
        self.run_streaming(spec, &mut |_, _| {})
    }

    /// Runs `spec`, handing every output line to `sink` as it arrives (a
    /// last line without a newline too), and returns the whole output.
    pub fn run_streaming(
        &self,
        spec: &SandboxSpec,
        sink: &mut dyn FnMut(Stream, &[u8]),
    ) -> std::io::Result<RunOutput> {
        self.run_cancellable(spec, sink, &AtomicBool::new(false))
    }

    /// As [`Executor::run_streaming`]; once `cancel` is set the step is
    /// killed (its lifeline is closed) and whatever it printed is returned.
    pub fn run_cancellable(
        &self,
        spec: &SandboxSpec,
        sink: &mut dyn FnMut(Stream, &[u8]),
        cancel: &AtomicBool,
    ) -> std::io::Result<RunOutput> {
        // Compiled here, once per process, not in every step's helper.
        let mut spec = spec.clone();
        if spec.copy.is_none() {
            spec.filters = confine::seccomp::Filters::for_posture(&spec.posture(vec![]))
                .map_err(std::io::Error::other)?;
        }
        let mut child = Command::new(&self.helper)
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_clear()
            .spawn()?;
        let mut json = serde_json::to_vec(&spec).map_err(std::io::Error::other)?;
        json.push(b'\n');
        // Kept open until the step ends: the helper kills the step when it
        // sees end-of-file, i.e. when this process dies.
        let mut lifeline = child.stdin.take().expect("piped stdin");
        lifeline.write_all(&json)?;
        let mut lifeline = Some(lifeline);
        let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
        let readers = [
            (
                Stream::Stdout,
                Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            ),
            (
                Stream::Stderr,
                Box::new(child.stderr.take().expect("piped")),
            ),
        ]
        .into_iter()
        .map(|(stream, pipe)| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if tx.send((stream, line)).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect::<Vec<_>>();
        drop(tx);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok((stream, line)) => {
                    sink(stream, &line);
                    match stream {
                        Stream::Stdout => stdout.extend_from_slice(&line),
                        Stream::Stderr => stderr.extend_from_slice(&line),
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if lifeline.is_some() && cancel.load(Ordering::Relaxed) {
                drop(lifeline.take()); // the helper kills the step
            }
        }
        for reader in readers {
            let _ = reader.join();
        }
        let status = child.wait()?;
        drop(lifeline);
        Ok(RunOutput {
            code: status.code().unwrap_or(SETUP_FAILED),
            stdout,
            stderr,
        })
    }

    /// Probes what this environment allows, using `storage` (a dir on the
    /// file system snapshots will live on) for scratch files.
    pub fn probe(&self, storage: &Path) -> Result<Probes, String> {
        std::fs::create_dir_all(storage).map_err(|e| format!("{}: {e}", storage.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix("probe-")
            .tempdir_in(storage)
            .map_err(|e| format!("scratch dir in {}: {e}", storage.display()))?;
        let out = Command::new(&self.helper)
            .arg(PROBE_SUBCOMMAND)
            .arg(scratch.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("starting the probe helper: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the probe helper failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut probes: Probes = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("reading the probe results: {e}"))?;
        probes.cgroup = CgroupSupport::detect();
        Ok(probes)
    }
}

/// One RUN step to execute.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The parent image's layers, bottom first.
    pub layers: Vec<Layer>,
    /// argv (the shell form already wrapped in the image's SHELL).
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory (created if missing).
    pub cwd: String,
    /// `USER` as written after expansion (`name`, `uid`, `name:group`,
    /// `uid:gid`; empty = root), resolved in the step's own root.
    pub user: String,
    /// The step's network.
    pub network: sandbox::Network,
    /// The resolv.conf the default network's DNS forwards to (None: the
    /// host's).
    pub network_resolv_conf: Option<PathBuf>,
    /// `RUN --security` (insecure only when the build allows it).
    pub security: confine::Security,
    /// RUN --mount mounts, already resolved to host paths.
    pub mounts: Vec<MountSpec>,
    /// Counts the bytes of the layer as it is written (progress display).
    pub layer_bytes: diff::ByteCounter,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The command's output and exit code.
    pub output: RunOutput,
    /// The layer of its changes (only when it succeeded), perhaps still
    /// being written.
    pub layer: Option<Layer>,
    /// What its cgroup recorded.
    pub events: CgroupEvents,
    /// Why it failed, for people (None on success).
    pub failure: Option<String>,
    /// Whether the machine is to blame for the failure (a COPY on a full
    /// disk), not the step.
    pub machine_failed: bool,
}

/// Step failures that are not the command's own.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Snapshots could not be prepared.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The layer could not be written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// `USER` names a user or group the root does not have.
    #[error("{0}")]
    User(String),
    /// The step's cgroup could not be made or limited.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// Something else in the environment.
    #[error("{0}")]
    Environment(String),
    /// The build was cancelled (another stage failed).
    #[error("cancelled")]
    Cancelled,
}

impl From<CommitError> for StepError {
    fn from(e: CommitError) -> StepError {
        match e {
            CommitError::Diff(e) => StepError::Environment(e.to_string()),
            CommitError::Layer(e) => StepError::Layer(e),
            CommitError::Snapshot(e) => StepError::Snapshot(e),
        }
    }
}

fn env_err(what: &str) -> impl FnOnce(std::io::Error) -> StepError + '_ {
    move |e| StepError::Environment(format!("{what}: {e}"))
}

/// Runs steps with one plan, store and set of limits.
#[derive(Debug)]
pub struct StepRunner {
    executor: Executor,
    plan: Plan,
    store: ContentStore,
    /// The snapshot back-end, chosen once from the plan.
    steps: Arc<dyn StepSnapshots>,
    cgroups: CgroupSupport,
    limits: Limits,
    layer_options: LayerOptions,
    hostname: String,
    /// Why the default network's stack cannot run here, if it cannot.
    stack_problem: Option<&'static str>,
    cancelled: Arc<AtomicBool>,
}

impl StepRunner {
    /// The flag that, once set, stops the steps running now (and refuses
    /// new ones): the scheduler sets it when another op of the build fails.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancelled.clone()
    }

    /// A runner; fails when limits are asked for and cgroups are unusable.
    pub fn new(
        executor: Executor,
        plan: Plan,
        store: ContentStore,
        snapshots: SnapshotStore,
        cgroups: CgroupSupport,
        limits: Limits,
        source_date_epoch: Option<i64>,
    ) -> Result<StepRunner, String> {
        if limits.any() && !cgroups.writable {
            return Err(format!(
                "--memory, --cpus and --pids-limit need a writable cgroup, and this one is not: {}",
                cgroups.problem.as_deref().unwrap_or("no cgroupfs")
            ));
        }
        // A user namespace mapping every id to itself (root holding
        // CAP_SETUID and CAP_SETGID) writes true owners: nothing to map.
        let id_map = (plan.userns && sandbox::full_range().is_none()).then(|| IdMap {
            host_uid: rustix::process::geteuid().as_raw(),
            host_gid: rustix::process::getegid().as_raw(),
        });
        // The chroot tier runs no stack: it has only the host's network.
        let stack_problem = (plan.namespaces != Namespaces::Chroot)
            .then(|| sandbox::stack_problem(plan.userns || plan.remap.is_some()))
            .flatten();
        let steps =
            crate::snapshot::backend::for_mode(snapshots, plan.snapshots == SnapshotMode::Overlay);
        Ok(StepRunner {
            executor,
            plan,
            store,
            steps,
            cgroups,
            limits,
            // A step's layer is stored plain: tagging the image never
            // waits for gzip; what ships is compressed once, by diff_id
            // (`image::layout::compressed_image`).
            layer_options: LayerOptions {
                source_date_epoch,
                id_map,
                compression: crate::cache::Compression::None,
            },
            hostname: "rbuild".to_string(),
            stack_problem,
            cancelled: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Why RUN steps get only `lo` for the default network here, if they
    /// do (slirp4netns missing, `/dev/net/tun` closed to this user, host
    /// root without CAP_NET_ADMIN; never in the chroot tier, which has
    /// only the host's network).
    pub fn stack_problem(&self) -> Option<&'static str> {
        self.stack_problem
    }

    /// The plan steps run under.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The content store layers are written to.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// The snapshot store steps run over.
    pub fn snapshots(&self) -> &SnapshotStore {
        self.steps.store()
    }

    /// The snapshot back-end steps run on (overlay or copy: callers need
    /// not know which).
    pub fn steps(&self) -> &dyn StepSnapshots {
        &*self.steps
    }

    /// Resolves `user` in the root made of `lowers` (their /etc/passwd
    /// and /etc/group), or, with no lowers, in the directory `root`.
    fn identity(
        &self,
        lowers: &[PathBuf],
        root: &Path,
        user: &str,
    ) -> Result<user::Identity, StepError> {
        let passwd = etc_file(lowers, Some(root), "passwd");
        let group = etc_file(lowers, Some(root), "group");
        user::resolve(user, &passwd, &group).map_err(StepError::User)
    }

    /// The layer that creates `path` (and missing parents) on top of
    /// `layers`, owned by `user` as resolved in that root, as WORKDIR does;
    /// an empty layer when the directory already exists (BuildKit's mkdir
    /// commits one too).
    pub fn mkdir_layer(
        &self,
        layers: &[Layer],
        path: &str,
        user: &str,
    ) -> Result<LayerBlob, StepError> {
        let snapshots = self.steps.store();
        let names = snapshots.lowers(&self.store, layers)?;
        let lowers = snapshots.lower_paths(&names);
        // BuildKit's file ops own what they make by its readUser rules (a
        // bare uid is also the gid), not by runc's (gid 0) as a RUN is.
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            // No layers (FROM scratch): no passwd, never the host's.
            let (passwd, group) = (
                etc_file(&lowers, None, "passwd"),
                etc_file(&lowers, None, "group"),
            );
            copy::resolve_chown(user, &passwd, &group)
                .map_err(|e| StepError::User(e.to_string()))?
        };
        let mut entries = Vec::new();
        let mut existing = Vec::new();
        let mut rel = PathBuf::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            rel.push(part);
            let name = rel.to_string_lossy().into_owned();
            match diff::lower_file(&lowers, &rel) {
                // Parents come along with their real metadata, as in the
                // differ's layers: a layer stacked as an overlay lower dir
                // would otherwise show invented 0:0 parents over the real
                // ones (overlay takes a directory's metadata from the top).
                Some(found) => existing.push((name, found)),
                None => entries.push(crate::image::layer::Entry {
                    path: name,
                    kind: crate::image::layer::EntryKind::Dir,
                    mode: 0o755,
                    uid: uid as u64,
                    gid: gid as u64,
                }),
            }
        }
        let missing = !entries.is_empty();
        for (name, found) in existing.into_iter().filter(|_| missing) {
            use std::os::unix::fs::MetadataExt;
            let meta =
                std::fs::symlink_metadata(&found).map_err(env_err("reading a parent dir"))?;
            if !meta.is_dir() {
                // A link on the way (`/bin` -> `usr/bin`) stays a link.
                continue;
            }
            entries.push(crate::image::layer::Entry {
                path: name,
                kind: crate::image::layer::EntryKind::Dir,
                mode: meta.mode() & 0o7777,
                uid: meta.uid() as u64,
                gid: meta.gid() as u64,
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mtime = self.layer_options.source_date_epoch.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let layer =
            crate::image::layer::write_gzip_layer(&self.store, entries, mtime.max(0) as u64)?;
        Ok(layer)
    }

    /// Runs `step`, streaming output lines to `sink`.
    pub fn run(
        &self,
        step: &Step,
        sink: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<StepOutcome, StepError> {
        self.in_root(step, None, sink)
    }

    /// Copies files into the root made of `layers` (a COPY or ADD); the
    /// outcome's failure says what went wrong (a missing source, ...).
    pub fn copy(
        &self,
        layers: &[Layer],
        copy: CopySpec,
        layer_bytes: diff::ByteCounter,
    ) -> Result<StepOutcome, StepError> {
        let step = Step {
            layers: layers.to_vec(),
            cwd: "/".to_string(),
            layer_bytes,
            ..Step::default()
        };
        let mut errors = Vec::new();
        let mut outcome = self.in_root(&step, Some(copy), &mut |_, line: &[u8]| {
            errors.extend_from_slice(line)
        })?;
        if outcome.output.code != 0 {
            outcome.machine_failed = outcome.output.code == sandbox::COPY_MACHINE_FAILED;
            let text = String::from_utf8_lossy(&errors).trim().to_string();
            outcome.failure = Some(if text.is_empty() {
                format!("the copy failed (exit {})", outcome.output.code)
            } else {
                text
            });
        }
        Ok(outcome)
    }

    /// Runs `step` in a sandbox over a fresh workspace made of its layers
    /// (or, with `copy`, copies files there instead of running a command),
    /// and makes a layer of what changed when it succeeded.
    fn in_root(
        &self,
        step: &Step,
        copy: Option<CopySpec>,
        sink: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<StepOutcome, StepError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(StepError::Cancelled);
        }
        let ws = self.steps.store().workspace()?;
        let prepared = self.steps.prepare(&self.store, &step.layers, &ws)?;
        let identity = match copy {
            Some(_) => user::Identity::default(),
            None => self.identity(&prepared.read_from, &ws.merged(), &step.user)?,
        };
        let is_run = copy.is_none();
        let network = self.network_of(step);
        let mounts = self.mounts(step, network, is_run, &ws)?;
        let cgroup = self.cgroup(is_run)?;
        let report = ws.path().join("stubs.json");
        let remap = self.remap(step, is_run, &ws)?;
        // Where overlayfs reads opaque markers: user.* in a user namespace,
        // the step's own or the one rbuild runs in.
        let opaque = if self.plan.userns || remap.is_some() || crate::userns::nested() {
            diff::OpaqueXattr::User
        } else {
            diff::OpaqueXattr::Trusted
        };
        let spec = SandboxSpec {
            root: prepared.mounts.clone(),
            args: step.args.clone(),
            env: step_env(step, &identity),
            cwd: step.cwd.clone(),
            uid: identity.uid,
            gid: identity.gid,
            groups: identity.groups,
            hostname: self.hostname.clone(),
            network,
            network_resolv_conf: step.network_resolv_conf.clone(),
            namespaces: self.plan.namespaces,
            userns: self.plan.userns,
            mounts,
            cgroup_procs: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
            stub_report: Some(report.clone()),
            copy,
            security: step.security,
            remap,
            filters: Default::default(),
        };
        let output = self
            .executor
            .run_cancellable(&spec, sink, &self.cancelled)
            .map_err(env_err("starting the sandbox helper"))?;
        let events = cgroup.map(|c| c.finish()).unwrap_or_default();
        remove_stubs(&prepared.changed, &report);
        let failure = self.failure(step, is_run, &output, &events);
        let layer = match failure {
            None => {
                let write = LayerWrite {
                    blobs: self.store.clone(),
                    options: self.layer_options,
                    counter: step.layer_bytes.clone(),
                    opaque,
                };
                let layer = self.steps.commit(prepared, &ws, &step.layers, &write)?;
                Some(layer)
            }
            Some(_) => None,
        };
        Ok(StepOutcome {
            output,
            layer,
            events,
            failure,
            machine_failed: false,
        })
    }

    /// The mounts of a step: a RUN in its own network namespace gets its
    /// `/etc/hosts` and `/etc/resolv.conf` first, then the step's own.
    fn mounts(
        &self,
        step: &Step,
        network: sandbox::Network,
        is_run: bool,
        ws: &Workspace,
    ) -> Result<Vec<MountSpec>, StepError> {
        let mut mounts = if self.plan.namespaces != Namespaces::Chroot && is_run {
            self.network_files(ws, network)?
        } else {
            Vec::new()
        };
        mounts.extend(step.mounts.iter().cloned());
        Ok(mounts)
    }

    /// A cgroup with the build's limits for a RUN step, when there are
    /// limits (COPY runs no process of the image to limit).
    fn cgroup(&self, is_run: bool) -> Result<Option<cgroup::StepCgroup>, StepError> {
        if !(self.limits.any() && is_run) {
            return Ok(None);
        }
        self.cgroups
            .create(&self.limits)
            .map(Some)
            .map_err(StepError::from)
    }

    /// The network a step gets here: the chroot tier has only the host's;
    /// without a usable stack the default network is `lo` alone, never the
    /// host's in its place (the runner said why when it was made).
    fn network_of(&self, step: &Step) -> sandbox::Network {
        match step.network {
            sandbox::Network::Private if self.plan.namespaces == Namespaces::Chroot => {
                sandbox::Network::Host
            }
            sandbox::Network::Private if self.stack_problem.is_some() => sandbox::Network::None,
            network => network,
        }
    }

    /// Writes the step's `/etc/hosts` (naming the build's host) and
    /// `/etc/resolv.conf` (the host's; with the default network, the
    /// stack's DNS) in `ws`, and returns the bind mounts that put them in
    /// the root: the image's own files stay untouched.
    fn network_files(
        &self,
        ws: &Workspace,
        network: sandbox::Network,
    ) -> Result<Vec<MountSpec>, StepError> {
        let hosts = ws.files().join("hosts");
        std::fs::write(
            &hosts,
            format!(
                "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback {0}\n",
                self.hostname
            ),
        )
        .map_err(env_err("writing /etc/hosts"))?;
        let resolv = ws.files().join("resolv.conf");
        let host_resolv = match network {
            sandbox::Network::Private => {
                format!("nameserver {}\n", sandbox::STACK_DNS).into_bytes()
            }
            _ => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(&resolv, host_resolv).map_err(env_err("writing /etc/resolv.conf"))?;
        Ok([("/etc/hosts", hosts), ("/etc/resolv.conf", resolv)]
            .into_iter()
            .map(|(target, source)| MountSpec {
                target: target.to_string(),
                kind: MountKind::Bind {
                    source,
                    readonly: false,
                },
            })
            .collect())
    }

    /// The id remapping of a step, if the plan has one and the step takes
    /// it, with its staging dir made in `ws`.
    fn remap(&self, step: &Step, is_run: bool, ws: &Workspace) -> Result<Option<Remap>, StepError> {
        // COPY runs no process of the image: only RUN steps are remapped,
        // and not insecure ones, which ask for host privileges.
        match (self.plan.remap, is_run, step.security) {
            (Some(range), true, confine::Security::Sandbox) => {
                let staging = ws.path().join("idmap");
                std::fs::create_dir_all(&staging).map_err(env_err("creating the idmap dir"))?;
                Ok(Some(Remap { range, staging }))
            }
            _ => Ok(None),
        }
    }

    /// Why the step failed, for people, or `None` when it succeeded: its
    /// exit or the limit it hit, with a hint when the sandbox's
    /// confinement may be the cause, or that the build was cancelled.
    fn failure(
        &self,
        step: &Step,
        is_run: bool,
        output: &RunOutput,
        events: &CgroupEvents,
    ) -> Option<String> {
        let mut failure = describe_failure(output, events, &self.limits);
        if let Some(text) = failure.as_mut() {
            if is_run && step.security == confine::Security::Sandbox {
                text.push_str(confinement_hint(output).unwrap_or_default());
            }
            if is_run && self.plan.namespaces == Namespaces::Chroot {
                text.push_str(" (the chroot tier gives a step no /proc and no mounts)");
            }
            // A step that asked for the default network and got only lo
            // may have failed for that: say so where the failure is read,
            // but not when the sandbox itself failed (its line says why).
            let ran = output.code != SETUP_FAILED
                && !String::from_utf8_lossy(&output.stderr).contains("rbuild sandbox:");
            if let (true, sandbox::Network::Private, Some(problem)) =
                (is_run && ran, step.network, self.stack_problem)
            {
                text.push_str(&format!(
                    " (this step had only lo, not the default network: {problem})"
                ));
            }
            if is_run && ran && self.layer_options.id_map.is_some() {
                text.push_str(&single_id_hint());
            }
        }
        if failure.is_some() && self.cancelled.load(Ordering::Relaxed) {
            failure = Some("cancelled: another step of the build failed".to_string());
        }
        failure
    }
}

/// What a failed step in a namespace mapping one id may have hit, and
/// why rbuild has no more ids here.
fn single_id_hint() -> String {
    let why = match crate::userns::outcome() {
        Some(crate::userns::Entered::No(why)) => format!("; no subordinate ids: {why}"),
        _ => String::new(),
    };
    format!(
        " (this step's user namespace maps one id, root: a chown to another owner \
         or a USER other than root fails here{why})"
    )
}

/// The environment of `step`: its own, with HOME from the user's passwd
/// entry ("/" without one) unless the Dockerfile set it, as runc does.
fn step_env(step: &Step, identity: &user::Identity) -> Vec<String> {
    let mut env = step.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home.as_deref().unwrap_or("/")));
    }
    env
}

/// A file of the image's `/etc` (`passwd`, `group`): from the stacked
/// lower dirs, or from `root` (a materialized root) when there are none;
/// empty when absent.
fn etc_file(lowers: &[PathBuf], root: Option<&Path>, name: &str) -> Vec<u8> {
    let rel = Path::new("etc").join(name);
    let path = if lowers.is_empty() {
        root.map(|r| r.join(&rel))
    } else {
        diff::lower_file(lowers, &rel)
    };
    path.and_then(|p| std::fs::read(p).ok()).unwrap_or_default()
}

/// Removes the file mount points the sandbox created (deepest first) and
/// puts their parents' times back, so they leave no trace in the layer;
/// directory mount points stay, as they do in BuildKit's images.
fn remove_stubs(root: &Path, report: &Path) {
    let Ok(bytes) = std::fs::read(report) else {
        return;
    };
    let Ok(stubs) = serde_json::from_slice::<Vec<Stub>>(&bytes) else {
        return;
    };
    // Deepest first. The kernel file systems' directories stay, as the
    // mount points runc makes stay in BuildKit's layers (the differential
    // harness shows them); `--mount` targets and the directories made for
    // them go when empty, as today's BuildKit removes them.
    for stub in stubs.iter().rev().filter(|s| s.mount || !s.dir) {
        let path = root.join(&stub.path);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let removed = if meta.is_dir() {
            // Only an empty one: remove_dir refuses the rest.
            std::fs::remove_dir(&path)
        } else {
            use std::os::unix::fs::FileTypeExt;
            if (meta.is_file() && meta.len() == 0) || meta.file_type().is_char_device() {
                std::fs::remove_file(&path)
            } else {
                continue;
            }
        };
        if removed.is_err() {
            continue; // the step put something there: it stays, as in docker
        }
        let parent = path.parent().unwrap_or(root);
        let times = stub.parent_times.map(|(sec, nsec)| rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        });
        let _ = rustix::fs::utimensat(
            rustix::fs::CWD,
            parent,
            &rustix::fs::Timestamps {
                last_access: times[0],
                last_modification: times[1],
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
    }
}

/// A person's reading of a failed step, or None when it succeeded.
pub fn describe_failure(
    output: &RunOutput,
    events: &CgroupEvents,
    limits: &Limits,
) -> Option<String> {
    if events.oom_kills > 0 {
        let limit = limits
            .memory
            .map(crate::units::human_bytes)
            .unwrap_or_else(|| "?".to_string());
        return Some(format!("RUN was killed: out of memory (limit {limit})"));
    }
    if output.code == 0 {
        // A step whose forks were refused did not do what it said, even
        // when its shell swallowed the errors (as a fork bomb's does).
        return (events.pids_refused > 0).then(|| {
            format!(
                "RUN hit the process limit (--pids-limit {}): {} fork(s) were refused",
                limits.pids.unwrap_or(0),
                events.pids_refused
            )
        });
    }
    let mut text = if output.code == SETUP_FAILED
        && String::from_utf8_lossy(&output.stderr).contains("rbuild sandbox:")
    {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.contains("rbuild sandbox:"))
            .unwrap_or("")
            .trim();
        format!("the RUN sandbox could not be set up: {line}")
    } else if output.code > 128 && output.code < 128 + 65 {
        format!(
            "RUN was killed by signal {} (exit code {})",
            output.code - 128,
            output.code
        )
    } else {
        format!(
            "RUN did not complete successfully: exit code: {}",
            output.code
        )
    };
    if events.pids_refused > 0 {
        text.push_str(&format!(
            " after reaching the process limit (--pids-limit {})",
            limits.pids.unwrap_or(0)
        ));
    }
    Some(text)
}

/// What to tell a person whose step was refused an operation: the
/// capabilities it lacks and the way to lift the confinement.
pub fn confinement_hint(output: &RunOutput) -> Option<&'static str> {
    let refused = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        text.contains("Operation not permitted") || text.contains("are you root?")
    };
    (refused(&output.stderr) || refused(&output.stdout)).then_some(
        " (an operation was not permitted: RUN steps get docker's default capabilities \
         and seccomp profile, without CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, \
         CAP_SYS_MODULE or CAP_SYS_TIME; `RUN --security=insecure` with \
         `--allow security.insecure` lifts them)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_operation_names_what_the_step_lacks() {
        let out = |stderr: &str| RunOutput {
            code: 1,
            stdout: vec![],
            stderr: stderr.as_bytes().to_vec(),
        };
        let hint = confinement_hint(&out("mount: permission denied (are you root?)")).unwrap();
        assert!(hint.contains("CAP_SYS_ADMIN") && hint.contains("--allow security.insecure"));
        assert!(confinement_hint(&out("ip: RTNETLINK answers: Operation not permitted")).is_some());
        assert_eq!(confinement_hint(&out("sh: nope: not found")), None);
    }

    #[test]
    fn failures_read_as_sentences() {
        let out = |code| RunOutput {
            code,
            stdout: vec![],
            stderr: vec![],
        };
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(32),
            cpus: None,
        };
        let oom = CgroupEvents {
            oom_kills: 1,
            pids_refused: 0,
        };
        assert_eq!(
            describe_failure(&out(137), &oom, &limits).unwrap(),
            "RUN was killed: out of memory (limit 64 MiB)"
        );
        let forks = CgroupEvents {
            oom_kills: 0,
            pids_refused: 12,
        };
        assert_eq!(
            describe_failure(&out(2), &forks, &limits).unwrap(),
            "RUN did not complete successfully: exit code: 2 after reaching the process limit (--pids-limit 32)"
        );
        assert_eq!(
            describe_failure(&out(0), &CgroupEvents::default(), &limits),
            None
        );
        assert_eq!(
            describe_failure(&out(0), &forks, &limits).unwrap(),
            "RUN hit the process limit (--pids-limit 32): 12 fork(s) were refused"
        );
    }
}
