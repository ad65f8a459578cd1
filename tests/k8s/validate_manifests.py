#!/usr/bin/env python3
"""Checks Kubernetes manifests offline, as the API server and Istio's validation would.

Built-in kinds (Deployment, Service, Role, ...) are validated strictly (unknown fields are
errors) against the Kubernetes OpenAPI schemas bundled in the kubernetes-validate package.
Istio and cert-manager kinds, IstioOperator and Kustomization files have no bundled
schema: they are checked here against the fields and enums of their APIs that our
manifests use, with unknown fields rejected.

Usage: validate_manifests.py [--k8s-version 1.32] PATH...   (a directory, a file, or -)
Exit 0 if every document is valid; 1 with one line per problem otherwise; 3 if the
kubernetes-validate package is missing.
"""

import argparse
import os
import sys

import yaml

try:
    import kubernetes_validate
except ImportError:
    print("kubernetes-validate is not installed (pip install kubernetes-validate)", file=sys.stderr)
    sys.exit(3)

# Built-in API groups, validated with the bundled schemas.
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
               "networking.k8s.io/v1", "autoscaling/v2"}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append(f"{where}: {msg}")


def check_fields(obj, allowed, where, problems, required=()):
    """obj must be a mapping with keys from `allowed` and every key in `required`."""
    if not isinstance(obj, dict):
        problems.add(where, f"expected a mapping, got {type(obj).__name__}")
        return False
    for key in obj:
        if key not in allowed:
            problems.add(where, f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in obj or obj[key] in (None, "", [], {}):
            problems.add(where, f"missing required field {key!r}")
    return True


def check_enum(value, allowed, where, problems):
    if value not in allowed:
        problems.add(where, f"{value!r} is not one of {', '.join(allowed)}")


def check_string_list(value, where, problems, nonempty=False):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(where, "expected a list of strings")
    elif nonempty and not value:
        problems.add(where, "must not be empty")


def check_selector(sel, where, problems):
    if check_fields(sel, {"matchLabels"}, where, problems, required=("matchLabels",)):
        labels = sel.get("matchLabels")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            problems.add(f"{where}.matchLabels", "expected a map of strings")


MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


def peer_authentication(spec, where, p):
    check_fields(spec, {"selector", "mtls", "portLevelMtls"}, where, p)
    if "selector" in spec:
        check_selector(spec["selector"], f"{where}.selector", p)
    if check_fields(spec.get("mtls", {}), {"mode"}, f"{where}.mtls", p):
        check_enum(spec.get("mtls", {}).get("mode", "UNSET"), MTLS_MODES, f"{where}.mtls.mode", p)
    levels = spec.get("portLevelMtls", {})
    if levels and "selector" not in spec:
        p.add(where, "portLevelMtls needs a workload selector")
    for port, mtls in levels.items():
        if not str(port).isdigit() or not 1 <= int(port) <= 65535:
            p.add(f"{where}.portLevelMtls", f"{port!r} is not a port number")
        if check_fields(mtls, {"mode"}, f"{where}.portLevelMtls[{port}]", p):
            check_enum(mtls.get("mode"), MTLS_MODES, f"{where}.portLevelMtls[{port}].mode", p)


SOURCE_FIELDS = {"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
                 "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
                 "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts"}
OPERATION_FIELDS = {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods",
                    "paths", "notPaths"}


def authorization_policy(spec, where, p):
    check_fields(spec, {"selector", "targetRef", "targetRefs", "rules", "action", "provider"},
                 where, p)
    if "selector" in spec:
        check_selector(spec["selector"], f"{where}.selector", p)
    check_enum(spec.get("action", "ALLOW"), ("ALLOW", "DENY", "AUDIT", "CUSTOM"),
               f"{where}.action", p)
    for i, rule in enumerate(spec.get("rules", [])):
        rw = f"{where}.rules[{i}]"
        check_fields(rule, {"from", "to", "when"}, rw, p)
        for j, f in enumerate(rule.get("from", [])):
            fw = f"{rw}.from[{j}]"
            if check_fields(f, {"source"}, fw, p, required=("source",)):
                check_fields(f["source"], SOURCE_FIELDS, f"{fw}.source", p)
                for k, v in f["source"].items():
                    check_string_list(v, f"{fw}.source.{k}", p, nonempty=True)
                for principal in f["source"].get("principals", []):
                    if principal.startswith("spiffe://"):
                        p.add(f"{fw}.source.principals", "principals omit the spiffe:// prefix")
        for j, t in enumerate(rule.get("to", [])):
            tw = f"{rw}.to[{j}]"
            if check_fields(t, {"operation"}, tw, p, required=("operation",)):
                check_fields(t["operation"], OPERATION_FIELDS, f"{tw}.operation", p)
                for k, v in t["operation"].items():
                    check_string_list(v, f"{tw}.operation.{k}", p, nonempty=True)
        for j, w in enumerate(rule.get("when", [])):
            check_fields(w, {"key", "values", "notValues"}, f"{rw}.when[{j}]", p, required=("key",))


TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
             "OPTIONAL_MUTUAL")
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS")
TLS_VERSIONS = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")


