//! `rbuild [build] [OPTIONS] CONTEXT`: the docker-build-shaped command.
//!
//! It reads the Dockerfile and `.dockerignore`, runs the build, records
//! the image under its tags in the local image store, and sends it where
//! the flags say: a registry (`--push`), an OCI layout or docker archive
//! (`--output`). The flags follow `docker build`/buildx.

use std::path::PathBuf;

use super::{load_dockerfile, prepare_build, BuildFlags, EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE};
use crate::export::Output;
use crate::image::layout::StoredImage;
use crate::image::reference::Reference;

/// `rbuild build`'s flags: docker build's and buildx's, and kaniko's
/// executor flags as aliases (see the README's table).
#[derive(clap::Args, Debug)]
pub(super) struct BuildCommand {
    /// The build context directory (`-` for a tar or a Dockerfile on stdin).
    context: Option<PathBuf>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` for stdin).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name the image (repeatable): NAME[:TAG].
    #[arg(short = 't', long = "tag")]
    tag: Vec<String>,
    /// Push the image to the registry of every tag.
    #[arg(long)]
    push: bool,
    /// Where the image also goes: type=oci|docker|tar|local,dest=PATH[,tar=false], or type=registry.
    #[arg(short = 'o', long = "output")]
    output: Vec<String>,
    /// Load the image into the Docker API daemon at $DOCKER_HOST (docker, podman).
    #[arg(long)]
    load: bool,
    /// Write the image id (the config digest) to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write buildx's metadata JSON (containerimage.digest, ….descriptor, image.name).
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Take base images from their registry even when one is stored here.
    #[arg(long)]
    pull: bool,
    /// Add a label to the image: KEY=VALUE (repeatable).
    #[arg(long = "label")]
    label: Vec<String>,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Target platform; only this machine's is supported (no emulation).
    #[arg(long, alias = "custom-platform")]
    platform: Option<String>,
    /// Import build cache (not supported yet: warned about and ignored).
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Export build cache (not supported yet: warned about and ignored).
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    /// kaniko: the context (`dir://` prefix allowed).
    #[arg(long = "context", hide_short_help = true)]
    kaniko_context: Option<String>,
    /// kaniko: the Dockerfile, relative to the context when not found as given.
    #[arg(long = "dockerfile", hide_short_help = true)]
    dockerfile: Option<PathBuf>,
    /// kaniko: a tag to push to (repeatable): `-t NAME --push`.
    #[arg(long = "destination", hide_short_help = true)]
    destination: Vec<String>,
    /// kaniko: build (and write --tar-path etc.) but do not push.
    #[arg(long = "no-push", hide_short_help = true)]
    no_push: bool,
    /// kaniko: also write a docker-archive tar here (`-o type=docker,dest=`).
    #[arg(long = "tar-path", hide_short_help = true)]
    tar_path: Option<PathBuf>,
    /// kaniko: also write an OCI layout dir here (`-o type=oci,dest=,tar=false`).
    #[arg(long = "oci-layout-path", hide_short_help = true)]
    oci_layout_path: Option<PathBuf>,
    /// kaniko: write the manifest digest here.
    #[arg(long = "digest-file", hide_short_help = true)]
    digest_file: Option<PathBuf>,
    /// kaniko: reach every destination registry over plain HTTP.
    #[arg(long = "insecure", hide_short_help = true)]
    insecure: bool,
    /// kaniko: accept any TLS certificate from registries.
    #[arg(long = "skip-tls-verify", hide_short_help = true)]
    skip_tls_verify: bool,
    /// kaniko: `--cache=false` is `--no-cache`; rbuild's local cache is on otherwise.
    #[arg(long = "cache", hide_short_help = true, num_args = 0..=1, default_missing_value = "true")]
    kaniko_cache: Option<bool>,
    /// kaniko: remote cache repository (not supported yet: warned about and ignored).
    #[arg(long = "cache-repo", hide_short_help = true)]
    cache_repo: Option<String>,
    /// kaniko: base image cache dir (rbuild keeps bases in --root; ignored).
    #[arg(long = "cache-dir", hide_short_help = true)]
    cache_dir: Option<PathBuf>,
    /// kaniko: registry mirror for bases (not supported yet: warned about and ignored).
    #[arg(long = "registry-mirror", hide_short_help = true)]
    registry_mirror: Vec<String>,
    /// kaniko: timestamps stripped (`--source-date-epoch 0` unless set).
    #[arg(long = "reproducible", hide_short_help = true)]
    reproducible: bool,
    /// kaniko: the stages' changes as one layer on top of the base image.
    #[arg(long = "single-snapshot", hide_short_help = true)]
    single_snapshot: bool,
    /// Accept TLS certificates signed by this CA (PEM; repeatable).
    #[arg(long = "registry-certificate", hide_short_help = true)]
    ca_certs: Vec<PathBuf>,
    #[command(flatten)]
    build: BuildFlags,
}

