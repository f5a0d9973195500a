//! rbuild's own parser cases from `testdata/dockerfiles/`.
//!
//! - `errors/NAME/{Dockerfile,expected}`: `rbuild debug check` must exit 2
//!   and print exactly `expected` (location, line, caret, hint).
//! - `parser/heredocs`, `parser/flags`, `parser/instructions`: typed results
//!   checked field by field.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rbuild::parser::{
    self, CacheSharing, CommandLine, Healthcheck, Heredoc, InstructionKind, MountType, NetworkMode,
    SecurityMode, Source,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/dockerfiles")
        .join(rel)
}

fn parse_file(rel: &str) -> parser::Dockerfile {
    let text = std::fs::read_to_string(testdata(rel)).unwrap();
    parser::parse(&text, "Dockerfile").unwrap_or_else(|d| panic!("{rel}:\n{d}"))
}

fn rbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
}

#[test]
fn error_diagnostics_match_expected_text() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata("errors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(case.join("expected")).unwrap();
        let out = rbuild()
            .args(["debug", "check", "Dockerfile"])
            .current_dir(case)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || stderr != expected || !out.stdout.is_empty() {
            failures.push(format!(
                "{}: exit {:?}\n--- expected\n{expected}--- got\n{stderr}",
                case.display(),
                out.status.code()
            ));
        }
        // The library renders the same diagnostic.
        let text = String::from_utf8(std::fs::read(case.join("Dockerfile")).unwrap()).unwrap();
        let diagnostic = parser::parse(&text, "Dockerfile").unwrap_err();
        assert_eq!(format!("{diagnostic}\n"), expected, "{}", case.display());
    }
    println!("error cases checked: {}", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The README's figure: a case added means saying so there.
    assert_eq!(cases.len(), 41, "error cases (the README says 41)");
}

fn stage_kinds(df: &parser::Dockerfile, stage: usize) -> Vec<&InstructionKind> {
    df.stages[stage]
        .instructions
        .iter()
        .map(|i| &i.kind)
        .collect()
}

fn shell(cmd: &str) -> CommandLine {
    CommandLine {
        args: vec![cmd.to_string()],
        prepend_shell: true,
    }
}

fn exec(args: &[&str]) -> CommandLine {
    CommandLine {
        args: args.iter().map(|s| s.to_string()).collect(),
        prepend_shell: false,
    }
}

fn heredoc(name: &str, fd: u64, expand: bool, chomp: bool, content: &str) -> Heredoc {
    Heredoc {
        name: name.to_string(),
        file_descriptor: fd,
        expand,
        chomp,
        content: content.to_string(),
    }
}