def gateway(spec, where, p):
    check_fields(spec, {"servers", "selector"}, where, p, required=("servers",))
    for i, server in enumerate(spec.get("servers", [])):
        sw = f"{where}.servers[{i}]"
        check_fields(server, {"port", "bind", "hosts", "tls", "name", "defaultEndpoint"}, sw, p,
                     required=("port", "hosts"))
        port = server.get("port", {})
        if check_fields(port, {"number", "protocol", "name", "targetPort"}, f"{sw}.port", p,
                        required=("number", "protocol", "name")):
            if not isinstance(port.get("number"), int) or not 1 <= port["number"] <= 65535:
                p.add(f"{sw}.port.number", "not a port number")
            check_enum(port.get("protocol"), PROTOCOLS, f"{sw}.port.protocol", p)
        check_string_list(server.get("hosts", []), f"{sw}.hosts", p, nonempty=True)
        tls = server.get("tls")
        if port.get("protocol") in ("HTTPS", "TLS") and not tls:
            p.add(sw, f"{port.get('protocol')} servers need tls settings")
        if tls is None:
            continue
        check_fields(tls, {"httpsRedirect", "mode", "credentialName", "credentialNames",
                           "serverCertificate", "privateKey", "caCertificates", "subjectAltNames",
                           "minProtocolVersion", "maxProtocolVersion", "cipherSuites"},
                     f"{sw}.tls", p)
        if "mode" in tls:
            check_enum(tls["mode"], TLS_MODES, f"{sw}.tls.mode", p)
            if tls["mode"] in ("SIMPLE", "MUTUAL") and not (
                    tls.get("credentialName") or tls.get("serverCertificate")):
                p.add(f"{sw}.tls", f"{tls['mode']} needs credentialName or serverCertificate")
        for key in ("minProtocolVersion", "maxProtocolVersion"):
            if key in tls:
                check_enum(tls[key], TLS_VERSIONS, f"{sw}.tls.{key}", p)
        if "httpsRedirect" in tls and not isinstance(tls["httpsRedirect"], bool):
            p.add(f"{sw}.tls.httpsRedirect", "expected a boolean")


def destination(d, where, p):
    if check_fields(d, {"host", "subset", "port"}, where, p, required=("host",)) and "port" in d:
        check_fields(d["port"], {"number"}, f"{where}.port", p, required=("number",))