/// The image names an `--output` gives with `name=` (repeatable).
fn output_names(spec: &str) -> Vec<String> {
    spec.split(',')
        .filter_map(|part| part.strip_prefix("name="))
        .map(str::to_string)
        .collect()
}

fn parse_output(spec: &str) -> Result<Output, String> {
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut push = false;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some(("tar", v)) => tar = v != "false",
            Some(("push", v)) => push = v == "true",
            Some(("name", _)) => {}
            _ if kind.is_none() && !part.contains('=') => {
                // `-o DIR` is buildx's short form of type=local.
                return Ok(Output::Local {
                    dest: PathBuf::from(part),
                });
            }
            _ => return Err(format!("--output {spec}: unknown field {part:?}")),
        }
    }
    let need_dest = |kind: &str| {
        dest.clone()
            .ok_or_else(|| format!("--output {spec}: type={kind} needs dest=PATH"))
    };
    match kind.as_deref() {
        Some("oci") => Ok(Output::Oci {
            dest: need_dest("oci")?,
            tar,
        }),
        Some("docker") => Ok(Output::Docker {
            dest: need_dest("docker")?,
        }),
        Some("registry") => Ok(Output::Registry),
        Some("image") if push => Ok(Output::Registry),
        Some("tar") => Ok(Output::Tar {
            dest: need_dest("tar")?,
        }),
        Some("local") => Ok(Output::Local {
            dest: need_dest("local")?,
        }),
        Some(other) => Err(format!(
            "--output {spec}: type={other} is not supported (oci, docker, tar, local, registry are)"
        )),
        None => Err(format!("--output {spec}: type= is missing")),
    }
}

/// `rbuild - < input`: a tar (plain or compressed) is the context, unpacked
/// safely into a private dir; anything else is the Dockerfile, with an
/// empty context. Returns the dir holding both and the context path.
fn stdin_context(storage: &std::path::Path) -> Result<(tempfile::TempDir, PathBuf), String> {
    use std::io::Seek;
    let scratch = storage.join("tmp");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("stdin-")
        .tempdir_in(&scratch)
        .map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut input = tempfile::tempfile_in(dir.path()).map_err(|e| e.to_string())?;
    std::io::copy(&mut std::io::stdin().lock(), &mut input)
        .map_err(|e| format!("reading the context from standard input: {e}"))?;
    let context = dir.path().join("context");
    std::fs::create_dir(&context).map_err(|e| e.to_string())?;
    input.rewind().map_err(|e| e.to_string())?;
    match crate::executor::copy::sniff_archive(&input) {
        Some(kind) => {
            input.rewind().map_err(|e| e.to_string())?;
            let reader =
                crate::executor::copy::decompress(kind, &input).map_err(|e| e.to_string())?;
            let options = crate::snapshot::ApplyOptions {
                whiteouts: false,
                ..Default::default()
            };
            crate::snapshot::apply_layer(
                &context,
                reader,
                "the context from standard input",
                options,
            )
            .map_err(|e| e.to_string())?;
        }
        None => {
            input.rewind().map_err(|e| e.to_string())?;
            let mut file =
                std::fs::File::create(dir.path().join("Dockerfile")).map_err(|e| e.to_string())?;
            std::io::copy(&mut input, &mut file).map_err(|e| e.to_string())?;
        }
    }
    Ok((dir, context))
}

