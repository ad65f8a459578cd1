#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `--mode validate` differential tests: each bootstrap gets the verdict we expect from our
//! binary and, when Envoy is installed, the same exit code from the real Envoy (CI installs
//! it; without it the Envoy half prints SKIPPED). When a bootstrap is bad, our error must
//! name the field.
//!
//! Every case here fails or passes at the proto level; Envoy's deeper checks (PGV rules,
//! building listeners and clusters) are not ours yet, so no case depends on them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROXY: &str = env!("CARGO_BIN_EXE_proxy");

/// One bootstrap, how to run it, what both binaries must say, and what our error must name.
struct Case {
    name: &'static str,
    file: &'static str,
    contents: String,
    args: &'static [&'static str],
    ok: bool,
    /// For a bad case: text our error must contain (the field path).
    names: &'static str,
}

const ALLOW: &[&str] = &["--allow-unknown-static-fields"];

fn admin() -> &'static str {
    "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n"
}

/// A bootstrap with one STATIC cluster; `extra` lines are added to the cluster.
fn with_cluster(extra: &str) -> String {
    format!(
        "{}static_resources:\n  clusters:\n  - name: c1\n    type: STATIC\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: c1\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: 8080 }}\n",
        admin()
    )
}

/// A bootstrap with a tcp_proxy listener to c1; `typed_config` lines are indented 10.
fn with_tcp_proxy(typed_config: &str) -> String {
    let cluster = with_cluster("");
    let listener = format!(
        "  listeners:\n  - name: l1\n    address:\n      socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n{typed_config}"
    );
    cluster.replace("  clusters:\n", &format!("{listener}  clusters:\n"))
}

const TCP_PROXY: &str = "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: s\n          cluster: c1\n";
const TYPED_STRUCT: &str = "          \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n          type_url: type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          value:\n            stat_prefix: s\n            cluster: c1\n";

fn case(name: &'static str, contents: String, ok: bool, names: &'static str) -> Case {
    Case {
        name,
        file: "bootstrap.yaml",
        contents,
        args: &[],
        ok,
        names,
    }
}

fn good_cases() -> Vec<Case> {
    vec![
        case("minimal", admin().into(), true, ""),
        case("cluster", with_cluster(""), true, ""),
        case("tcp proxy listener", with_tcp_proxy(TCP_PROXY), true, ""),
        case(
            "@type last in typed_config",
            with_tcp_proxy(
                "          stat_prefix: s\n          cluster: c1\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n",
            ),
            true,
            "",
        ),
        case("TypedStruct (udpa)", with_tcp_proxy(TYPED_STRUCT), true, ""),
        case(
            "TypedStruct (xds)",
            with_tcp_proxy(&TYPED_STRUCT.replace("udpa.type.v1", "xds.type.v3")),
            true,
            "",
        ),
        case("enum in lower case", with_cluster("    lb_policy: least_request\n"), true, ""),
        case("enum by number", with_cluster("    dns_lookup_family: 1\n"), true, ""),
        case(
            "camelCase names",
            with_cluster("    perConnectionBufferLimitBytes: 1024\n"),
            true,
            "",
        ),
        case(
            "quoted and hex integers",
            with_cluster("    per_connection_buffer_limit_bytes: \"0x400\"\n"),
            true,
            "",
        ),
        case(
            "repeated YAML key: last wins",
            with_cluster("    lb_policy: RANDOM\n    lb_policy: ROUND_ROBIN\n"),
            true,
            "",
        ),
        case(
            "message field by both spellings: merged",
            with_cluster(
                "    common_lb_config: {healthy_panic_threshold: {value: 10}}\n    commonLbConfig: {update_merge_window: 1s}\n",
            ),
            true,
            "",
        ),
        case("null means unset", with_cluster("    dns_refresh_rate: null\n"), true, ""),
        case(
            "plain YAML float read as text for a string (yaml-cpp)",
            format!("{}node: {{id: 1.20, cluster: 1e3, metadata: {{y: .5}}}}\n", admin()),
            true,
            "",
        ),
        Case {
            name: "JSON with a trailing comma",
            file: "bootstrap.json",
            contents: r#"{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0,}}},}"#.into(),
            args: &[],
            ok: true,
            names: "",
        },
        Case {
            name: "--config-yaml merged into the file",
            args: &["--config-yaml", "static_resources: {clusters: [{name: c2, type: STATIC}]}"],
            ..case("merge", with_cluster(""), true, "")
        },
    ]
}

