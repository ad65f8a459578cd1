//! The test control plane: what istiod and each pod's pilot-agent are to a real mesh.
//!
//! It turns a [`MeshSpec`] into the resources istiod would send every sidecar (see
//! [`istiod`]), serves them over ADS (state-of-the-world and delta) on each pod's
//! `./etc/istio/proxy/XDS` socket, and serves each pod's workload certificate from the test
//! [`Ca`] over SDS on `./var/run/secrets/workload-spiffe-uds/socket`, as pilot-agent does.
//! Changing the spec pushes new config; [`ControlPlane::wait_synced`] waits until a proxy
//! has ACKed it and fails with the proxy's NACK text otherwise. [`ControlPlane::kill`] stops
//! the "istiod" part (the ADS sockets) while the "agents" (SDS) keep serving.

pub mod ca;
pub mod istiod;
pub mod model;
pub mod proto;
pub mod server;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

pub use ca::{Ca, WorkloadCert};
pub use model::MeshSpec;
pub use store::{Nack, Store, SyncState};

use server::{Served, UdsServer};
use store::Snapshot;

/// The uid and gid the sidecar runs as (Istio's `istio-proxy`).
pub const PROXY_UID: u32 = 1337;

/// What went wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("control plane socket {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no pod {0} in the mesh description")]
    UnknownPod(String),
    #[error("{} NACKed {}: {}", .0.node, .0.type_url, .0.message)]
    Nacked(Nack),
    #[error("{pod} did not accept its config within {timeout:?}: {state}")]
    NotSynced {
        pod: String,
        timeout: Duration,
        state: String,
    },
}

/// The running control plane. Sockets close on drop.
#[derive(Debug)]
pub struct ControlPlane {
    rt: tokio::runtime::Handle,
    store: Arc<Store>,
    ca: Ca,
    profile: istiod::Profile,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    spec: MeshSpec,
    pods: BTreeMap<String, PodAgent>,
    xds_running: bool,
}

/// The per-pod half: the pod's sockets and its current certificate.
#[derive(Debug)]
struct PodAgent {
    root: PathBuf,
    xds: Option<UdsServer>,
    _sds: UdsServer,
    cert: WorkloadCert,
    ttl: Duration,
}

fn sds_key(pod: &str) -> String {
    format!("sds:{pod}")
}

// === impl ControlPlane ===