def virtual_service(spec, where, p):
    check_fields(spec, {"hosts", "gateways", "http", "tls", "tcp", "exportTo"}, where, p,
                 required=("hosts",))
    check_string_list(spec.get("hosts", []), f"{where}.hosts", p, nonempty=True)
    if "gateways" in spec:
        check_string_list(spec["gateways"], f"{where}.gateways", p, nonempty=True)
    for i, route in enumerate(spec.get("http", [])):
        rw = f"{where}.http[{i}]"
        check_fields(route, {"name", "match", "route", "redirect", "rewrite", "timeout", "retries",
                             "headers", "fault", "mirror", "corsPolicy", "directResponse"}, rw, p)
        if not route.get("route") and not route.get("redirect") and not route.get("directResponse"):
            p.add(rw, "needs route, redirect or directResponse")
        for j, m in enumerate(route.get("match", [])):
            check_fields(m, {"name", "uri", "scheme", "method", "authority", "headers", "port",
                             "queryParams", "ignoreUriCase", "withoutHeaders", "sourceLabels",
                             "gateways", "sourceNamespace"}, f"{rw}.match[{j}]", p)
            if "uri" in m:
                check_fields(m["uri"], {"exact", "prefix", "regex"}, f"{rw}.match[{j}].uri", p)
        for j, dest in enumerate(route.get("route", [])):
            dw = f"{rw}.route[{j}]"
            if check_fields(dest, {"destination", "weight", "headers"}, dw, p,
                            required=("destination",)):
                destination(dest["destination"], f"{dw}.destination", p)


def destination_rule(spec, where, p):
    check_fields(spec, {"host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"},
                 where, p, required=("host",))
    tls = spec.get("trafficPolicy", {}).get("tls")
    if tls is not None and check_fields(tls, {"mode", "credentialName", "clientCertificate",
                                              "privateKey", "caCertificates", "sni",
                                              "subjectAltNames", "insecureSkipVerify"},
                                        f"{where}.trafficPolicy.tls", p):
        check_enum(tls.get("mode"), ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"),
                   f"{where}.trafficPolicy.tls.mode", p)


def certificate(spec, where, p):
    check_fields(spec, {"secretName", "issuerRef", "dnsNames", "commonName", "duration",
                        "renewBefore", "privateKey", "usages", "ipAddresses", "uris",
                        "secretTemplate", "isCA", "subject"}, where, p,
                 required=("secretName", "issuerRef"))
    if not spec.get("dnsNames") and not spec.get("commonName") and not spec.get("uris"):
        p.add(where, "needs dnsNames, commonName or uris")
    ref = spec.get("issuerRef", {})
    if check_fields(ref, {"name", "kind", "group"}, f"{where}.issuerRef", p, required=("name",)):
        check_enum(ref.get("kind", "Issuer"), ("Issuer", "ClusterIssuer"),
                   f"{where}.issuerRef.kind", p)
    key = spec.get("privateKey", {})
    if check_fields(key, {"algorithm", "size", "encoding", "rotationPolicy"},
                    f"{where}.privateKey", p) and "algorithm" in key:
        check_enum(key["algorithm"], ("RSA", "ECDSA", "Ed25519"), f"{where}.privateKey.algorithm", p)


def istio_operator(spec, where, p):
    check_fields(spec, {"profile", "hub", "tag", "revision", "namespace", "meshConfig",
                        "values", "components"}, where, p)
    injector = spec.get("values", {}).get("sidecarInjectorWebhook", {})
    check_fields(injector, {"templates", "defaultTemplates", "enableNamespacesByDefault",
                            "rewriteAppHTTPProbe", "neverInjectSelector", "alwaysInjectSelector",
                            "injectedAnnotations", "reinvocationPolicy"},
                 f"{where}.values.sidecarInjectorWebhook", p)
    templates = injector.get("templates", {})
    for name, text in templates.items():
        if not isinstance(text, str) or not text.strip():
            p.add(f"{where}.values.sidecarInjectorWebhook.templates.{name}",
                  "a template is a non-empty string")
    for name in injector.get("defaultTemplates", []):
        if name not in templates and name not in ("sidecar", "gateway", "grpc-simple",
                                                  "grpc-agent", "spire"):
            p.add(f"{where}.values.sidecarInjectorWebhook.defaultTemplates",
                  f"{name!r} is neither a custom nor a built-in template")


