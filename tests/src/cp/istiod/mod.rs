//! What istiod would send one sidecar, generated from a [`MeshSpec`]: CDS, EDS, LDS and RDS
//! as proto3 JSON (encoded by [`crate::cp::proto`]), plus the bootstrap pilot-agent writes.

pub mod authn;
pub mod bootstrap;
pub mod clusters;
pub mod listeners;
pub mod rbac;
pub mod routes;
pub mod tls;

use serde_json::Value;

use crate::cp::model::{MeshSpec, Workload};
use crate::cp::proto;

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// How much of istiod's output to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Everything istiod sends.
    Istio,
    /// istiod's output without anything HTTP: no HTTP connection manager chains or
    /// listeners, no routes, and no HTTP listeners in the bootstrap. For bringing up a
    /// proxy that handles only TCP so far; meshes meant for it have only TCP services.
    TcpOnly,
}

/// The xDS resources of one sidecar, by type URL, in istiod's push order.
pub fn sidecar_resources(
    spec: &MeshSpec,
    w: &Workload,
    profile: Profile,
) -> Vec<(&'static str, Vec<Value>)> {
    let mut listeners = listeners::listeners(spec, w);
    let mut routes = routes::routes(spec, w);
    if profile == Profile::TcpOnly {
        listeners.retain_mut(|l| {
            if let Some(chains) = l["filter_chains"].as_array_mut() {
                chains.retain(|c| !uses_hcm(c));
            }
            if let Some(obj) = l.as_object_mut()
                && obj.get("default_filter_chain").is_some_and(uses_hcm)
            {
                obj.remove("default_filter_chain");
            }
            l["filter_chains"].as_array().is_some_and(|c| !c.is_empty())
        });
        routes.clear();
    }
    vec![
        (proto::CLUSTER, clusters::clusters(spec, w)),
        (proto::ENDPOINTS, clusters::endpoints(spec)),
        (proto::LISTENER, listeners),
        (proto::ROUTE, routes),
    ]
}

fn uses_hcm(chain: &Value) -> bool {
    chain["filters"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["name"] == HCM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::model::{ClientTlsMode, DestinationRule, MtlsMode};
    use crate::scenarios::{authz, auto_mtls, bypass, capture, resilience, tcp};

    fn encode_all(spec: &MeshSpec, profile: Profile) {
        for w in spec.workloads.iter().filter(|w| w.sidecar) {
            for (type_url, resources) in sidecar_resources(spec, w, profile) {
                for r in resources {
                    if let Err(e) = proto::to_any(type_url, r) {
                        panic!("{}: {e}", w.key());
                    }
                }
            }
            bootstrap::bootstrap(w, bootstrap::AdsFlavor::Delta, profile).unwrap();
        }
    }

    fn listener<'a>(resources: &'a [(&str, Vec<Value>)], name: &str) -> &'a Value {
        resources
            .iter()
            .find(|(t, _)| *t == proto::LISTENER)
            .and_then(|(_, ls)| ls.iter().find(|l| l["name"] == name))
            .unwrap()
    }

    /// Every scenario's mesh, before and after its policy changes, is valid proto3 JSON
    /// for every sidecar: a typo in a generator fails here, without root.
    #[test]
    fn every_scenario_mesh_encodes() {
        let mut auto = auto_mtls::spec();
        encode_all(&auto, Profile::Istio);
        auto.set_destination_rule(DestinationRule {
            name: "httpbin".into(),
            namespace: "full".into(),
            host: "httpbin.full.svc.cluster.local".into(),
            tls: ClientTlsMode::IstioMutual,
        });
        for spec in [
            auto,
            authz::analyzer_spec(),
            authz::namespace_spec(),
            bypass::spec(),
            tcp::spec(),
            resilience::spec("rot"),
        ] {
            encode_all(&spec, Profile::Istio);
        }
        encode_all(&capture::spec(), Profile::TcpOnly);
    }

    /// STRICT leaves no plaintext chain on virtualInbound; DISABLE leaves no TLS one.
    #[test]
    fn inbound_chains_follow_the_mode() {
        let mut spec = auto_mtls::spec();
        let w = spec.workload("httpbin.full").unwrap().clone();
        let transports = |spec: &MeshSpec| -> Vec<String> {
            let res = sidecar_resources(spec, &w, Profile::Istio);
            listener(&res, "virtualInbound")["filter_chains"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["filter_chain_match"]["transport_protocol"].as_str())
                .map(str::to_string)
                .collect()
        };
        assert!(transports(&spec).contains(&"raw_buffer".to_string()));
        for (mode, absent) in [(MtlsMode::Strict, "raw_buffer"), (MtlsMode::Disable, "tls")] {
            spec.set_peer_authentication(crate::cp::model::PeerAuthentication {
                name: "p".into(),
                namespace: "full".into(),
                selector: Some("httpbin".into()),
                mode,
                port_level: vec![],
            });
            let t = transports(&spec);
            assert!(
                !t.is_empty() && !t.contains(&absent.to_string()),
                "{mode:?}: {t:?}"
            );
        }
    }

    /// Sidecar endpoints carry `tlsMode: istio`, others do not.
    #[test]
    fn eds_marks_sidecar_endpoints() {
        let spec = auto_mtls::spec();
        let cla = clusters::endpoints(&spec)
            .into_iter()
            .find(|c| c["cluster_name"] == "outbound|8000||httpbin.partial.svc.cluster.local")
            .unwrap();
        let modes: Vec<bool> = cla["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| !e["metadata"]["filter_metadata"]["envoy.transport_socket_match"].is_null())
            .collect();
        assert_eq!(modes, [true, false]);
    }
}