impl ControlPlane {
    /// A control plane for `spec`, serving on `rt`, generating `profile`.
    pub fn new(
        rt: tokio::runtime::Handle,
        spec: MeshSpec,
        profile: istiod::Profile,
    ) -> Result<Self, CpError> {
        Ok(Self {
            rt,
            store: Store::new(),
            ca: Ca::new()?,
            profile,
            state: Mutex::new(State {
                spec,
                pods: BTreeMap::new(),
                xds_running: true,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The CA's root certificate (PEM).
    pub fn root_pem(&self) -> &str {
        self.ca.root_pem()
    }

    /// The current mesh description.
    pub fn spec(&self) -> MeshSpec {
        self.lock().spec.clone()
    }

    /// Serves the sidecar pod `pod` (`<name>.<ns>`) whose filesystem root is `root`: issues
    /// its certificate (valid for `ttl`) and opens its XDS and SDS sockets.
    pub fn add_pod(&self, pod: &str, root: &Path, ttl: Duration) -> Result<(), CpError> {
        let _rt = self.rt.enter();
        let w = self
            .spec()
            .workload(pod)
            .cloned()
            .ok_or_else(|| CpError::UnknownPod(pod.to_string()))?;
        let cert = self.ca.issue(&w.spiffe_id(), ttl)?;
        self.set_secrets(pod, &cert)?;
        let sds_path = root.join(istiod::bootstrap::SDS_SOCKET);
        let sds = self.bind(&sds_path, Served::Sds(sds_key(pod)))?;
        let xds = self.bind(&root.join(istiod::bootstrap::XDS_SOCKET), Served::Ads)?;
        let mut state = self.lock();
        let xds = state.xds_running.then_some(xds);
        state.pods.insert(
            pod.to_string(),
            PodAgent {
                root: root.to_path_buf(),
                xds,
                _sds: sds,
                cert,
                ttl,
            },
        );
        drop(state);
        self.push()
    }

    fn bind(&self, path: &Path, served: Served) -> Result<UdsServer, CpError> {
        let io = |error| CpError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let _rt = self.rt.enter();
        UdsServer::bind(path, (PROXY_UID, PROXY_UID), self.store.clone(), served).map_err(io)
    }

    /// Changes the mesh description and pushes the result to every sidecar.
    pub fn update(&self, change: impl FnOnce(&mut MeshSpec)) -> Result<(), CpError> {
        change(&mut self.lock().spec);
        self.push()
    }

    /// Regenerates every sidecar's snapshot from the spec.
    fn push(&self) -> Result<(), CpError> {
        let state = self.lock();
        let mut snapshots = Vec::new();
        for pod in state.pods.keys() {
            let Some(w) = state.spec.workload(pod) else {
                continue;
            };
            let mut snap = Snapshot::default();
            for (type_url, resources) in istiod::sidecar_resources(&state.spec, w, self.profile) {
                for r in resources {
                    let name = r["name"]
                        .as_str()
                        .or_else(|| r["cluster_name"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    snap.insert(name, proto::to_any(type_url, r)?);
                }
            }
            snapshots.push((w.node_id(), snap));
        }
        drop(state);
        self.store.set_all(snapshots);
        Ok(())
    }

    fn set_secrets(&self, pod: &str, cert: &WorkloadCert) -> Result<(), CpError> {
        let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
        let mut snap = Snapshot::default();
        let default = json!({
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": b64(cert.chain_pem.as_bytes())},
                "private_key": {"inline_bytes": b64(cert.key_pem.as_bytes())}
            }
        });
        let root = json!({
            "name": "ROOTCA",
            "validation_context": {"trusted_ca": {"inline_bytes": b64(self.ca.root_pem().as_bytes())}}
        });
        snap.insert("default".into(), proto::to_any(proto::SECRET, default)?);
        snap.insert("ROOTCA".into(), proto::to_any(proto::SECRET, root)?);
        self.store.set_all([(sds_key(pod), snap)]);
        Ok(())
    }

    /// Issues `pod` a new certificate (same lifetime as before) and pushes it over SDS, as
    /// pilot-agent does at half-life. Returns the new certificate.
    pub fn rotate(&self, pod: &str) -> Result<WorkloadCert, CpError> {
        let (id, ttl) = {
            let state = self.lock();
            let agent = state
                .pods
                .get(pod)
                .ok_or_else(|| CpError::UnknownPod(pod.to_string()))?;
            (agent.cert.spiffe_id.clone(), agent.ttl)
        };
        let cert = self.ca.issue(&id, ttl)?;
        self.set_secrets(pod, &cert)?;
        if let Some(agent) = self.lock().pods.get_mut(pod) {
            agent.cert = cert.clone();
        }
        Ok(cert)
    }

    /// Issues a certificate for any identity (a test's own mesh client).
    pub fn issue(&self, spiffe_id: &str, ttl: Duration) -> Result<WorkloadCert, CpError> {
        Ok(self.ca.issue(spiffe_id, ttl)?)
    }

    /// The certificate `pod` is being served now.
    pub fn cert(&self, pod: &str) -> Option<WorkloadCert> {
        self.lock().pods.get(pod).map(|a| a.cert.clone())
    }

    /// Kills "istiod": closes every ADS socket and connection at once. SDS keeps serving.
    pub fn kill(&self) {
        let mut state = self.lock();
        state.xds_running = false;
        for agent in state.pods.values_mut() {
            if let Some(xds) = agent.xds.take() {
                xds.kill();
            }
        }
    }

    /// Starts "istiod" again: a fresh server that rebuilds every snapshot from the spec.
    pub fn restart(&self) -> Result<(), CpError> {
        let roots: Vec<(String, PathBuf)> = self
            .lock()
            .pods
            .iter()
            .map(|(k, a)| (k.clone(), a.root.clone()))
            .collect();
        for (pod, root) in roots {
            let xds = self.bind(&root.join(istiod::bootstrap::XDS_SOCKET), Served::Ads)?;
            if let Some(agent) = self.lock().pods.get_mut(&pod) {
                agent.xds = Some(xds);
            }
        }
        self.lock().xds_running = true;
        self.push()
    }

    /// Waits until `pod`'s sidecar has ACKed the latest config (and its SDS secrets, if it
    /// asked for any).
    pub fn wait_synced(&self, pod: &str, timeout: Duration) -> Result<(), CpError> {
        let node = self
            .spec()
            .workload(pod)
            .map(model::Workload::node_id)
            .ok_or_else(|| CpError::UnknownPod(pod.to_string()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let states = [
                self.store.sync_state(&node, true),
                self.store.sync_state(&sds_key(pod), false),
            ];
            let pending = states.iter().find_map(|s| match s {
                SyncState::Synced => None,
                SyncState::Pending(why) => Some(Ok(why.clone())),
                SyncState::Nacked(nack) => Some(Err(nack.clone())),
            });
            match pending {
                None => return Ok(()),
                Some(Err(nack)) => return Err(CpError::Nacked(nack)),
                Some(Ok(why)) if Instant::now() > deadline => {
                    return Err(CpError::NotSynced {
                        pod: pod.to_string(),
                        timeout,
                        state: why,
                    });
                }
                Some(Ok(_)) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Every NACK any proxy sent.
    pub fn nacks(&self) -> Vec<Nack> {
        self.store.nacks()
    }
}