/// Turns kaniko's flags into their docker-style equivalents; returns the
/// warnings for flags that are accepted but do nothing yet.
fn apply_kaniko_aliases(args: &mut BuildCommand) -> Vec<String> {
    let mut notes = Vec::new();
    if args.context.is_none() {
        args.context = args
            .kaniko_context
            .as_deref()
            .map(|c| PathBuf::from(c.strip_prefix("dir://").unwrap_or(c)));
    }
    let context = args.context.clone().unwrap_or_else(|| PathBuf::from("."));
    if let Some(dockerfile) = args.dockerfile.take() {
        if args.file.is_none() {
            // kaniko reads a relative --dockerfile inside the context.
            args.file = Some(if dockerfile.is_relative() && !dockerfile.exists() {
                context.join(dockerfile)
            } else {
                dockerfile
            });
        }
    }
    if !args.destination.is_empty() {
        args.tag.append(&mut args.destination);
        args.push = true;
    }
    if args.no_push {
        args.push = false;
    }
    if let Some(path) = args.tar_path.take() {
        args.output
            .push(format!("type=docker,dest={}", path.display()));
    }
    if let Some(path) = args.oci_layout_path.take() {
        args.output
            .push(format!("type=oci,dest={},tar=false", path.display()));
    }
    if args.kaniko_cache == Some(false) {
        args.build.no_cache = true;
    }
    if args.reproducible && args.build.source_date_epoch.is_none() {
        args.build.source_date_epoch = Some(0);
    }
    for (flag, given) in [
        ("--cache-from", !args.cache_from.is_empty()),
        ("--cache-to", !args.cache_to.is_empty()),
        ("--cache-repo", args.cache_repo.is_some()),
        ("--registry-mirror", !args.registry_mirror.is_empty()),
    ] {
        if given {
            notes.push(format!(
                "warning: {flag} is not supported yet (remote cache and mirrors come later); ignored"
            ));
        }
    }
    if args.cache_dir.is_some() {
        notes.push(
            "note: --cache-dir is not needed: base images are kept in the storage root (--root)"
                .to_string(),
        );
    }
    notes
}

pub(super) fn build(mut args: BuildCommand) -> i32 {
    match run_build(&mut args) {
        Ok(()) => EXIT_OK,
        Err(code) => code,
    }
}

