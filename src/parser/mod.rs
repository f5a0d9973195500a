//! Dockerfile text → syntax tree → typed instructions. Pure: no I/O.
//!
//! The parser owns everything about reading a Dockerfile and nothing about
//! building it. [`parse_raw`] reads the text into [`RawNode`]s exactly as
//! BuildKit's parser would (and [`dump`] prints them in BuildKit's
//! conformance format); [`parse`] goes on to type every instruction,
//! validate its flags and arguments, and group the file into stages.
//! Errors come back as a [`Diagnostic`] that names `file:line:column`,
//! shows the line and a caret, and hints at a fix.
//!
//! [`shell::Lexer`] implements BuildKit's variable expansion and word
//! splitting; the solver uses it once build arguments are known.
//!
//! Must not touch: files, processes, the network, build state.

pub mod ast;
pub mod diagnostic;
pub mod instructions;
mod json;
pub mod mount;
mod pattern;
mod quote;
pub mod reader;
#[doc(hidden)]
pub mod selfcheck;
pub mod shell;

pub use ast::{Heredoc, Position, RawFlag, RawNode, Span};
pub use diagnostic::Diagnostic;
pub use instructions::{
    ArgDecl, CommandLine, CopyLike, Dockerfile, From, Healthcheck, Instruction, InstructionKind,
    KeyValue, NetworkMode, Run, SecurityMode, Source, Stage,
};
pub use mount::{CacheSharing, Mount, MountType};
pub use quote::go_quote;
pub use reader::{Directives, RawDockerfile, Warning};

/// Reads `source` into raw nodes (BuildKit's parse tree), without typing.
/// `file` names the Dockerfile in diagnostics.
pub fn parse_raw(source: &str, file: &str) -> Result<RawDockerfile, Diagnostic> {
    reader::read(source)
        .map_err(|e| Diagnostic::new(file, source, e.position, e.width, e.message, None))
}

/// Parses and validates `source` into typed stages.
pub fn parse(source: &str, file: &str) -> Result<Dockerfile, Diagnostic> {
    let raw = parse_raw(source, file)?;
    let to_diagnostic = |e: instructions::TypeError| {
        Diagnostic::new(file, source, e.position, e.width, e.message, e.hint)
    };
    let typed = raw
        .nodes
        .iter()
        .map(instructions::type_node)
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_diagnostic)?;
    let (meta_args, stages) = instructions::group_stages(typed).map_err(to_diagnostic)?;
    Ok(Dockerfile {
        directives: raw.directives,
        meta_args,
        stages,
        warnings: raw.warnings,
    })
}

/// BuildKit's dump of a parsed file: one `(instruction …)` per line.
pub fn dump(raw: &RawDockerfile) -> String {
    ast::dump_nodes(&raw.nodes)
}
