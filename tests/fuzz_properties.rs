//! No input makes the parser or the expander panic or hang.
//!
//! - Replays every input the fuzzers ever flagged (`fuzz/regressions/`),
//!   each within a time budget.
//! - Proptests: random Dockerfile-shaped text and random bytes through the
//!   same invariant checks the fuzz targets use.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rbuild::parser::selfcheck::{check_expand, check_parse};

#[test]
fn fuzz_regressions_replay_quickly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in [
        ("parse", check_parse as fn(&[u8])),
        ("expand", check_expand),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let started = Instant::now();
            check(&data);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{} took {:?}",
                path.display(),
                started.elapsed()
            );
            replayed += 1;
        }
    }
    println!("fuzz regressions replayed: {replayed}");
    assert!(replayed >= 1);
}

/// Lines that look like Dockerfile pieces, so the generator reaches deep
/// parser states instead of stopping at the first unknown word.
fn dockerfile_line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "FROM",
        "RUN",
        "CMD",
        "ENTRYPOINT",
        "SHELL",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "VOLUME",
        "MAINTAINER",
        "onbuild run",
        "# escape=`",
        "# syntax=x",
        "#",
        "",
        "\\",
    ]);
    let piece = prop::sample::select(vec![
        " ",
        "\t",
        "\\",
        "`",
        "\"",
        "'",
        "[",
        "]",
        ",",
        "=",
        "--mount=type=cache,target=/x",
        "--from=a",
        "--chmod=755",
        "--link",
        "--",
        "<<EOF",
        "<<-EOT",
        "EOF",
        "EOT",
        "$a",
        "${a:-b}",
        "${a//x/y}",
        "AS",
        "CMD",
        "NONE",
        "x",
        "\r",
        "ö",
        "\u{feff}",
    ]);
    (keyword, prop::collection::vec(piece, 0..8)).prop_map(|(k, p)| format!("{k} {}", p.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dockerfile_shaped_text_never_panics(lines in prop::collection::vec(dockerfile_line(), 0..20)) {
        check_parse(lines.join("\n").as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        check_parse(&data);
        check_expand(&data);
    }

    #[test]
    fn expansion_of_shaped_words_never_panics(
        modes in any::<u8>(),
        parts in prop::collection::vec(prop::sample::select(vec![
            "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "'", "\"", "a", "PWD", " ", "\n",
        ]), 0..40),
    ) {
        let mut data = vec![modes];
        data.extend_from_slice(parts.concat().as_bytes());
        data.extend_from_slice(b"\nPWD=/home/user\na=");
        check_expand(&data);
    }
}
