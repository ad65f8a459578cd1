//! Unit tests for the command line.

use super::*;

fn run(args: &[&str]) -> Options {
    match parse(std::iter::once("envoy").chain(args.iter().copied())) {
        Ok(Command::Run(options)) => *options,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn error(args: &[&str]) -> String {
    match parse(std::iter::once("envoy").chain(args.iter().copied())) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("{args:?} parsed: {other:?}"),
    }
}

/// pkg/envoy/proxy.go's argv for a typical injected sidecar.
const PILOT_AGENT: &[&str] = &[
    "-c",
    "etc/istio/proxy/envoy-rev.json",
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--concurrency",
    "2",
];

#[test]
fn pilot_agent_argv() {
    let o = run(PILOT_AGENT);
    assert_eq!(o.mode, Mode::Serve);
    assert_eq!(
        o.bootstrap.config_path.as_deref(),
        Some(std::path::Path::new("etc/istio/proxy/envoy-rev.json"))
    );
    assert_eq!(o.bootstrap.unknown_fields, UnknownFields::Ignore);
    assert_eq!(o.drain_time, Duration::from_secs(45));
    assert_eq!(o.drain_strategy, DrainStrategy::Immediate);
    assert_eq!(o.local_address_ip_version, IpVersion::V4);
    assert_eq!(o.file_flush_interval, Duration::from_millis(1000));
    assert_eq!(o.log.level, LogLevel::Warning);
    assert_eq!(o.log.components, [("misc".to_string(), LogLevel::Error)]);
    assert_eq!(o.concurrency, 2);
    assert_eq!(o.no_effect, ["--file-flush-interval-msec"]);
}

#[test]
fn defaults_are_envoys() {
    let o = run(&["-c", "b.yaml"]);
    assert_eq!(o.mode, Mode::Serve);
    assert_eq!(o.bootstrap.unknown_fields, UnknownFields::Reject);
    assert_eq!(o.log.level, LogLevel::Info);
    assert_eq!(o.drain_time, Duration::from_secs(600));
    assert_eq!(o.parent_shutdown_time, Duration::from_secs(900));
    assert_eq!(o.file_flush_interval, Duration::from_millis(10_000));
    assert_eq!(o.drain_strategy, DrainStrategy::Gradual);
    assert_eq!(o.dynamic_unknown_fields, DynamicUnknownFields::Warn);
    assert!(o.concurrency >= 1);
    assert!(o.no_effect.is_empty());
    // --concurrency 0 means 1, and empty -c/--config-yaml mean "not given", as in Envoy.
    assert_eq!(run(&["--concurrency", "0"]).concurrency, 1);
    let empty = run(&["-c", "", "--config-yaml", ""]);
    assert_eq!(
        (empty.bootstrap.config_path, empty.bootstrap.config_yaml),
        (None, None)
    );
}

#[test]
fn modes_levels_and_service_flags() {
    assert_eq!(run(&["--mode", "validate"]).mode, Mode::Validate);
    assert_eq!(run(&["--mode", "init_only"]).mode, Mode::InitOnly);
    assert_eq!(run(&["-l", "warn"]).log.level, LogLevel::Warning);
    assert_eq!(run(&["--log-level", "off"]).log.level, LogLevel::Off);
    let o = run(&[
        "--service-cluster",
        "c",
        "--service-node",
        "n",
        "--service-zone",
        "z",
    ]);
    assert_eq!(
        o.bootstrap.node,
        NodeOverrides {
            cluster: Some("c".into()),
            id: Some("n".into()),
            zone: Some("z".into())
        }
    );
    assert_eq!(
        run(&["--allow-unknown-fields"]).bootstrap.unknown_fields,
        UnknownFields::Ignore
    );
    assert_eq!(
        run(&[
            "--reject-unknown-dynamic-fields",
            "--ignore-unknown-dynamic-fields"
        ])
        .dynamic_unknown_fields,
        DynamicUnknownFields::Reject
    );
}

#[test]
fn bad_values_name_the_flag() {
    for (args, flag) in [
        (&["--concurrency", "abc"][..], "--concurrency"),
        (&["--drain-strategy", "slow"], "--drain-strategy"),
        (
            &["--local-address-ip-version", "v5"],
            "--local-address-ip-version",
        ),
        (&["-l", "bogus"], "--log-level"),
        (&["--mode", "foo"], "--mode"),
        (&["--drain-time-s", "1.5"], "--drain-time-s"),
        (&["--bogus"], "--bogus"),
        (
            &["--concurrency", "2", "--concurrency", "3"],
            "--concurrency",
        ),
        (&["--component-log-level", "misc"], "--component-log-level"),
        (
            &["--component-log-level", "misc:loud"],
            "--component-log-level",
        ),
        (
            &["--component-log-level", "nosuch:info"],
            "--component-log-level",
        ),
        (&["--stats-tag", "bad"], "--stats-tag"),
        (&["--stats-tag", "t:a.b"], "--stats-tag"),
        (
            &["--socket-path", "/tmp/s", "--socket-mode", "999"],
            "--socket-mode",
        ),
        (&["--restart-epoch", "1"], "--restart-epoch"),
        (
            &["--restart-epoch", "1", "--use-dynamic-base-id"],
            "--restart-epoch",
        ),
        (
            &["--disable-extensions", "envoy.filters.http.router"],
            "--disable-extensions",
        ),
    ] {
        let message = error(args);
        assert!(message.contains(flag), "{args:?}: {message}");
    }
    assert!(error(&["--component-log-level", "nosuch:info"]).contains("'nosuch'"));
}

#[test]
fn hot_restart_flags_are_accepted_without_effect() {
    let o = run(&[
        "--base-id",
        "7",
        "--use-dynamic-base-id",
        "--restart-epoch",
        "0",
        "--parent-shutdown-time-s",
        "5",
        "--socket-mode",
        "644",
        "--enable-core-dump",
    ]);
    assert_eq!(
        o.no_effect,
        [
            "--base-id",
            "--use-dynamic-base-id",
            "--restart-epoch",
            "--socket-mode",
            "--parent-shutdown-time-s",
            "--enable-core-dump"
        ]
    );
    // A later epoch is harmless once hot restart is off.
    run(&["--restart-epoch", "3", "--disable-hot-restart"]);
}

#[test]
fn stats_tags_and_component_lists_parse() {
    let o = run(&[
        "--stats-tag",
        "mesh_id:cluster-1",
        "--stats-tag",
        "zone:a",
        "--component-log-level",
        "upstream:debug,config:trace,http:warn",
    ]);
    assert_eq!(
        o.stats_tags,
        [
            ("mesh_id".to_string(), "cluster-1".to_string()),
            ("zone".to_string(), "a".to_string())
        ]
    );
    assert_eq!(o.log.components.len(), 3);
    assert_eq!(o.log.components[2], ("http".to_string(), LogLevel::Warning));
}

#[test]
fn rest_after_double_dash_or_ignore_rest_is_ignored() {
    assert_eq!(
        run(&["-c", "a.json", "--", "--bogus", "x"]).mode,
        Mode::Serve
    );
    assert_eq!(
        run(&["-c", "a.json", "--ignore_rest", "--bogus"]).mode,
        Mode::Serve
    );
}

#[test]
fn version_help_and_hot_restart_version() {
    assert!(matches!(
        parse(["envoy", "--version"]),
        Ok(Command::Version)
    ));
    assert!(matches!(
        parse(["envoy", "--hot-restart-version"]),
        Ok(Command::HotRestartVersion)
    ));
    let Ok(Command::Help(text)) = parse(["envoy", "--help"]) else {
        panic!("no help")
    };
    assert!(text.contains("--allow-unknown-static-fields"), "{text}");

    let line = version_line("/usr/local/bin/envoy");
    let (program, rest) = line.split_once("  version: ").unwrap();
    assert_eq!(program, "/usr/local/bin/envoy");
    let parts: Vec<&str> = rest.split('/').collect();
    assert_eq!(parts.len(), 5, "{line}");
    assert_eq!(parts[0].len(), 40);
    assert_eq!(parts[1], env!("CARGO_PKG_VERSION"));
}