/// The build command's work; an error is the exit code, its message
/// already printed.
fn run_build(args: &mut BuildCommand) -> Result<(), i32> {
    let notes = apply_kaniko_aliases(args);
    check_platform(args.platform.as_deref())?;
    // Kept until the build is done: the context read from standard input.
    let (context_arg, _stdin_dir) = resolve_context(args)?;
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| context_arg.join("Dockerfile"));
    if !context_arg.is_dir() {
        eprintln!(
            "error: the build context {} is not a directory",
            context_arg.display()
        );
        return Err(EXIT_USAGE);
    }
    let (_, dockerfile) = load_dockerfile(&dockerfile_path)?;
    let (tags, outputs) = tags_and_outputs(&args.tag, &args.output)?;
    let push = args.push || outputs.contains(&Output::Registry);
    if push && tags.is_empty() {
        eprintln!("error: --push needs at least one --tag to push to");
        return Err(EXIT_USAGE);
    }
    let (executor, options) = build_options(args, context_arg, &dockerfile_path, &tags)?;
    let mode = if args.quiet {
        crate::progress::Mode::Quiet
    } else {
        args.build.progress.resolve()
    };
    let mut renderer = crate::progress::renderer(mode);
    let mut phases = crate::progress::Phases::default();
    for note in notes {
        renderer.event(&crate::progress::Event::Warning(note));
    }
    let mut log = |event: &crate::progress::Event| renderer.event(event);
    let built = match crate::builder::build(&dockerfile, &options, executor, &mut log) {
        Ok(built) => built,
        Err(failed) => {
            drop(renderer);
            eprintln!("error: {failed}");
            return Err(failed.exit_code());
        }
    };
    phases.mark("build");
    let mut log = |event: &crate::progress::Event| renderer.event(event);
    let image = deliver(args, &options, &built, (&tags, &outputs, push), &mut log)?;
    // The image is where it should be: let collection see this build's
    // data again, and apply the configured size cap.
    drop(built.lease);
    apply_size_cap(&options.storage, &mut |event| renderer.event(event));
    write_id_files(args, &image, &tags)?;
    phases.mark("export");
    let mut all_phases = built.phases.clone();
    all_phases.extend(
        phases
            .list()
            .into_iter()
            .filter(|(name, _)| name != "build"),
    );
    renderer.summary(&crate::progress::Summary {
        ran: built.steps,
        cached: built.cached,
        elapsed: phases.elapsed(),
        phases: all_phases,
        image: image.config_digest.to_string(),
        manifest: image.manifest_digest.to_string(),
        size: image.size(),
    });
    if args.quiet {
        println!("{}", image.config_digest);
    }
    Ok(())
}

/// The options of this build: `prepare_build`'s, with the build
/// command's own flags.
fn build_options(
    args: &BuildCommand,
    context: PathBuf,
    dockerfile: &std::path::Path,
    tags: &[Reference],
) -> Result<(crate::executor::Executor, crate::builder::BuildOptions), i32> {
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.label {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let (executor, mut options) = prepare_build(&args.build, Some(context), dockerfile)?;
    options.labels = labels;
    options.pull = args.pull;
    options.skip_tls_verify = args.skip_tls_verify;
    options.ca_certs = args.ca_certs.clone();
    if args.insecure {
        // kaniko's --insecure: the destinations speak plain HTTP.
        options
            .insecure_registries
            .extend(tags.iter().map(|t| t.registry.clone()));
    }
    Ok((executor, options))
}

/// Hands the built image over: squashed if asked, recorded under its
/// tags, written to the outputs, loaded, pushed. Returns the image
/// handed over.
fn deliver(
    args: &BuildCommand,
    options: &crate::builder::BuildOptions,
    built: &crate::builder::Built,
    (tags, outputs, push): (&[Reference], &[Output], bool),
    log: &mut dyn FnMut(&crate::progress::Event),
) -> Result<StoredImage, i32> {
    let image = if args.single_snapshot {
        let from = crate::export::Squash {
            store: &built.store,
            storage: &options.storage,
            image: &built.image,
            config: &built.config,
            base_layers: built.base_layers,
            source_date_epoch: options.source_date_epoch,
        };
        crate::export::squash(from).map_err(|e| {
            eprintln!("error: --single-snapshot: {e}");
            EXIT_ENVIRONMENT
        })?
    } else {
        built.image.clone()
    };
    // An image that ships (pushed, or written as image files) is the
    // compressed one everywhere, tags and digest files too; one only
    // tagged keeps its plain layers (the same config: the same image id).
    let ships = push || outputs.iter().any(Output::ships_image);
    let image = if ships {
        let plain: u64 = image
            .layers
            .iter()
            .filter(|l| l.is_uncompressed())
            .map(|l| l.size)
            .sum();
        let counter = std::sync::atomic::AtomicU64::new(0);
        crate::progress::track("compressing the layers", Some(plain), &counter, log, || {
            crate::image::layout::compressed_image(&built.store, &image, Some(&counter))
        })
        .map_err(|e| {
            eprintln!("error: compressing the layers: {e}");
            EXIT_ENVIRONMENT
        })?
    } else {
        image
    };
    let local = crate::image::local::LocalImages::open(&options.storage);
    for tag in tags {
        local.put(tag, &image).map_err(|e| {
            eprintln!("error: recording {tag}: {e}");
            EXIT_ENVIRONMENT
        })?;
    }
    crate::export::write(&built.store, &image, tags, outputs).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ENVIRONMENT
    })?;
    if args.load {
        load(&built.store, &image, tags, log)?;
    }
    if push {
        push_image(options, &built.store, &image, tags, log)?;
    }
    Ok(image)
}

