//! The `rbuild` binary: parses the command line and hands off to [`rbuild::cli`].

fn main() {
    std::process::exit(rbuild::cli::main());
}
