//! PeerAuthentication and DestinationRule resolution, as istiod does it
//! (`ComposePeerAuthentication`, `BestEffortInferServiceMTLSMode`, the EDS mTLS checker).

use crate::cp::model::{ClientTlsMode, MeshSpec, MtlsMode, ROOT_NAMESPACE, Service, Workload};

/// The mode `w`'s sidecar enforces on `port` (`None`: the workload-wide mode, used by the
/// passthrough chains). Narrowest non-UNSET scope wins; port-level settings come only from
/// the workload-level policy.
pub fn workload_mode(spec: &MeshSpec, w: &Workload, port: Option<u16>) -> MtlsMode {
    let mut mode = namespace_mode(spec, &w.namespace);
    let workload = spec
        .peer_authentications
        .iter()
        .find(|pa| pa.namespace == w.namespace && pa.selector.as_deref() == Some(&w.app));
    if let Some(pa) = workload {
        if pa.mode != MtlsMode::Unset {
            mode = pa.mode;
        }
        if let Some(port) = port
            && let Some((_, m)) = pa.port_level.iter().find(|(p, _)| *p == port)
            && *m != MtlsMode::Unset
        {
            mode = *m;
        }
    }
    mode
}

/// The mode a namespace inherits: its own selector-less policy, else the mesh-wide one,
/// else PERMISSIVE.
pub fn namespace_mode(spec: &MeshSpec, namespace: &str) -> MtlsMode {
    let scoped = |ns: &str| {
        spec.peer_authentications
            .iter()
            .find(|pa| pa.namespace == ns && pa.selector.is_none())
            .map(|pa| pa.mode)
            .filter(|m| *m != MtlsMode::Unset)
    };
    scoped(namespace)
        .or_else(|| scoped(ROOT_NAMESPACE))
        .unwrap_or(MtlsMode::Permissive)
}

/// The client TLS mode a DestinationRule sets for `svc`, if any.
pub fn destination_rule_tls(spec: &MeshSpec, svc: &Service) -> Option<ClientTlsMode> {
    let host = svc.hostname();
    spec.destination_rules
        .iter()
        .find(|dr| dr.host == host)
        .map(|dr| dr.tls)
}

/// How a client sidecar's cluster for `svc` originates TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterTls {
    /// Auto-mTLS: `transport_socket_matches` on the endpoints' `tlsMode` metadata.
    Auto,
    /// An explicit ISTIO_MUTUAL DestinationRule: always mTLS.
    IstioMutual,
    /// Plaintext (DR DISABLE, or the service's inferred mode is DISABLE).
    Plaintext,
}

/// `buildUpstreamTLSSettings`: an explicit DR wins; otherwise auto-mTLS unless the
/// service's namespace (or the mesh) disables mTLS.
pub fn cluster_tls(spec: &MeshSpec, svc: &Service) -> ClusterTls {
    match destination_rule_tls(spec, svc) {
        Some(ClientTlsMode::IstioMutual) => ClusterTls::IstioMutual,
        Some(ClientTlsMode::Disable) => ClusterTls::Plaintext,
        None if namespace_mode(spec, &svc.namespace) == MtlsMode::Disable => ClusterTls::Plaintext,
        None => ClusterTls::Auto,
    }
}

/// Whether EDS labels endpoint `w` (port `target`) with `tlsMode: istio`: it needs a
/// sidecar, and neither a DestinationRule nor the workload's PeerAuthentication may disable
/// mTLS for it.
pub fn endpoint_is_mtls(spec: &MeshSpec, svc: &Service, w: &Workload, target: u16) -> bool {
    match destination_rule_tls(spec, svc) {
        Some(ClientTlsMode::IstioMutual) => true,
        Some(ClientTlsMode::Disable) => false,
        None => w.sidecar && workload_mode(spec, w, Some(target)) != MtlsMode::Disable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cp::model::PeerAuthentication;

    fn pa(ns: &str, selector: Option<&str>, mode: MtlsMode) -> PeerAuthentication {
        PeerAuthentication {
            name: "p".into(),
            namespace: ns.into(),
            selector: selector.map(Into::into),
            mode,
            port_level: vec![],
        }
    }

    #[test]
    fn narrowest_scope_wins_and_unset_inherits() {
        let w = Workload::new("httpbin", "full", "httpbin", [10, 0, 0, 1].into());
        let mut spec = MeshSpec::default();
        assert_eq!(workload_mode(&spec, &w, None), MtlsMode::Permissive);
        spec.peer_authentications
            .push(pa(ROOT_NAMESPACE, None, MtlsMode::Strict));
        assert_eq!(workload_mode(&spec, &w, None), MtlsMode::Strict);
        spec.peer_authentications
            .push(pa("full", None, MtlsMode::Disable));
        assert_eq!(workload_mode(&spec, &w, None), MtlsMode::Disable);
        let mut p = pa("full", Some("httpbin"), MtlsMode::Unset);
        p.port_level = vec![(8080, MtlsMode::Strict)];
        spec.peer_authentications.push(p);
        assert_eq!(workload_mode(&spec, &w, None), MtlsMode::Disable);
        assert_eq!(workload_mode(&spec, &w, Some(8080)), MtlsMode::Strict);
    }
}
