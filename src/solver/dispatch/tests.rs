use super::*;

fn opts(args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: None,
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        labels: BTreeMap::new(),
        created: "2024-01-01T00:00:00Z".to_string(),
    }
}

/// A base image config with ENV, WORKDIR, USER and ONBUILD as given.
fn base(env: &[&str], onbuild: &[&str]) -> ImageConfig {
    let mut config = super::empty_config(&Platform::host());
    let run = config.config.as_mut().unwrap();
    run.oci
        .set_env(Some(env.iter().map(|s| s.to_string()).collect()));
    run.oci.set_cmd(Some(vec!["sh".to_string()]));
    if !onbuild.is_empty() {
        run.on_build = Some(onbuild.iter().map(|s| s.to_string()).collect());
    }
    config
}

fn plan_of(text: &str, o: &PlanOptions) -> Plan {
    try_plan(text, o).unwrap()
}

fn try_plan(text: &str, o: &PlanOptions) -> Result<Plan, PlanError> {
    let df = crate::parser::parse(text, "Dockerfile").unwrap();
    plan(&df, o, &mut |name, _| match name {
        "busybox" | "busybox:latest" => Ok(base(&["PATH=/usr/bin:/bin"], &[])),
        "onbuild-base" => Ok(base(
            &["PATH=/bin"],
            &["RUN echo from-trigger", "ENV TRIGGERED=yes"],
        )),
        other => Err(format!("no image {other}")),
    })
}

/// The target stage's steps that `pick` selects.
fn target_steps<'a, T>(plan: &'a Plan, pick: impl Fn(&'a StepKind) -> Option<&'a T>) -> Vec<&'a T> {
    let steps = &plan.stages.last().unwrap().steps;
    steps.iter().filter_map(|s| pick(&s.kind)).collect()
}

fn runs(plan: &Plan) -> Vec<&RunStep> {
    target_steps(plan, |k| match k {
        StepKind::Run(r) => Some(r),
        _ => None,
    })
}

fn history(plan: &Plan) -> Vec<(String, bool)> {
    plan.stages
        .last()
        .unwrap()
        .config
        .history
        .iter()
        .map(|h| {
            (
                h.created_by().clone().unwrap(),
                h.empty_layer().unwrap_or(false),
            )
        })
        .collect()
}