#[test]
fn heredocs() {
    let df = parse_file("parser/heredocs/Dockerfile");
    assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    let stage = &df.stages[0];
    let kinds = stage_kinds(&df, 0);
    assert_eq!(kinds.len(), 8);

    let InstructionKind::Run(run) = kinds[0] else {
        panic!("{:?}", kinds[0])
    };
    assert_eq!(run.command, shell("<<EOF"));
    assert_eq!(
        run.heredocs,
        vec![heredoc(
            "EOF",
            0,
            true,
            false,
            "echo \"hello $HOME\"\nmkdir -p /out\n"
        )]
    );
    assert_eq!(
        (
            stage.instructions[0].span.start.line,
            stage.instructions[0].span.end.line
        ),
        (3, 6)
    );

    let InstructionKind::Run(run) = kinds[1] else {
        panic!()
    };
    assert_eq!(run.command, shell("<<\"EOT\" sh -x"));
    assert_eq!(
        run.heredocs,
        vec![heredoc("EOT", 0, false, false, "echo not $expanded\n")]
    );

    let InstructionKind::Run(run) = kinds[2] else {
        panic!()
    };
    assert_eq!(run.heredocs.len(), 2);
    assert_eq!(
        run.heredocs[0],
        heredoc("A", 0, true, false, "first ${X}\n")
    );
    assert_eq!(
        run.heredocs[1],
        heredoc("B", 3, true, true, "\tsecond\n\t\tindented\n")
    );
    assert_eq!(run.heredocs[1].body(), "second\nindented\n");

    let InstructionKind::Copy(copy) = kinds[3] else {
        panic!()
    };
    assert_eq!(copy.dest, "/etc/app/");
    assert_eq!(
        copy.sources,
        vec![
            Source::Heredoc(heredoc(
                "conf.ini",
                0,
                true,
                false,
                "[main]\nname = $NAME\n"
            )),
            Source::Heredoc(heredoc(
                "run.sh",
                0,
                false,
                true,
                "\t#!/bin/sh\n\texec app\n"
            )),
        ]
    );

    let InstructionKind::Add(add) = kinds[4] else {
        panic!()
    };
    assert_eq!(add.chmod.as_deref(), Some("0755"));
    assert_eq!(
        add.sources,
        vec![Source::Heredoc(heredoc(
            "script",
            0,
            true,
            false,
            "#!/bin/sh\necho hi\n"
        ))]
    );

    let InstructionKind::Onbuild {
        trigger,
        expression,
    } = kinds[5]
    else {
        panic!()
    };
    assert_eq!(expression, "RUN <<EOF\necho triggered\nEOF");
    // The stored expression re-parses into the same trigger.
    let again = parser::parse(&format!("FROM x\nONBUILD {expression}\n"), "Dockerfile").unwrap();
    let InstructionKind::Onbuild {
        trigger: t2,
        expression: e2,
    } = stage_kinds(&again, 0)[0]
    else {
        panic!()
    };
    assert_eq!((&t2.kind, e2), (&trigger.kind, expression));
    assert_eq!(
        trigger.span.end.line, 29,
        "the trigger spans its heredoc body"
    );
    let InstructionKind::Run(run) = &trigger.kind else {
        panic!()
    };
    assert_eq!(
        run.heredocs,
        vec![heredoc("EOF", 0, true, false, "echo triggered\n")]
    );

    // Exec form never has heredocs.
    let InstructionKind::Run(run) = kinds[6] else {
        panic!()
    };
    assert_eq!(run.command, exec(&["echo", "<<NOTHEREDOC"]));
    assert!(run.heredocs.is_empty());

    let InstructionKind::Run(run) = kinds[7] else {
        panic!()
    };
    assert_eq!(run.command, shell("echo done"));
    assert_eq!(stage.instructions[7].span.start.line, 31);
}

#[test]
fn heredoc_line_endings_and_terminators() {
    let text = "FROM x\r\nRUN <<EOF\r\none\r\nEOF\r\nRUN <<-END cat\n\tbody\n\t\tEND\nCOPY <<a <<b /d/\nA\na\nB\nb\n";
    let df = parser::parse(text, "Dockerfile").unwrap();
    let kinds = stage_kinds(&df, 0);
    let InstructionKind::Run(run) = kinds[0] else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "one\r\n");
    let InstructionKind::Run(run) = kinds[1] else {
        panic!()
    };
    assert_eq!(run.heredocs[0].content, "\tbody\n");
    let InstructionKind::Copy(copy) = kinds[2] else {
        panic!()
    };
    assert_eq!(
        copy.sources,
        vec![
            Source::Heredoc(heredoc("a", 0, true, false, "A\n")),
            Source::Heredoc(heredoc("b", 0, true, false, "B\n")),
        ]
    );
}

