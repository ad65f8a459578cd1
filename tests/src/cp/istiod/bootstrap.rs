//! The bootstrap pilot-agent renders for Envoy: Istio's own `default` golden
//! (`pkg/bootstrap/testdata/default_golden.json`, copied into `tests/data/`), with this
//! pod's node identity and the pod-local xDS and SDS sockets.

use serde_json::{Value, json};

use crate::cp::model::{TRUST_DOMAIN, Workload};

static GOLDEN: &str = include_str!("../../../data/istio-bootstrap-default.json");

/// Where pilot-agent serves xDS to Envoy, relative to the pod root (Envoy's cwd).
pub const XDS_SOCKET: &str = "./etc/istio/proxy/XDS";
/// Where pilot-agent serves SDS, relative to the pod root.
pub const SDS_SOCKET: &str = "./var/run/secrets/workload-spiffe-uds/socket";
/// Where pilot-agent writes the bootstrap, relative to the pod root.
pub const BOOTSTRAP_PATH: &str = "./etc/istio/proxy/envoy-rev.json";

/// Which ADS flavour the sidecar uses (`ISTIO_DELTA_XDS`, default true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsFlavor {
    Delta,
    StateOfTheWorld,
}

/// Why the golden could not be patched.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("tests/data/istio-bootstrap-default.json is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tests/data/istio-bootstrap-default.json has no static cluster {0:?}")]
    MissingCluster(&'static str),
}

/// The rendered bootstrap for `w`'s sidecar.
pub fn bootstrap(
    w: &Workload,
    flavor: AdsFlavor,
    profile: super::Profile,
) -> Result<Value, BootstrapError> {
    let mut b: Value = serde_json::from_str(GOLDEN)?;
    b["node"]["id"] = json!(w.node_id());
    b["node"]["cluster"] = json!(format!("{}.{}", w.app, w.namespace));
    let meta = &mut b["node"]["metadata"];
    meta["NAMESPACE"] = json!(w.namespace);
    meta["NAME"] = json!(w.name);
    meta["INSTANCE_IPS"] = json!(w.ip.to_string());
    meta["SERVICE_ACCOUNT"] = json!(w.service_account);
    meta["WORKLOAD_NAME"] = json!(w.name);
    meta["LABELS"] = json!({"app": w.app, "security.istio.io/tlsMode": "istio"});
    meta["CLUSTER_ID"] = json!("Kubernetes");
    meta["MESH_ID"] = json!(TRUST_DOMAIN);
    meta["INTERCEPTION_MODE"] = json!("REDIRECT");
    meta["WORKLOAD_IDENTITY_SOCKET_FILE"] = json!("socket");
    b["dynamic_resources"]["ads_config"]["api_type"] = json!(match flavor {
        AdsFlavor::Delta => "DELTA_GRPC",
        AdsFlavor::StateOfTheWorld => "GRPC",
    });
    if profile == super::Profile::TcpOnly {
        // The prometheus (15090) and health (15021) listeners are HTTP.
        b["static_resources"]["listeners"] = json!([]);
    }
    set_pipe(&mut b, "sds-grpc", SDS_SOCKET)?;
    set_pipe(&mut b, "xds-grpc", XDS_SOCKET)?;
    Ok(b)
}

fn set_pipe(b: &mut Value, cluster: &'static str, path: &str) -> Result<(), BootstrapError> {
    let clusters = b["static_resources"]["clusters"]
        .as_array_mut()
        .ok_or(BootstrapError::MissingCluster(cluster))?;
    let c = clusters
        .iter_mut()
        .find(|c| c["name"] == cluster)
        .ok_or(BootstrapError::MissingCluster(cluster))?;
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] =
        json!({"pipe": {"path": path}});
    Ok(())
}
