//! The command line: flags in, exit codes out.
//!
//! This module owns argument parsing (clap) and user-facing output. It
//! calls into the library modules and maps their errors to the exit codes
//! DESIGN.md fixes: 0 ok, 1 build failed, 2 usage or Dockerfile error,
//! 3 environment problem.

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::parser::{self, InstructionKind};

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for usage errors and Dockerfile errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, with no daemon and no privileges"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect how rbuild reads a Dockerfile.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Print the version.
    Version,
    /// Internal: the single-threaded sandbox helper (spec on stdin).
    #[command(name = "__sandbox", hide = true)]
    Sandbox,
}

#[derive(Subcommand, Debug)]
enum DebugCommand {
    /// Print the parse tree in BuildKit's dump format (FILE `-` = stdin).
    DumpAst {
        /// The Dockerfile to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Parse and validate a Dockerfile, then summarise its stages.
    Check {
        /// The Dockerfile to read, or `-` for standard input.
        file: PathBuf,
    },
}

/// Reads a Dockerfile from a path or stdin; returns (display name, text).
fn read_dockerfile(path: &PathBuf) -> Result<(String, String), String> {
    let mut bytes = Vec::new();
    let name = if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the Dockerfile from standard input: {e}"))?;
        "<stdin>".to_string()
    } else {
        bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read Dockerfile {}: {e}", path.display()))?;
        path.display().to_string()
    };
    // Invalid UTF-8 is replaced rather than rejected, as Go's parser would
    // carry the bytes through.
    Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
}

fn dump_ast(path: &PathBuf) -> i32 {
    let (name, text) = match read_dockerfile(path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    match parser::parse_raw(&text, &name) {
        Ok(raw) => {
            print!("{}", parser::dump(&raw));
            for w in &raw.warnings {
                eprintln!("{name}:{}: warning: {}", w.line, w.message);
            }
            EXIT_OK
        }
        Err(diagnostic) => {
            eprintln!("{diagnostic}");
            EXIT_USAGE
        }
    }
}

fn check(path: &PathBuf) -> i32 {
    let (name, text) = match read_dockerfile(path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let dockerfile = match parser::parse(&text, &name) {
        Ok(d) => d,
        Err(diagnostic) => {
            eprintln!("{diagnostic}");
            return EXIT_USAGE;
        }
    };
    for w in &dockerfile.warnings {
        eprintln!("{name}:{}: warning: {}", w.line, w.message);
    }
    let total: usize = dockerfile
        .stages
        .iter()
        .map(|s| s.instructions.len() + 1)
        .sum();
    println!(
        "{name}: ok, {} stage(s), {} instruction(s), {} global ARG(s)",
        dockerfile.stages.len(),
        total + dockerfile.meta_args.len(),
        dockerfile.meta_args.len()
    );
    for (i, stage) in dockerfile.stages.iter().enumerate() {
        let label = stage
            .from
            .name
            .as_ref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let runs = stage
            .instructions
            .iter()
            .filter(|i| matches!(i.kind, InstructionKind::Run(_)))
            .count();
        println!(
            "  stage {i}{label}: FROM {} ({} instructions, {runs} RUN)",
            stage.from.image,
            stage.instructions.len()
        );
    }
    EXIT_OK
}

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Version => {
            println!("rbuild {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Debug(DebugCommand::DumpAst { file }) => dump_ast(&file),
        Command::Debug(DebugCommand::Check { file }) => check(&file),
        Command::Sandbox => crate::executor::sandbox::helper_main(),
    }
}