CUSTOM = {
    ("security.istio.io/v1", "PeerAuthentication"): peer_authentication,
    ("security.istio.io/v1beta1", "PeerAuthentication"): peer_authentication,
    ("security.istio.io/v1", "AuthorizationPolicy"): authorization_policy,
    ("security.istio.io/v1beta1", "AuthorizationPolicy"): authorization_policy,
    ("networking.istio.io/v1", "Gateway"): gateway,
    ("networking.istio.io/v1beta1", "Gateway"): gateway,
    ("networking.istio.io/v1", "VirtualService"): virtual_service,
    ("networking.istio.io/v1beta1", "VirtualService"): virtual_service,
    ("networking.istio.io/v1", "DestinationRule"): destination_rule,
    ("networking.istio.io/v1beta1", "DestinationRule"): destination_rule,
    ("cert-manager.io/v1", "Certificate"): certificate,
    ("install.istio.io/v1alpha1", "IstioOperator"): istio_operator,
}


def kustomization(doc, path, p):
    where = f"{path} (Kustomization)"
    check_fields(doc, {"apiVersion", "kind", "namespace", "resources", "patchesStrategicMerge",
                       "patches", "namePrefix", "nameSuffix", "labels", "commonLabels",
                       "commonAnnotations", "images", "configMapGenerator",
                       "secretGenerator", "components"}, where, p)
    base = os.path.dirname(path)
    for key in ("resources", "patchesStrategicMerge"):
        for ref in doc.get(key, []):
            if not os.path.exists(os.path.join(base, ref)):
                p.add(where, f"{key}: {ref} does not exist")
    for patch in doc.get("patches", []):
        if "path" in patch and not os.path.exists(os.path.join(base, patch["path"])):
            p.add(where, f"patches: {patch['path']} does not exist")


def check_document(doc, where, path, k8s_version, p):
    if not isinstance(doc, dict):
        p.add(where, "a manifest is a mapping")
        return
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if (api, kind) == ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        kustomization(doc, path, p)
        return
    if os.path.basename(path).startswith(("helm-values", "values")) and api is None:
        # Helm values for istiod: the IstioOperator's spec.values.
        istio_operator({"values": doc}, f"{where} (helm values)", p)
        return
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        p.add(where, "metadata.name is required")
    where = f"{where} {kind}/{(meta or {}).get('name')}"
    if api in CORE_GROUPS:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            p.add(where, f"{'.'.join(str(x) for x in e.path)}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            p.add(where, f"{api} {kind} is not a Kubernetes {k8s_version} kind")
        return
    check = CUSTOM.get((api, kind))
    if check is None:
        p.add(where, f"unknown kind {api} {kind}")
        return
    check_fields(doc, {"apiVersion", "kind", "metadata", "spec"}, where, p, required=("spec",))
    check(doc.get("spec") or {}, f"{where} spec", p)


def files(paths):
    for path in paths:
        if path == "-" or os.path.isfile(path):
            yield path
            continue
        for dirpath, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                if name.endswith((".yaml", ".yml")):
                    yield os.path.join(dirpath, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k8s-version", default="1.32")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    problems = Problems()
    count = 0
    paths = list(files(args.paths))
    # Strategic-merge patches are partial objects: kustomize validates them merged (check
    # its output by piping `kubectl kustomize` into this script), not here.
    patches = set()
    for path in paths:
        if os.path.basename(path) == "kustomization.yaml":
            doc = yaml.safe_load(open(path, encoding="utf-8")) or {}
            refs = doc.get("patchesStrategicMerge", []) + [
                p["path"] for p in doc.get("patches", []) if "path" in p]
            patches.update(os.path.normpath(os.path.join(os.path.dirname(path), r)) for r in refs)
    for path in paths:
        if os.path.normpath(path) in patches:
            continue
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            problems.add(path, f"not YAML: {e}")
            continue
        for i, doc in enumerate(d for d in docs if d is not None):
            count += 1
            check_document(doc, f"{path}[{i}]", path, args.k8s_version, problems)
    for line in problems.items:
        print(line)
    print(f"{count} documents, {len(problems.items)} problems")
    return 1 if problems.items or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