fn env_of(run: &RunStep, key: &str) -> Option<String> {
    run.env
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn global_args_reach_from_lines_only_unless_redeclared() {
    let text = "ARG TAG=latest\nARG UNUSED_IN_STAGE=x\nFROM busybox:${TAG}\nRUN echo a\nARG TAG\nRUN echo b\n";
    let p = plan_of(text, &opts(&[]));
    let r = runs(&p);
    assert_eq!(env_of(r[0], "TAG"), None, "not visible before ARG TAG");
    assert_eq!(
        env_of(r[1], "TAG").as_deref(),
        Some("latest"),
        "redeclared: the global value"
    );
    let p = plan_of(text, &opts(&[("TAG", "latest")]));
    assert_eq!(env_of(runs(&p)[1], "TAG").as_deref(), Some("latest"));
}

#[test]
fn build_args_override_defaults_and_env_overrides_args() {
    let text = "FROM busybox\nARG V=default\nRUN echo $V\nENV V=from-env\nRUN echo $V\n";
    let p = plan_of(text, &opts(&[("V", "cli")]));
    let r = runs(&p);
    assert_eq!(env_of(r[0], "V").as_deref(), Some("cli"));
    assert_eq!(
        env_of(r[1], "V").as_deref(),
        Some("from-env"),
        "ENV wins over ARG"
    );
    let h = history(&p);
    assert_eq!(h[1].0, "RUN |1 V=cli /bin/sh -c echo $V # buildkit");
    assert_eq!(h[3].0, "RUN |1 V=from-env /bin/sh -c echo $V # buildkit");
    assert_eq!(h[0], ("ARG V=default".to_string(), true));
    // Not persisted: only ENV reaches the image config.
    let env = p.stages[0]
        .config
        .config
        .as_ref()
        .unwrap()
        .oci
        .env()
        .clone()
        .unwrap();
    assert!(env.contains(&"V=from-env".to_string()));
    let p = plan_of(text, &opts(&[]));
    assert_eq!(env_of(runs(&p)[0], "V").as_deref(), Some("default"));
}

#[test]
fn an_arg_without_a_value_is_declared_but_unset() {
    let p = plan_of("FROM busybox\nARG EMPTY\nRUN echo\n", &opts(&[]));
    assert_eq!(env_of(runs(&p)[0], "EMPTY"), None);
    assert_eq!(history(&p)[1].0, "RUN |1 EMPTY= /bin/sh -c echo # buildkit");
}

#[test]
fn proxy_args_reach_run_but_not_history_unless_declared() {
    let o = opts(&[("HTTP_PROXY", "http://proxy:3128")]);
    let p = plan_of("FROM busybox\nRUN echo\n", &o);
    let r = runs(&p)[0];
    assert_eq!(
        r.proxy_env,
        vec!["HTTP_PROXY=http://proxy:3128".to_string()]
    );
    assert_eq!(env_of(r, "HTTP_PROXY"), None);
    assert_eq!(history(&p)[0].0, "RUN /bin/sh -c echo # buildkit");
    assert!(p.warnings.is_empty(), "proxy args are never 'unused'");
    let p = plan_of("FROM busybox\nARG HTTP_PROXY\nRUN echo\n", &o);
    let r = runs(&p)[0];
    assert!(r.proxy_env.is_empty());
    assert_eq!(
        env_of(r, "HTTP_PROXY").as_deref(),
        Some("http://proxy:3128")
    );
}

#[test]
fn unused_build_args_are_warned_about() {
    let p = plan_of(
        "FROM busybox\nARG USED\nRUN true\n",
        &opts(&[("USED", "1"), ("foo", "2")]),
    );
    assert_eq!(
        p.warnings,
        vec!["[Warning] One or more build-args [foo] were not consumed".to_string()]
    );
}

#[test]
fn platform_args_are_global_and_need_a_declaration_in_stages() {
    let mut o = opts(&[]);
    o.target_platform = Platform::parse("linux/arm64/v8").unwrap();
    let text =
        "FROM busybox\nRUN echo\nARG TARGETARCH\nARG TARGETPLATFORM\nARG BUILDARCH\nRUN echo\n";
    let p = plan_of(text, &o);
    let r = runs(&p);
    assert_eq!(env_of(r[0], "TARGETARCH"), None);
    assert_eq!(env_of(r[1], "TARGETARCH").as_deref(), Some("arm64"));
    assert_eq!(
        env_of(r[1], "TARGETPLATFORM").as_deref(),
        Some("linux/arm64/v8")
    );
    assert_eq!(env_of(r[1], "BUILDARCH").as_deref(), Some("amd64"));
    assert_eq!(p.stages[0].config.architecture, "arm64");
}

#[test]
fn config_instructions_update_the_config_as_docker_does() {
    let text = r#"FROM busybox
MAINTAINER someone
LABEL a=1 "b c"="two words"
EXPOSE 80 443/tcp 53/udp 8000-8001
VOLUME /data /cache
STOPSIGNAL SIGINT
USER app:app
WORKDIR /srv
WORKDIR sub/../app
SHELL ["/bin/bash", "-c"]
CMD echo hi
ENTRYPOINT ["/entry"]
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ONBUILD RUN echo later
"#;
    let p = plan_of(text, &opts(&[]));
    let config = &p.stages[0].config;
    let run = config.config.as_ref().unwrap();
    assert_eq!(config.author.as_deref(), Some("someone"));
    let labels = run.oci.labels().clone().unwrap();
    assert_eq!(labels["a"], "1");
    assert_eq!(labels["b c"], "two words");
    assert_eq!(
        run.oci.exposed_ports().clone().unwrap(),
        vec!["443/tcp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    assert_eq!(run.oci.volumes().clone().unwrap(), vec!["/cache", "/data"]);
    assert_eq!(run.oci.stop_signal().as_deref(), Some("SIGINT"));
    assert_eq!(run.oci.user().as_deref(), Some("app:app"));
    assert_eq!(run.oci.working_dir().as_deref(), Some("/srv/app"));
    assert_eq!(run.shell.clone().unwrap(), vec!["/bin/bash", "-c"]);
    // CMD set in this stage survives the later ENTRYPOINT.
    assert_eq!(
        run.oci.cmd().clone().unwrap(),
        vec!["/bin/bash", "-c", "echo hi"]
    );
    assert_eq!(run.oci.entrypoint().clone().unwrap(), vec!["/entry"]);
    let health = run.healthcheck.clone().unwrap();
    assert_eq!(
        health.test,
        vec!["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    );
    assert_eq!(
        (health.interval, health.timeout, health.retries),
        (30_000_000_000, 3_000_000_000, 3)
    );
    assert_eq!(run.on_build.clone().unwrap(), vec!["RUN echo later"]);
    // CMD sets ArgsEscaped, as BuildKit does on every platform.
    assert_eq!(run.args_escaped, Some(true));
    let h: Vec<String> = history(&p).into_iter().map(|(b, _)| b).collect();
    assert_eq!(
        h,
        vec![
            "MAINTAINER someone",
            "LABEL a=1 b c=two words",
            "EXPOSE map[443/tcp:{} 53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]",
            "VOLUME [/data /cache]",
            "STOPSIGNAL SIGINT",
            "USER app:app",
            // BuildKit marks WORKDIR's layer without `# buildkit`, and
            // records nothing for ONBUILD (dockerfile2llb's dispatchWorkdir
            // and dispatchOnbuild; the differential harness agrees).
            "WORKDIR /srv",
            "WORKDIR /srv/app",
            "SHELL [/bin/bash -c]",
            "CMD [\"/bin/bash\" \"-c\" \"echo hi\"]",
            "ENTRYPOINT [\"/entry\"]",
            "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/ || exit 1\"] \"30s\" \"3s\" \"0s\" \"0s\" '\\x03'}",
        ]
    );
    // WORKDIR makes its directory as the USER of the moment.
    assert!(p.stages[0].steps.iter().any(|s| s.kind
        == StepKind::Mkdir {
            path: "/srv/app".to_string(),
            user: "app:app".to_string()
        }));
}

#[test]
fn entrypoint_resets_an_inherited_cmd() {
    let p = plan_of("FROM busybox\nENTRYPOINT [\"/e\"]\n", &opts(&[]));
    let run = p.stages[0].config.config.as_ref().unwrap();
    assert_eq!(run.oci.cmd(), &None, "the base's CMD is dropped");
}

#[test]
fn env_values_expand_and_path_is_kept() {
    let p = plan_of(
        "FROM busybox\nENV PATH=$PATH:/opt/bin A=${UNSET:-dflt}\nRUN true\n",
        &opts(&[]),
    );
    let r = runs(&p)[0];
    assert_eq!(env_of(r, "PATH").as_deref(), Some("/usr/bin:/bin:/opt/bin"));
    assert_eq!(env_of(r, "A").as_deref(), Some("dflt"));
    let p = plan_of("FROM scratch\nRUN true\n", &opts(&[]));
    assert_eq!(
        env_of(runs(&p)[0], "PATH").as_deref(),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "PATH is always set"
    );
}

#[test]
fn only_stages_the_target_needs_are_planned_in_dependency_order() {
    let text = "FROM busybox AS unused\nRUN echo unused\n\
                FROM busybox AS deps\nRUN echo deps\n\
                FROM deps AS build\nRUN echo build\n\
                FROM busybox AS tools\nRUN echo tools\n\
                FROM busybox\nCOPY --from=build /out /out\nRUN --mount=type=bind,from=tools,target=/t true\n";
    let p = plan_of(text, &opts(&[]));
    let order: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, vec![1, 2, 3, 4]);
    assert_eq!(p.stages[1].base, Base::Stage(1));
    let last = p.stages.last().unwrap();
    match &last.steps[0].kind {
        StepKind::Copy(c) => assert_eq!(c.from, Some(FromSource::Stage(2))),
        other => panic!("{other:?}"),
    }
    match &last.steps[1].kind {
        StepKind::Run(r) => assert_eq!(r.mount_sources, vec![Some(FromSource::Stage(3))]),
        other => panic!("{other:?}"),
    }
    // --target picks a stage by name and plans only what it needs.
    let mut o = opts(&[]);
    o.target = Some("BUILD".to_string());
    let p = plan_of(text, &o);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // A stage inherits its base stage's config.
    let p = plan_of(
        "FROM busybox AS a\nENV X=1\nWORKDIR /w\nFROM a\nRUN true\n",
        &opts(&[]),
    );
    let r = runs(&p)[0];
    assert_eq!(env_of(r, "X").as_deref(), Some("1"));
    assert_eq!(r.workdir, "/w");
    o.target = Some("nope".to_string());
    assert!(try_plan(text, &o)
        .unwrap_err()
        .message
        .contains("target stage \"nope\" could not be found"));
}

#[test]
fn copy_from_an_image_index_or_later_stage() {
    let p = plan_of("FROM busybox\nCOPY --from=alpine:3 /x /y\n", &opts(&[]));
    match &p.stages[0].steps[0].kind {
        StepKind::Copy(c) => {
            assert_eq!(c.from, Some(FromSource::Image("alpine:3".to_string())));
            assert_eq!(c.dest, "/y");
        }
        other => panic!("{other:?}"),
    }
    let p = plan_of(
        "FROM busybox\nRUN true\nFROM busybox\nCOPY --from=0 /x dir/\n",
        &opts(&[]),
    );
    match &p.stages.last().unwrap().steps[0].kind {
        StepKind::Copy(c) => {
            assert_eq!(c.from, Some(FromSource::Stage(0)));
            assert_eq!(c.dest, "/dir/");
        }
        other => panic!("{other:?}"),
    }
    let e = try_plan(
        "FROM busybox\nCOPY --from=1 /x /y\nFROM busybox\n",
        &opts(&[]),
    )
    .unwrap_err();
    assert!(e.message.contains("invalid stage index 1"), "{e}");
}

#[test]
fn onbuild_triggers_of_the_base_run_after_from() {
    let p = plan_of("FROM onbuild-base\nRUN echo mine\n", &opts(&[]));
    let r = runs(&p);
    assert_eq!(r[0].args, vec!["/bin/sh", "-c", "echo from-trigger"]);
    assert_eq!(env_of(r[1], "TRIGGERED").as_deref(), Some("yes"));
    let run = p.stages[0].config.config.as_ref().unwrap();
    assert_eq!(run.on_build, None, "triggers are consumed, not inherited");
}

#[test]
fn base_resolution_errors_name_the_line() {
    let e = try_plan("FROM busybox\nRUN true\nFROM missing:1\n", &opts(&[])).unwrap_err();
    assert_eq!(e.message, "line 3: FROM missing:1: no image missing:1");
    let e = try_plan("ARG EMPTY\nFROM ${EMPTY}\n", &opts(&[])).unwrap_err();
    assert!(
        e.message
            .contains("base name (${EMPTY}) should not be blank"),
        "{e}"
    );
}

#[test]
fn go_formats() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(30_000_000_000), "30s");
    assert_eq!(go_duration(300_000_000_000), "5m0s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(100_000_000), "100ms");
    assert_eq!(go_quote_rune(3), "'\\x03'");
    assert_eq!(go_quote_rune(0), "'\\x00'");
    assert_eq!(go_quote_rune(10), "'\\n'");
    assert_eq!(go_quote_rune(65), "'A'");
    assert_eq!(
        expand_port_spec("8000-8002/UDP").unwrap(),
        vec!["8000/udp", "8001/udp", "8002/udp"]
    );
    assert!(expand_port_spec("99999").is_err());
}

#[test]
fn a_stage_built_from_another_inherits_its_args() {
    let text = "FROM busybox AS a\nARG LOCAL=in-a\nENV X=1\nFROM a AS child\nRUN true\nFROM busybox\nRUN true\n";
    let mut o = opts(&[]);
    o.target = Some("child".to_string());
    let p = plan_of(text, &o);
    let r = runs(&p)[0];
    assert_eq!(env_of(r, "LOCAL").as_deref(), Some("in-a"));
    assert_eq!(env_of(r, "X").as_deref(), Some("1"));
    assert_eq!(
        history(&p).last().unwrap().0,
        "RUN |1 LOCAL=in-a /bin/sh -c true # buildkit"
    );
    let p = plan_of(text, &opts(&[]));
    assert_eq!(
        env_of(runs(&p)[0], "LOCAL"),
        None,
        "an unrelated stage does not see it"
    );
}

#[test]
fn heredoc_runs_go_through_the_shell_as_buildkit_runs_them() {
    let p = plan_of(
        "FROM busybox\nRUN <<EOF\nset -e\necho one\nEOF\n",
        &opts(&[]),
    );
    assert_eq!(
        runs(&p)[0].args,
        vec!["/bin/sh", "-c", "set -e\necho one\n"]
    );
    let p = plan_of(
        "FROM busybox\nRUN <<-EOF\n\techo tabbed\n\tEOF\n",
        &opts(&[]),
    );
    assert_eq!(runs(&p)[0].args, vec!["/bin/sh", "-c", "echo tabbed\n"]);
    let p = plan_of("FROM busybox\nRUN cat <<A > /a\nhello\nA\n", &opts(&[]));
    assert_eq!(
        runs(&p)[0].args,
        vec!["/bin/sh", "-c", "cat <<A > /a\nhello\nA"]
    );
}

#[test]
fn directives_rbuild_does_not_act_on_are_warned_about() {
    let warned = |text: &str| {
        let file = crate::parser::parse(text, "Dockerfile").unwrap();
        directive_warnings(&file.directives)
    };
    for standard in [
        "docker/dockerfile:1",
        "docker/dockerfile:1.7",
        "docker.io/docker/dockerfile:1-labs",
        "docker/dockerfile",
        "docker/dockerfile:1.4@sha256:aaaa",
    ] {
        assert!(
            warned(&format!("# syntax={standard}\nFROM busybox\n")).is_empty(),
            "{standard}"
        );
    }
    let other = warned("# syntax=docker/dockerfile-upstream:master\nFROM busybox\n");
    assert_eq!(other.len(), 1);
    assert!(other[0].contains("does not run frontend images"));
    assert!(warned("# check=skip=all\nFROM busybox\n").is_empty());
    assert!(warned("# check=skip = all;error=true\nFROM busybox\n").is_empty());
    let checks = warned("# check=skip=JSONArgsRecommended\nFROM busybox\n");
    assert_eq!(checks.len(), 1);
    assert!(checks[0].contains("no build checks"));
}

#[test]
fn an_arg_after_an_env_of_the_same_name_is_what_run_sees() {
    // BuildKit: both write the build state's environment, the later wins;
    // the image's Env keeps the ENV (the differential harness agrees).
    let p = plan_of(
        "FROM scratch\nENV V=env\nARG V=arg\nRUN echo $V\nENV V=again\nRUN echo $V\n",
        &opts(&[]),
    );
    let envs: Vec<Vec<String>> = runs(&p).iter().map(|r| r.env.clone()).collect();
    assert!(envs[0].contains(&"V=arg".to_string()), "{envs:?}");
    assert!(envs[1].contains(&"V=again".to_string()), "{envs:?}");
    let config_env = p.stages[0]
        .config
        .config
        .as_ref()
        .unwrap()
        .oci
        .env()
        .clone()
        .unwrap();
    assert!(
        config_env.contains(&"V=again".to_string()),
        "{config_env:?}"
    );
}

fn copies(plan: &Plan) -> Vec<&CopyStep> {
    target_steps(plan, |k| match k {
        StepKind::Copy(c) => Some(c),
        _ => None,
    })
}

#[test]
fn copy_link_takes_ids_refuses_names_and_is_plain_with_chmod() {
    let o = opts(&[]);
    let linked = plan_of(
        "FROM busybox\nCOPY --link --chown=1:root a /a\nCOPY --link --chmod=600 --chown=app a /b\n",
        &o,
    );
    let c = copies(&linked);
    assert!(c[0].spec.link, "numeric ids and root keep --link");
    assert!(!c[1].spec.link, "--chmod makes it an ordinary copy");
    for chown in ["app", "1:staff", "app:0"] {
        let e = try_plan(
            &format!("FROM busybox\nCOPY --link --chown={chown} a /a\n"),
            &o,
        )
        .unwrap_err();
        assert!(
            e.message.contains("line 2") && e.message.contains("--link"),
            "{chown}: {}",
            e.message
        );
    }
}

#[test]
fn heredoc_copy_bodies_expand_unless_the_delimiter_is_quoted() {
    let o = opts(&[("NAME", "world")]);
    let plan = plan_of(
        "FROM busybox\nARG NAME\nENV Q=x\nCOPY <<A <<\"B\" /d/\n\"hi\" '$NAME' ${Q}\\$Q\nA\nraw $NAME\nB\n",
        &o,
    );
    let bodies: Vec<String> = copies(&plan)[0]
        .spec
        .sources
        .iter()
        .map(|s| match s {
            crate::parser::Source::Heredoc(h) => h.body(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies, ["\"hi\" 'world' x$Q\n", "raw $NAME\n"]);
}