/// Unknown fields, enum values and types, with and without --allow-unknown-static-fields.
fn unknown_field_cases() -> Vec<Case> {
    vec![
        case(
            "unknown field",
            with_cluster("    colour: blue\n"),
            false,
            "static_resources.clusters[0].colour",
        ),
        Case {
            args: ALLOW,
            ..case(
                "unknown field, allowed",
                with_cluster("    colour: blue\n"),
                true,
                "",
            )
        },
        case(
            "unknown field in typed_config",
            with_tcp_proxy(&format!("{TCP_PROXY}          colour: blue\n")),
            false,
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.colour",
        ),
        Case {
            args: ALLOW,
            ..case(
                "unknown field in typed_config, allowed",
                with_tcp_proxy(&format!("{TCP_PROXY}          colour: blue\n")),
                true,
                "",
            )
        },
        case(
            "unknown field in a TypedStruct",
            with_tcp_proxy(&format!("{TYPED_STRUCT}            colour: blue\n")),
            false,
            "typed_config.value.colour",
        ),
        Case {
            args: ALLOW,
            ..case(
                "unknown field in a TypedStruct, allowed",
                with_tcp_proxy(&format!("{TYPED_STRUCT}            colour: blue\n")),
                true,
                "",
            )
        },
    ]
}

/// Values that do not fit the schema.
fn bad_value_cases() -> Vec<Case> {
    vec![
        case(
            "Duration without unit",
            with_cluster("    dns_refresh_rate: 5\n"),
            false,
            "static_resources.clusters[0].dns_refresh_rate: invalid Duration 5",
        ),
        case(
            "Duration in minutes",
            with_cluster("    dns_refresh_rate: 1m\n"),
            false,
            "static_resources.clusters[0].dns_refresh_rate",
        ),
        case(
            "negative Duration in typed_config",
            with_tcp_proxy(&format!("{TCP_PROXY}          idle_timeout: -1s\n")),
            false,
            "typed_config.idle_timeout",
        ),
        case(
            "Duration in a TypedStruct",
            with_tcp_proxy(&format!("{TYPED_STRUCT}            idle_timeout: 5\n")),
            false,
            "typed_config.value.idle_timeout",
        ),
        case(
            "unknown enum value",
            with_cluster("    lb_policy: FASTEST\n"),
            false,
            "static_resources.clusters[0].lb_policy",
        ),
        Case {
            args: ALLOW,
            // Envoy counts an unknown enum name as an unknown field.
            ..case(
                "unknown enum value, allowed",
                with_cluster("    lb_policy: FASTEST\n"),
                true,
                "",
            )
        },
        case(
            "unknown @type",
            with_tcp_proxy(
                "          \"@type\": type.googleapis.com/acme.v1.Filter\n          stat_prefix: s\n",
            ),
            false,
            "typed_config: unknown @type \"type.googleapis.com/acme.v1.Filter\"",
        ),
        Case {
            args: ALLOW,
            ..case(
                "unknown @type, even allowed",
                with_tcp_proxy("          \"@type\": type.googleapis.com/acme.v1.Filter\n"),
                false,
                "typed_config: unknown @type",
            )
        },
        case(
            "@type without a host",
            with_tcp_proxy(
                "          \"@type\": envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: s\n",
            ),
            false,
            "typed_config: invalid @type",
        ),
        case(
            "port out of range",
            with_cluster("").replace("port_value: 8080", "port_value: 99999999999"),
            false,
            "socket_address.port_value",
        ),
        case(
            "number for a string",
            with_cluster("").replace("cluster_name: c1", "cluster_name: 123"),
            false,
            "load_assignment.cluster_name",
        ),
        case(
            "YAML 1.1 boolean for a string",
            format!("{}node: {{id: n}}\n", admin()),
            false,
            "node.id",
        ),
        case(
            "YAML merge key (yaml-cpp has none)",
            format!("{}node:\n  <<: {{id: n1}}\n", admin()),
            false,
            "node.<<: unknown field",
        ),
        case(
            "two members of a oneof",
            with_cluster("").replace("port_value: 8080", "port_value: 8080, named_port: http"),
            false,
            "socket_address.named_port",
        ),
    ]
}

/// Bootstraps that parse but that Envoy's validation server rejects when it builds the
/// listeners and clusters.
fn conversion_cases() -> Vec<Case> {
    let two_listeners = with_tcp_proxy(TCP_PROXY).replace(
        "  clusters:\n",
        &format!(
            "  - name: l1\n    address:\n      socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n{TCP_PROXY}  clusters:\n"
        ),
    );
    let same_chains = with_tcp_proxy(TCP_PROXY).replace(
        "    filter_chains:\n    - filters:\n",
        &format!(
            "    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n{TCP_PROXY}    - filters:\n"
        ),
    );
    let two_clusters = format!(
        "{}{}",
        with_cluster(""),
        with_cluster("").split_once("  clusters:\n").unwrap().1
    );
    vec![
        // Envoy keeps the first static listener of a name.
        case("duplicate listener names", two_listeners, true, ""),
        case(
            "two chains with the same match",
            same_chains,
            false,
            "error adding listener 'l1'",
        ),
        case(
            "duplicate cluster names",
            two_clusters,
            false,
            "duplicate cluster 'c1'",
        ),
        case(
            "STATIC cluster with a host name",
            with_cluster("").replace("address: 127.0.0.1", "address: localhost"),
            false,
            "static_resources.clusters[0]",
        ),
        case(
            "tcp_proxy without a cluster",
            with_tcp_proxy(
                "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: s\n",
            ),
            false,
            "static_resources.listeners[0]",
        ),
    ]
}