#[test]
fn every_flag() {
    let df = parse_file("parser/flags/Dockerfile");
    assert_eq!(df.meta_args.len(), 1);
    let stage = &df.stages[0];
    assert_eq!(stage.from.image, "${BASE}");
    assert_eq!(
        stage.from.name.as_deref(),
        Some("builder"),
        "stage names are lower-cased"
    );
    assert_eq!(stage.from.platform.as_deref(), Some("linux/amd64"));
    let kinds = stage_kinds(&df, 0);

    let InstructionKind::Run(run) = kinds[0] else {
        panic!()
    };
    assert_eq!(run.command, shell("make build"));
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.security, Some(SecurityMode::Sandbox));
    let m = &run.mounts;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].kind, MountType::Cache);
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(m[0].id.as_deref(), Some("gocache"));
    assert_eq!(m[0].sharing, Some(CacheSharing::Locked));
    assert_eq!(
        (m[0].mode, m[0].uid, m[0].gid),
        (Some(0o700), Some(1000), Some(1000))
    );
    assert!(!m[0].readonly);
    assert_eq!(m[1].kind, MountType::Bind);
    assert_eq!(m[1].from.as_deref(), Some("builder"));
    assert_eq!(m[1].source.as_deref(), Some("/src"));
    assert!(!m[1].readonly, "rw given");
    assert_eq!(m[2].kind, MountType::Tmpfs);
    assert_eq!(m[2].size.as_deref(), Some("64m"));
    assert_eq!(m[3].kind, MountType::Secret);
    assert!(m[3].required && m[3].readonly);
    assert_eq!(m[4].env.as_deref(), Some("AWS_KEY"));
    assert_eq!(m[5].kind, MountType::Ssh);

    let InstructionKind::Copy(copy) = kinds[1] else {
        panic!()
    };
    assert_eq!(copy.from.as_deref(), Some("builder"));
    assert_eq!(copy.chown.as_deref(), Some("app:app"));
    assert_eq!(copy.chmod.as_deref(), Some("u=rwX,go=rX"));
    assert!(copy.link && copy.parents);
    assert_eq!(copy.exclude, vec!["*.md", "tests/"]);
    assert_eq!(copy.sources, vec![Source::Path("./src/./pkg".into())]);
    assert_eq!(copy.dest, "/app/");

    let InstructionKind::Add(add) = kinds[2] else {
        panic!()
    };
    assert_eq!(add.chown.as_deref(), Some("1000:1000"));
    assert_eq!(add.chmod.as_deref(), Some("644"));
    assert!(add.link && add.keep_git_dir == Some(true));
    assert_eq!(add.unpack, Some(false));
    assert_eq!(add.exclude, vec!["*.tmp"]);
    assert!(add
        .checksum
        .as_deref()
        .unwrap()
        .starts_with("sha256:24454f83"));

    let InstructionKind::Healthcheck(Healthcheck::Cmd {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }) = kinds[3]
    else {
        panic!("{:?}", kinds[3])
    };
    assert_eq!(*test, exec(&["curl", "-f", "http://localhost/"]));
    assert_eq!(*interval, 30_000_000_000);
    assert_eq!(*timeout, 3_000_000_000);
    assert_eq!(*start_period, 60_000_000_000);
    assert_eq!(*start_interval, 500_000_000);
    assert_eq!(*retries, 3);

    // `--` ends the flags: what follows is a source even if it looks like one.
    let InstructionKind::Copy(copy) = kinds[4] else {
        panic!()
    };
    assert_eq!(copy.sources, vec![Source::Path("--weird-name".into())]);
}