/// `--platform`: rbuild builds for this machine only (for now).
fn check_platform(platform: Option<&str>) -> Result<(), i32> {
    let Some(platform) = platform else {
        return Ok(());
    };
    let host = crate::solver::Platform::host();
    match crate::solver::Platform::parse(platform) {
        Ok(p) if p == host => Ok(()),
        Ok(_) => {
            eprintln!(
                "error: --platform {platform}: rbuild builds for this machine ({}) only; other platforms need emulation",
                host.format()
            );
            Err(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: --platform {platform}: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// The context directory, and the temporary dir holding it when it came
/// from standard input (`-`); `-f` is made to point into it.
fn resolve_context(args: &mut BuildCommand) -> Result<(PathBuf, Option<tempfile::TempDir>), i32> {
    let context = args.context.clone().unwrap_or_else(|| PathBuf::from("."));
    if context.as_os_str() != "-" {
        return Ok((context, None));
    }
    if args.file.as_deref() == Some(std::path::Path::new("-")) {
        eprintln!("error: the context and the Dockerfile cannot both come from standard input");
        return Err(EXIT_USAGE);
    }
    let storage = super::storage_root(args.build.sandbox.root.clone());
    match stdin_context(&storage) {
        Ok((dir, context)) => {
            let beside = dir.path().join("Dockerfile");
            if args.file.is_none() && beside.exists() {
                args.file = Some(beside);
            } else if let Some(file) = args.file.as_mut().filter(|f| f.is_relative()) {
                // -f names a file inside the context tar.
                *file = context.join(&*file);
            }
            Ok((context, Some(dir)))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// `--tag`s and `--output`s; an output's `name=` adds a tag, as buildx.
fn tags_and_outputs(
    tag_flags: &[String],
    output_flags: &[String],
) -> Result<(Vec<Reference>, Vec<Output>), i32> {
    let mut tags = Vec::new();
    for tag in tag_flags {
        match tag.parse::<Reference>() {
            Ok(r) => tags.push(r),
            Err(e) => {
                eprintln!("error: --tag {tag}: {e}");
                return Err(EXIT_USAGE);
            }
        }
    }
    let mut outputs = Vec::new();
    for spec in output_flags {
        match parse_output(spec) {
            Ok(o) => outputs.push(o),
            Err(e) => {
                eprintln!("error: {e}");
                return Err(EXIT_USAGE);
            }
        }
        // buildx's `name=`: the image's name, as `-t` gives it.
        for name in output_names(spec) {
            match name.parse::<Reference>() {
                Ok(r) if !tags.contains(&r) => tags.push(r),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("error: --output {spec}: name={name}: {e}");
                    return Err(EXIT_USAGE);
                }
            }
        }
    }
    Ok((tags, outputs))
}

/// `--load` into `$DOCKER_HOST` (or the default socket).
fn load(
    store: &crate::cache::ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    log: &mut dyn FnMut(&crate::progress::Event),
) -> Result<(), i32> {
    let host = crate::export::default_docker_host();
    crate::export::load(&host, store, image, tags, log).map_err(|e| {
        eprintln!("error: --load into {host}: {e}");
        EXIT_ENVIRONMENT
    })
}

/// `--push`: the image to every tag's registry, with progress.
fn push_image(
    options: &crate::builder::BuildOptions,
    store: &crate::cache::ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    log: &mut dyn FnMut(&crate::progress::Event),
) -> Result<(), i32> {
    let registry = crate::registry::RegistryOptions {
        insecure: options.insecure_registries.clone(),
        skip_tls_verify: options.skip_tls_verify,
        ca_certs: options.ca_certs.clone(),
        ..Default::default()
    };
    crate::export::push(registry, store, image, tags, log).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ENVIRONMENT
    })
}

/// The configured size cap, applied once the image is where it should
/// be; a failure is a warning, never the build's.
fn apply_size_cap(storage: &std::path::Path, log: &mut dyn FnMut(&crate::progress::Event)) {
    let cap = match crate::gc::configured_cap(storage) {
        Ok(Some(cap)) => cap,
        Ok(None) => return,
        Err(e) => return eprintln!("warning: {e}"),
    };
    let options = crate::gc::PruneOptions {
        all: false,
        keep_storage: Some(cap),
    };
    match crate::gc::prune(storage, options) {
        Ok(report) if report.freed > 0 => log(&crate::progress::Event::Note(format!(
            "size cap {}: removed {} cache entries, {} blobs, {} snapshots ({})",
            crate::units::human_bytes(cap),
            report.entries,
            report.blobs,
            report.snapshots,
            crate::units::human_bytes(report.freed)
        ))),
        Ok(_) => {}
        Err(e) => eprintln!("warning: applying the size cap: {e}"),
    }
}

/// `--iidfile`, `--digest-file`, `--metadata-file`.
fn write_id_files(args: &BuildCommand, image: &StoredImage, tags: &[Reference]) -> Result<(), i32> {
    let files = [
        (&args.iidfile, "--iidfile", image.config_digest.to_string()),
        (
            &args.digest_file,
            "--digest-file",
            image.manifest_digest.to_string(),
        ),
        (
            &args.metadata_file,
            "--metadata-file",
            metadata_json(image, tags),
        ),
    ];
    for (path, flag, text) in files {
        if let Some(path) = path {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: {flag} {}: {e}", path.display());
                return Err(EXIT_ENVIRONMENT);
            }
        }
    }
    Ok(())
}

/// buildx's `--metadata-file` keys for the image.
fn metadata_json(image: &StoredImage, tags: &[Reference]) -> String {
    let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    let mut value = serde_json::json!({
        "containerimage.digest": image.manifest_digest.to_string(),
        "containerimage.config.digest": image.config_digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": image.media_type,
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest_size,
        },
    });
    if !names.is_empty() {
        value["image.name"] = names.join(",").into();
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            parse_output("type=oci,dest=out.tar"),
            Ok(Output::Oci {
                dest: "out.tar".into(),
                tar: true
            })
        );
        assert_eq!(
            parse_output("type=oci,dest=dir,tar=false"),
            Ok(Output::Oci {
                dest: "dir".into(),
                tar: false
            })
        );
        assert_eq!(
            parse_output("type=docker,dest=a.tar"),
            Ok(Output::Docker {
                dest: "a.tar".into()
            })
        );
        assert_eq!(parse_output("type=registry"), Ok(Output::Registry));
        assert_eq!(parse_output("type=image,push=true"), Ok(Output::Registry));
        assert!(parse_output("type=oci").unwrap_err().contains("dest"));
        assert_eq!(
            parse_output("outdir"),
            Ok(Output::Local {
                dest: "outdir".into()
            })
        );
        assert_eq!(
            parse_output("type=tar,dest=fs.tar"),
            Ok(Output::Tar {
                dest: "fs.tar".into()
            })
        );
        assert!(parse_output("type=cacheonly")
            .unwrap_err()
            .contains("not supported"));
    }
}