#[test]
fn conversion_errors_fail_in_both() {
    check(conversion_cases(), "conversion_errors_fail_in_both");
}

/// Documents that are not JSON/YAML, or not an object.
fn bad_syntax_cases() -> Vec<Case> {
    vec![
        case(
            "malformed YAML",
            format!("{}  bogus: [\n", admin()),
            false,
            "invalid YAML",
        ),
        case("empty YAML", String::new(), false, "(top level)"),
        Case {
            name: "malformed JSON",
            file: "bootstrap.json",
            contents: r#"{"admin": {"#.into(),
            args: &[],
            ok: false,
            names: "invalid JSON",
        },
        Case {
            name: "YAML in a .json file",
            file: "bootstrap.json",
            contents: admin().into(),
            args: &[],
            ok: false,
            names: "invalid JSON at line 1",
        },
        Case {
            name: "a JSON key given twice",
            file: "bootstrap.json",
            contents:
                r#"{"admin": {"address": {"socket_address": {"port_value": 1, "port_value": 2}}}}"#
                    .into(),
            args: &[],
            ok: false,
            names: "admin.address.socket_address.port_value: \"port_value\" is set twice",
        },
    ]
}

fn run(binary: &Path, dir: &Path, case: &Case) -> Output {
    let path = dir.join(case.file);
    std::fs::write(&path, &case.contents).unwrap();
    Command::new(binary)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .args(case.args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs every case through our binary, and through Envoy when it is installed.
fn check(cases: Vec<Case>, test: &str) {
    let envoy = e2e::require_envoy(test);
    let mut failures = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let ours = run(Path::new(PROXY), dir.path(), &case);
        let stderr = String::from_utf8_lossy(&ours.stderr);
        if ours.status.success() != case.ok {
            failures.push(format!("{}: we said {} ({stderr})", case.name, ours.status));
        }
        if !case.ok && !stderr.contains(case.names) {
            failures.push(format!(
                "{}: our error does not name {:?}: {stderr}",
                case.name, case.names
            ));
        }
        if let Some(envoy) = &envoy {
            let theirs = run(envoy, dir.path(), &case);
            if theirs.status.code() != ours.status.code() {
                failures.push(format!(
                    "{}: Envoy exited {:?}, we exited {:?}; Envoy said: {}",
                    case.name,
                    theirs.status.code(),
                    ours.status.code(),
                    String::from_utf8_lossy(&theirs.stderr)
                        .lines()
                        .find(|l| l.contains("critical"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn good_bootstraps_validate_in_both() {
    check(good_cases(), "good_bootstraps_validate_in_both");
}

#[test]
fn unknown_fields_get_the_same_verdict_in_both() {
    check(
        unknown_field_cases(),
        "unknown_fields_get_the_same_verdict_in_both",
    );
}

#[test]
fn bad_values_fail_in_both_and_we_name_the_field() {
    check(
        bad_value_cases(),
        "bad_values_fail_in_both_and_we_name_the_field",
    );
}

#[test]
fn bad_syntax_fails_in_both() {
    check(bad_syntax_cases(), "bad_syntax_fails_in_both");
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/istio-bootstrap")
        .join(format!("{name}_golden.json"))
}

#[test]
fn istio_goldens_validate_in_both() {
    let cases = [
        "default",
        "running",
        "all",
        "stats_inclusion",
        "tracing_zipkin",
    ]
    .into_iter()
    .map(|name| Case {
        name: "istio golden",
        file: "envoy-rev.json",
        contents: std::fs::read_to_string(golden(name)).unwrap(),
        args: ALLOW,
        ok: true,
        names: "",
    })
    .collect();
    check(cases, "istio_goldens_validate_in_both");
}

/// The one expected difference: upstream Envoy lacks Istio's extensions, which istio-proxy
/// (the Envoy build Istio ships, which we replace) has. We accept the ambient bootstrap;
/// upstream Envoy refuses it for exactly that reason and no other.
#[test]
fn ambient_golden_differs_only_by_istios_extension() {
    let case = Case {
        name: "ambient",
        file: "envoy-rev.json",
        contents: std::fs::read_to_string(golden("ambient")).unwrap(),
        args: ALLOW,
        ok: true,
        names: "",
    };
    let dir = tempfile::tempdir().unwrap();
    let ours = run(Path::new(PROXY), dir.path(), &case);
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let Some(envoy) = e2e::require_envoy("ambient_golden_differs_only_by_istios_extension") else {
        return;
    };
    let theirs = run(&envoy, dir.path(), &case);
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    assert_eq!(theirs.status.code(), Some(1));
    assert!(
        stderr.contains(
            "Didn't find a registered implementation for 'metadata_discovery' with type URL: \
             'istio.workload.BootstrapExtension'"
        ),
        "{stderr}"
    );
}
