//! `rbuild [build] [OPTIONS] CONTEXT`: the docker-build-shaped command.
//!
//! It reads the Dockerfile and `.dockerignore`, runs the build, records
//! the image under its tags in the local image store, and sends it where
//! the flags say: a registry (`--push`), an OCI layout or docker archive
//! (`--output`). The flags follow `docker build`/buildx.

use std::path::PathBuf;

use super::{
    load_dockerfile, prepare_build, BuildFlags, EXIT_BUILD_FAILED, EXIT_ENVIRONMENT, EXIT_OK,
    EXIT_USAGE,
};
use crate::image::layout::StoredImage;
use crate::image::reference::Reference;

/// `rbuild build`'s flags.
#[derive(clap::Args, Debug)]
pub(super) struct BuildCommand {
    /// The build context directory.
    #[arg(default_value = ".")]
    context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name the image (repeatable): NAME[:TAG].
    #[arg(short = 't', long = "tag")]
    tag: Vec<String>,
    /// Push the image to the registry of every tag.
    #[arg(long)]
    push: bool,
    /// Where the image also goes: type=oci|docker,dest=PATH[,tar=false] or type=registry.
    #[arg(short = 'o', long = "output")]
    output: Vec<String>,
    /// Write the image id (the config digest) to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Take base images from their registry even when one is stored here.
    #[arg(long)]
    pull: bool,
    /// Add a label to the image: KEY=VALUE (repeatable).
    #[arg(long = "label")]
    label: Vec<String>,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(flatten)]
    build: BuildFlags,
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// An OCI image layout: a tar file, or a directory with `tar=false`.
    Oci { dest: PathBuf, tar: bool },
    /// A `docker save` archive.
    Docker { dest: PathBuf },
    /// The registry of every tag (as `--push`).
    Registry,
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
                return Err(format!(
                    "--output {spec}: type=local (a filesystem export) is not supported yet"
                ));
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
        Some(other) => Err(format!(
            "--output {spec}: type={other} is not supported yet (oci, docker, registry are)"
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

pub(super) fn build(mut args: BuildCommand) -> i32 {
    // Kept until the build is done: the context read from standard input.
    let mut _stdin_dir = None;
    if args.context.as_os_str() == "-" {
        if args.file.as_deref() == Some(std::path::Path::new("-")) {
            eprintln!("error: the context and the Dockerfile cannot both come from standard input");
            return EXIT_USAGE;
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
                args.context = context;
                _stdin_dir = Some(dir);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    if !args.context.is_dir() {
        eprintln!(
            "error: the build context {} is not a directory",
            args.context.display()
        );
        return EXIT_USAGE;
    }
    let (_, dockerfile) = match load_dockerfile(&dockerfile_path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut tags = Vec::new();
    for tag in &args.tag {
        match tag.parse::<Reference>() {
            Ok(r) => tags.push(r),
            Err(e) => {
                eprintln!("error: --tag {tag}: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let mut outputs = Vec::new();
    for spec in &args.output {
        match parse_output(spec) {
            Ok(o) => outputs.push(o),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let push = args.push || outputs.contains(&Output::Registry);
    if push && tags.is_empty() {
        eprintln!("error: --push needs at least one --tag to push to");
        return EXIT_USAGE;
    }
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.label {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let (executor, mut options) =
        match prepare_build(&args.build, Some(args.context.clone()), &dockerfile_path) {
            Ok(prepared) => prepared,
            Err(code) => return code,
        };
    options.labels = labels;
    options.pull = args.pull;
    let quiet = args.quiet;
    let mode = if quiet {
        crate::progress::Mode::Quiet
    } else {
        args.build.progress.resolve()
    };
    let mut renderer = crate::progress::renderer(mode);
    let mut phases = crate::progress::Phases::default();
    let mut log = |event: &crate::progress::Event| renderer.event(event);
    let built = match crate::builder::build(&dockerfile, &options, executor, &mut log) {
        Ok(built) => built,
        Err(message) => {
            drop(renderer);
            eprintln!("error: {message}");
            return EXIT_BUILD_FAILED;
        }
    };
    phases.mark("build");
    let image = &built.image;
    let local = crate::image::local::LocalImages::open(&options.storage);
    for tag in &tags {
        if let Err(e) = local.put(tag, image) {
            eprintln!("error: recording {tag}: {e}");
            return EXIT_ENVIRONMENT;
        }
    }
    if let Err(e) = write_outputs(&built.store, image, &tags, &outputs) {
        eprintln!("error: {e}");
        return EXIT_ENVIRONMENT;
    }
    if push {
        if let Err(e) = push_image(&built.store, image, &tags, &options.insecure_registries) {
            eprintln!("error: {e}");
            return EXIT_ENVIRONMENT;
        }
        for tag in &tags {
            renderer.event(&crate::progress::Event::Note(format!(
                "pushed {tag}@{}",
                image.manifest_digest
            )));
        }
    }
    // The image is where it should be: let collection see this build's
    // data again, and apply the configured size cap.
    drop(built.lease);
    match crate::gc::configured_cap(&options.storage) {
        Ok(Some(cap)) => match crate::gc::prune(
            &options.storage,
            crate::gc::PruneOptions {
                all: false,
                keep_storage: Some(cap),
            },
        ) {
            Ok(report) if report.freed > 0 => {
                renderer.event(&crate::progress::Event::Note(format!(
                    "size cap {}: removed {} cache entries, {} blobs, {} snapshots ({})",
                    crate::executor::cgroup::human_bytes(cap),
                    report.entries,
                    report.blobs,
                    report.snapshots,
                    crate::executor::cgroup::human_bytes(report.freed)
                )))
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: applying the size cap: {e}"),
        },
        Ok(None) => {}
        Err(e) => eprintln!("warning: {e}"),
    }
    if let Some(path) = &args.iidfile {
        if let Err(e) = std::fs::write(path, image.config_digest.to_string()) {
            eprintln!("error: --iidfile {}: {e}", path.display());
            return EXIT_ENVIRONMENT;
        }
    }
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
        size: image.manifest_size
            + image.config_size
            + image.layers.iter().map(|l| l.size).sum::<u64>(),
    });
    if quiet {
        println!("{}", image.config_digest);
    }
    EXIT_OK
}

fn write_outputs(
    store: &crate::cache::ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    outputs: &[Output],
) -> Result<(), String> {
    use crate::image::layout;
    let images = [(image, tags)];
    for output in outputs {
        let written = match output {
            Output::Oci { dest, tar: false } => layout::write_oci_layout_dir(store, dest, &images)
                .map_err(|e| format!("{}: {e}", dest.display())),
            Output::Oci { dest, tar: true } => layout::write_to_file(dest, |file| {
                layout::write_oci_layout_tar(store, file, &images)
            })
            .map_err(|e| format!("{}: {e}", dest.display())),
            Output::Docker { dest } => layout::write_to_file(dest, |file| {
                layout::write_docker_archive(store, file, &images)
            })
            .map_err(|e| format!("{}: {e}", dest.display())),
            Output::Registry => Ok(()),
        };
        written?;
    }
    Ok(())
}

/// Pushes the image to every tag's registry (credentials from
/// `$DOCKER_CONFIG`; plain HTTP for loopback and insecure registries).
fn push_image(
    store: &crate::cache::ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    insecure: &[String],
) -> Result<(), String> {
    let (client, runtime) = crate::registry::blocking_client(insecure)?;
    runtime
        .block_on(client.push(store, &image.manifest_digest, tags, None))
        .map_err(|e| e.to_string())
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
        assert!(parse_output("outdir")
            .unwrap_err()
            .contains("not supported"));
    }
}
