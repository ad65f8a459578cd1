//! deploy/kubernetes/: every manifest is a valid object of its kind (Kubernetes kinds
//! against the API's own schemas, strictly; Istio and cert-manager kinds against their
//! fields and enums), the kustomize overlay builds and puts every service in the mesh with
//! our template, and the injection templates refer to what our images contain.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{TempDir, read, root};

const VALIDATOR: &str = "tests/k8s/validate_manifests.py";

/// Runs the validator on `args` (with `stdin` piped in when given). `None` (after saying
/// why) when its Python dependencies are missing.
fn run_validator(test: &str, args: &[&str], stdin: Option<&str>) -> Option<(bool, String)> {
    let mut child = Command::new("python3")
        .arg(root().join(VALIDATOR))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) {
        eprintln!("SKIPPED {test}: {text} (scripts/install-deps.sh installs it)");
        return None;
    }
    Some((out.status.success(), text))
}

#[test]
fn manifests_are_valid_kubernetes_and_istio_objects() {
    let Some((ok, report)) = run_validator(
        "manifests_are_valid_kubernetes_and_istio_objects",
        &["deploy/kubernetes"],
        None,
    ) else {
        return;
    };
    assert!(ok, "{report}");
    let count: usize = report
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(count >= 20, "only {count} documents checked: {report}");
}

#[test]
fn validator_rejects_what_the_api_server_or_istio_would() {
    let dir = TempDir::new("bad-manifests");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containerz: []\n      containers: [{name: a, image: x}]\n\
         ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICTER}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - from:\n    - source: {principal: [cluster.local/ns/a/sa/b]}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  http:\n  - route: [{destination: {port: {number: 80}}}]\n\
         ---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    )
    .unwrap();
    let Some((ok, report)) = run_validator(
        "validator_rejects_what_the_api_server_or_istio_would",
        &[path.to_str().unwrap()],
        None,
    ) else {
        return;
    };
    assert!(!ok, "broken manifests passed: {report}");
    for expected in [
        "'containerz' was unexpected",
        "'STRICTER' is not one of",
        "HTTPS servers need tls settings",
        "unknown field 'principal'",
        "missing required field 'hosts'",
        "missing required field 'host'",
        "unknown kind example.com/v1 Widget",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
}

/// Splits a multi-document YAML stream and parses each document.
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

#[test]
fn kustomize_overlay_puts_every_deployment_in_the_mesh_with_our_template() {
    let out = match Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes/kustomize/overlays/mesh"])
        .current_dir(root())
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!(
                "SKIPPED kustomize_overlay_puts_every_deployment_in_the_mesh_with_our_template: \
                 kubectl (with its built-in kustomize) is not installed"
            );
            return;
        }
    };
    let built = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&built);
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    let base = documents(&read("deploy/kubernetes/kustomize/base/frontend.yaml"))
        .into_iter()
        .chain(documents(&read(
            "deploy/kubernetes/kustomize/base/backend.yaml",
        )))
        .filter(|d| d["kind"] == "Deployment")
        .count();
    assert_eq!(deployments.len(), base, "{built}");
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(d["metadata"]["namespace"], "shop", "{name}");
        let pod = &d["spec"]["template"]["metadata"];
        assert_eq!(pod["labels"]["sidecar.istio.io/inject"], "true", "{name}");
        assert_eq!(
            pod["annotations"]["inject.istio.io/templates"], "sidecar,ours",
            "{name}"
        );
        // The patch added to the base rather than replacing it.
        assert_eq!(pod["labels"]["app"], name, "{name}");
        assert!(d["spec"]["template"]["spec"]["containers"][0]["image"].is_string());
    }
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "PeerAuthentication" && d["spec"]["mtls"]["mode"] == "STRICT")
    );
    if let Some((ok, report)) = run_validator(
        "kustomize_overlay_puts_every_deployment_in_the_mesh_with_our_template",
        &["-"],
        Some(&built),
    ) {
        assert!(ok, "the built overlay is not valid:\n{report}");
    }
}

/// The injector's values, from the IstioOperator and from the Helm values file.
fn injector_values() -> (Value, Value) {
    let operator: Value =
        serde_saphyr::from_str(&read("deploy/kubernetes/injection/istio-operator.yaml")).unwrap();
    let helm: Value =
        serde_saphyr::from_str(&read("deploy/kubernetes/injection/helm-values.yaml")).unwrap();
    (
        operator["spec"]["values"]["sidecarInjectorWebhook"].clone(),
        helm["sidecarInjectorWebhook"].clone(),
    )
}

#[test]
fn injection_templates_swap_in_our_binaries_and_nothing_else() {
    let (operator, helm) = injector_values();
    assert_eq!(
        operator, helm,
        "istio-operator.yaml and helm-values.yaml differ"
    );
    assert_eq!(
        operator["defaultTemplates"],
        serde_json::json!(["sidecar", "ours"])
    );

    let ours = operator["templates"]["ours"]
        .as_str()
        .expect("an `ours` template");
    // The init container runs our iptables-init, installed where the proxyv2 drop-in puts it.
    let dropin = read("deploy/docker/proxyv2.Dockerfile");
    assert!(
        dropin.contains("/usr/local/bin/iptables-init /usr/local/bin/iptables-init"),
        "{dropin}"
    );
    assert!(
        ours.contains(r#"command: ["/usr/local/bin/iptables-init"]"#),
        "{ours}"
    );
    // Istio's args start with the word istio-iptables, which iptables-init accepts.
    for name in [
        "istio-init",
        "istio-validation",
        "istio-proxy",
        "$nativeSidecar",
    ] {
        assert!(ours.contains(name), "the template does not handle {name}");
    }
    // Only names and images are set: args, env, probes, security stay Istio's.
    for field in [
        "args:",
        "env:",
        "securityContext:",
        "volumeMounts:",
        "readinessProbe:",
    ] {
        assert!(!ours.contains(field), "the template overrides {field}");
    }
    let gateway = operator["templates"]["ours-gateway"]
        .as_str()
        .expect("an `ours-gateway` template");
    assert!(
        !gateway.contains("initContainers"),
        "gateways have no init container"
    );
    let image = |t: &str| {
        t.split('"')
            .find(|s| s.contains("proxyv2-sidecar:"))
            .map(str::to_string)
    };
    assert!(image(ours).is_some());
    assert_eq!(
        image(ours),
        image(gateway),
        "both templates default to one image"
    );
}

#[test]
fn every_template_a_workload_asks_for_exists() {
    let (operator, _) = injector_values();
    let custom: Vec<String> = operator["templates"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut asked = 0;
    for entry in walk(&root().join("deploy/kubernetes")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for line in text.lines() {
            if let Some(list) = line.trim().strip_prefix("inject.istio.io/templates:") {
                for name in list.trim().trim_matches('"').split(',') {
                    asked += 1;
                    assert!(
                        ["sidecar", "gateway"].contains(&name) || custom.iter().any(|c| c == name),
                        "{}: template {name:?} is not defined",
                        entry.display()
                    );
                }
            }
        }
    }
    assert!(
        asked >= 4,
        "expected workloads selecting templates, found {asked}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out
}