#[test]
fn every_instruction() {
    let df = parse_file("parser/instructions/Dockerfile");
    assert_eq!(df.directives.escape, '`');
    let InstructionKind::Arg(args) = &df.meta_args[0].kind else {
        panic!()
    };
    assert_eq!(args.len(), 2);
    assert_eq!(
        (args[0].name.as_str(), args[0].default.as_deref()),
        ("VERSION", Some("1.0"))
    );
    assert_eq!(
        (args[1].name.as_str(), args[1].default.as_deref()),
        ("OTHER", None)
    );
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stages[0].from.image, "busybox:${VERSION}");
    let k = stage_kinds(&df, 0);
    let kv = |pairs: &[(&str, &str)]| -> Vec<parser::KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| parser::KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    };
    assert_eq!(
        *k[0],
        InstructionKind::Label(kv(&[
            ("org.opencontainers.image.title", "\"demo app\""),
            ("version", "$VERSION")
        ]))
    );
    assert_eq!(
        *k[1],
        InstructionKind::Label(kv(&[("legacy", "value with spaces")]))
    );
    assert_eq!(
        *k[2],
        InstructionKind::Maintainer("Jane Doe <jane@example.com>".into())
    );
    assert_eq!(
        *k[3],
        InstructionKind::Env(kv(&[("PATH", "/opt/bin:$PATH"), ("HOME", "/root")]))
    );
    assert_eq!(*k[4], InstructionKind::Env(kv(&[("LEGACY", "some value")])));
    assert_eq!(
        *k[5],
        InstructionKind::Expose(vec!["8080/tcp".into(), "53/udp".into()])
    );
    assert_eq!(*k[6], InstructionKind::User("app:app".into()));
    assert_eq!(*k[7], InstructionKind::Workdir("/opt/app".into()));
    assert_eq!(
        *k[8],
        InstructionKind::Shell(vec!["/bin/sh".into(), "-ec".into()])
    );
    let InstructionKind::Run(run) = k[9] else {
        panic!()
    };
    assert_eq!(run.command, shell("echo one     && echo two"));
    assert_eq!(*k[10], InstructionKind::Cmd(exec(&["app", "--serve"])));
    assert_eq!(*k[11], InstructionKind::Entrypoint(shell("/entry.sh")));
    assert_eq!(
        *k[12],
        InstructionKind::Volume(vec!["/data".into(), "/cache".into()])
    );
    assert_eq!(
        *k[13],
        InstructionKind::Volume(vec!["/logs".into(), "/tmp/x".into()])
    );
    assert_eq!(*k[14], InstructionKind::StopSignal("SIGTERM".into()));
    assert_eq!(*k[15], InstructionKind::Healthcheck(Healthcheck::None));
    let InstructionKind::Onbuild {
        trigger,
        expression,
    } = k[16]
    else {
        panic!()
    };
    assert_eq!(expression, "COPY --chown=app . /src");
    let InstructionKind::Copy(copy) = &trigger.kind else {
        panic!()
    };
    assert_eq!(copy.chown.as_deref(), Some("app"));
    let InstructionKind::Arg(late) = k[17] else {
        panic!()
    };
    assert_eq!(late[0].name, "LATE");
    assert_eq!(df.stages[1].from.image, "base");
    assert_eq!(stage_kinds(&df, 1), vec![&InstructionKind::Cmd(exec(&[]))]);
}

/// Runs `rbuild debug dump-ast -` with `input` on stdin.
fn dump_ast_stdin(input: &[u8]) -> std::process::Output {
    let mut child = rbuild()
        .args(["debug", "dump-ast", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dump_ast_reads_stdin_and_reports_errors() {
    let out = dump_ast_stdin(b"from a\nrun echo hi\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"a\")\n(run \"echo hi\")\n"
    );

    let out = dump_ast_stdin(b"FROM a\nENV X\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("<stdin>:2:5: ENV must have two arguments"));

    let out = rbuild()
        .args(["debug", "dump-ast", "/nonexistent/Dockerfile"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read Dockerfile /nonexistent/Dockerfile"));
}

#[test]
fn empty_flag_values_mean_no_flag() {
    let df = parser::parse("FROM a\nCOPY --from= --chown= x /y\n", "Dockerfile").unwrap();
    let InstructionKind::Copy(copy) = stage_kinds(&df, 0)[0] else {
        panic!()
    };
    assert_eq!((copy.from.as_deref(), copy.chown.as_deref()), (None, None));
}

#[test]
fn empty_continuation_lines_warn() {
    let raw = parser::parse_raw("FROM a\nRUN echo \\\n\n  hi\n", "Dockerfile").unwrap();
    assert_eq!(raw.warnings.len(), 1);
    assert_eq!(raw.warnings[0].line, 2);
}
