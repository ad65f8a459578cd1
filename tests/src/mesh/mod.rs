//! A mesh on one machine: pods in network namespaces behind a node namespace, sidecars
//! (Envoy, ours, or both) driven by the test control plane, and the checks a user would
//! run from inside the pods.
//!
//! ```text
//!   pod ns (sleep.full)            node ns                 pod ns (httpbin.full)
//!   app --iptables--> sidecar ===veth=== routes + kube-proxy ===veth=== sidecar --> app
//!              \_____________ ./etc/istio/proxy/XDS, SDS socket: ControlPlane ___/
//! ```

pub mod app;
pub mod bins;
pub mod client;
pub mod pod;
pub mod probe;
pub mod report;
pub mod sidecar;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cp::istiod::Profile;
use crate::cp::istiod::bootstrap::{self, AdsFlavor, BOOTSTRAP_PATH};
use crate::cp::model::{MeshSpec, Service, Workload};
use crate::cp::{ControlPlane, CpError};

use app::App;
use bins::BinError;
use client::{HttpRequest, Outcome};
use pod::{Node, Pod};
use report::{Expect, Report, Row};
use sidecar::{ProxyKind, Sidecar, SidecarError};

/// How long a changed config may take to show in traffic (pooled upstream connections
/// finish one more request on the old config, as in a real mesh).
const CONVERGE: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which binary each sidecar runs. The same expectations hold in every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every sidecar is the real Envoy.
    Envoy,
    /// Every sidecar is our proxy.
    Ours,
    /// Client pods (no app ports) run ours, server pods Envoy.
    OursClients,
    /// Server pods run ours, client pods Envoy.
    OursServers,
}

/// How a mesh is set up.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    pub ads: AdsFlavor,
    /// Lifetime of workload certificates.
    pub cert_ttl: Duration,
    /// What the control plane generates.
    pub profile: Profile,
}

/// Why a mesh could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error(transparent)]
    Cp(#[from] CpError),
    #[error(transparent)]
    Bin(#[from] BinError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("iptables-init failed in pod {pod}: {stderr}")]
    IptablesInit { pod: String, stderr: String },
    #[error("no pod or service {0} in this mesh")]
    Unknown(String),
}

/// A running mesh. Dropping it stops every process and removes every namespace.
#[derive(Debug)]
pub struct Mesh {
    pods: BTreeMap<String, Pod>,
    cp: ControlPlane,
    node: Node,
    rt: tokio::runtime::Runtime,
    dir: MeshDir,
    opts: Options,
    changed_at: Mutex<Instant>,
}

/// Something to call from a pod.
#[derive(Clone, Debug)]
pub struct Call {
    /// What the matrix shows as the target.
    pub to: String,
    pub kind: CallKind,
}

#[derive(Clone, Debug)]
pub enum CallKind {
    Http(HttpRequest),
    /// One line to a TCP echo.
    Tcp(SocketAddr),
}

// === impl Call ===

impl Call {
    /// The same HTTP call with another method.
    pub fn method(mut self, method: &str) -> Self {
        if let CallKind::Http(req) = &mut self.kind {
            req.method = method.to_string();
        }
        self
    }

    /// The same HTTP call with an extra request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let CallKind::Http(req) = &mut self.kind {
            req.headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// The same call, labelled differently in the matrix.
    pub fn labelled(mut self, to: &str) -> Self {
        self.to = to.to_string();
        self
    }
}

// === impl Mode ===

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Envoy,
        Mode::Ours,
        Mode::OursClients,
        Mode::OursServers,
    ];

    /// The binary `w`'s sidecar runs in this mode.
    pub fn kind_for(self, w: &Workload) -> ProxyKind {
        let client = w.http_ports.is_empty() && w.tcp_ports.is_empty();
        match (self, client) {
            (Mode::Envoy, _) | (Mode::OursClients, false) | (Mode::OursServers, true) => {
                ProxyKind::Envoy
            }
            _ => ProxyKind::Ours,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Envoy => "envoy",
            Mode::Ours => "ours",
            Mode::OursClients => "mixed-ours-clients",
            Mode::OursServers => "mixed-ours-servers",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

// === impl Options ===

impl Options {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            ads: AdsFlavor::Delta,
            cert_ttl: Duration::from_secs(3600),
            profile: Profile::Istio,
        }
    }
}

// === impl MeshError ===

impl MeshError {
    /// Wraps an io error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MeshError {
        let what = what.into();
        move |error| MeshError::Io { what, error }
    }
}

// === impl Mesh ===

impl Mesh {
    /// Builds the mesh: node, pods (in parallel), kube-proxy, control plane, apps, then
    /// every sidecar, and waits until each is LIVE and has ACKed its config.
    pub fn start(spec: MeshSpec, opts: Options) -> Result<Self, MeshError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(MeshError::io("starting the tokio runtime"))?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = MeshDir::create(n)?;
        let node = Node::new()?;
        let iptables_init = bins::workspace_binary("iptables-init")?;
        let pods = create_pods(&node, &spec, &dir.0, &iptables_init)?;
        node.program_services(&spec)?;
        let cp = ControlPlane::new(rt.handle().clone(), spec, opts.profile)?;
        let mut mesh = Self {
            pods: pods.into_iter().map(|p| (p.workload.key(), p)).collect(),
            cp,
            node,
            rt,
            dir,
            opts,
            changed_at: Mutex::new(Instant::now()),
        };
        mesh.start_apps()?;
        mesh.start_sidecars()?;
        Ok(mesh)
    }

    fn start_apps(&mut self) -> Result<(), MeshError> {
        for pod in self.pods.values_mut() {
            let w = &pod.workload;
            let app = App::start(
                self.rt.handle(),
                &pod.ns,
                &w.key(),
                &w.http_ports,
                &w.tcp_ports,
            )
            .map_err(MeshError::io(format!("starting the app of {}", w.key())))?;
            pod.app = Some(app);
        }
        Ok(())
    }

    fn start_sidecars(&mut self) -> Result<(), MeshError> {
        let mut binaries: BTreeMap<&str, PathBuf> = BTreeMap::new();
        for pod in self.pods.values_mut().filter(|p| p.workload.sidecar) {
            let w = pod.workload.clone();
            self.cp.add_pod(&w.key(), &pod.root, self.opts.cert_ttl)?;
            let config = bootstrap::bootstrap(&w, self.opts.ads, self.opts.profile)?;
            let path = pod.root.join(BOOTSTRAP_PATH);
            std::fs::write(&path, config.to_string())
                .map_err(MeshError::io(format!("writing {}", path.display())))?;
            let kind = self.opts.mode.kind_for(&w);
            let bin = match kind {
                ProxyKind::Envoy => binaries.entry("envoy").or_insert(bins::envoy()?),
                ProxyKind::Ours => binaries.entry("ours").or_insert(bins::proxy()?),
            };
            pod.sidecar = Some(Sidecar::start(kind, bin, &pod.ns, &w.key(), &pod.root)?);
        }
        std::thread::scope(|s| {
            let waits: Vec<_> = self
                .pods
                .values_mut()
                .filter_map(|p| {
                    let ns = &p.ns;
                    p.sidecar
                        .as_mut()
                        .map(|sc| s.spawn(move || sc.wait_live(ns, START_TIMEOUT)))
                })
                .collect();
            waits
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or(Ok(())))
        })?;
        self.wait_synced()
    }

    /// Waits until every sidecar ACKed the current config and finished warming it.
    pub fn wait_synced(&self) -> Result<(), MeshError> {
        for pod in self.pods.values().filter(|p| p.sidecar.is_some()) {
            self.cp.wait_synced(&pod.workload.key(), START_TIMEOUT)?;
        }
        for pod in self.pods.values() {
            if let Some(sc) = &pod.sidecar {
                wait_warm(sc, &pod.ns);
            }
        }
        *self
            .changed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        Ok(())
    }

    /// Changes the mesh (like `kubectl apply`), pushes it, and waits until every sidecar
    /// accepted it.
    pub fn apply(&self, change: impl FnOnce(&mut MeshSpec)) -> Result<(), MeshError> {
        self.cp.update(change)?;
        self.wait_synced()
    }

    pub fn cp(&self) -> &ControlPlane {
        &self.cp
    }

    pub fn mode(&self) -> Mode {
        self.opts.mode
    }

    /// The pod `<name>.<ns>`.
    pub fn pod(&self, key: &str) -> Result<&Pod, MeshError> {
        self.pods
            .get(key)
            .ok_or_else(|| MeshError::Unknown(key.to_string()))
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The node's namespace (outside every pod: nothing there is captured).
    pub fn node_ns(&self) -> &crate::netns::Netns {
        &self.node.ns
    }

    /// The mesh's working directory (pod roots, logs).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn service(&self, name: &str, namespace: &str) -> Result<Service, MeshError> {
        self.cp
            .spec()
            .services
            .into_iter()
            .find(|s| s.name == name && s.namespace == namespace)
            .ok_or_else(|| MeshError::Unknown(format!("{name}.{namespace}")))
    }

    /// `curl http://<name>.<ns>:<port><path>` (the first port of the service).
    pub fn http_to_service(&self, name: &str, ns: &str, path: &str) -> Result<Call, MeshError> {
        let svc = self.service(name, ns)?;
        let port = svc.ports.first().map_or(80, |p| p.port);
        Ok(Call {
            to: format!("{name}.{ns}"),
            kind: CallKind::Http(HttpRequest::get(
                &format!("{name}.{ns}:{port}"),
                SocketAddr::from((svc.vip, port)),
                path,
            )),
        })
    }

    /// `curl http://<pod ip>:<port><path>` straight to a pod.
    pub fn http_to_pod(&self, pod: &str, port: u16, path: &str) -> Result<Call, MeshError> {
        let ip = self.pod(pod)?.workload.ip;
        let addr = SocketAddr::from((ip, port));
        Ok(Call {
            to: format!("{pod}@{addr}"),
            kind: CallKind::Http(HttpRequest::get(&addr.to_string(), addr, path)),
        })
    }

    /// `nc <name>.<ns> <port>` to the service port `port`.
    pub fn tcp_to_service(&self, name: &str, ns: &str, port: u16) -> Result<Call, MeshError> {
        let svc = self.service(name, ns)?;
        Ok(Call {
            to: format!("{name}.{ns}:{port}"),
            kind: CallKind::Tcp(SocketAddr::from((svc.vip, port))),
        })
    }

    /// Makes the call once from pod `from`.
    pub fn call(&self, from: &str, call: &Call) -> Result<Outcome, MeshError> {
        let ns = &self.pod(from)?.ns;
        Ok(match &call.kind {
            CallKind::Http(req) => client::http(ns, req),
            CallKind::Tcp(addr) => client::tcp(ns, *addr, "ping"),
        })
    }

    /// Makes the call from `from` and records expected versus observed. Within a few
    /// seconds of a config change it retries until the expectation holds (Istio's own
    /// tests do the same), and records how many tries it took.
    pub fn check(
        &self,
        report: &mut Report,
        scenario: &str,
        step: &str,
        from: &str,
        call: &Call,
        expect: Expect,
    ) {
        let changed = *self
            .changed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sidecar = |w: &str| self.pods.get(w).is_some_and(|p| p.workload.sidecar);
        let mut tries = 0;
        let t0 = Instant::now();
        let observed = loop {
            tries += 1;
            let outcome = match self.call(from, call) {
                Ok(o) => o,
                Err(e) => Outcome::ConnectFailed(e.to_string()),
            };
            if expect.matches(&outcome, &sidecar) || changed.elapsed() > CONVERGE {
                break outcome;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if std::env::var_os("E2E_TIMING").is_some() {
            eprintln!("{step} {from} -> {}: {:?}", call.to, t0.elapsed());
        }
        report.rows.push(Row {
            scenario: scenario.to_string(),
            step: step.to_string(),
            from: self.label(from),
            to: call.to.clone(),
            expected: expect.describe(),
            observed: report::describe(&observed),
            pass: expect.matches(&observed, &sidecar),
            tries,
        });
    }

    /// `sleep.full[envoy]`: the pod and what its sidecar runs.
    pub fn label(&self, pod: &str) -> String {
        match self.pods.get(pod).and_then(|p| p.sidecar.as_ref()) {
            Some(sc) if sc.kind == ProxyKind::Envoy => format!("{pod}[envoy]"),
            Some(_) => format!("{pod}[ours]"),
            None => pod.to_string(),
        }
    }

    /// Logs of every sidecar, for a failure message.
    pub fn sidecar_logs(&self) -> String {
        let mut out = String::new();
        for pod in self.pods.values() {
            if let Some(sc) = &pod.sidecar {
                out.push_str(&format!(
                    "--- {} ({:?})\n{}\n",
                    pod.workload.key(),
                    sc.kind,
                    sc.log()
                ));
            }
        }
        out
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Sidecars and apps first; then fields drop in order: control plane (sockets),
        // node namespace, runtime, directory.
        self.pods.clear();
    }
}

/// The mesh's directory under /tmp (pod roots, sockets, logs), removed on drop.
#[derive(Debug)]
struct MeshDir(PathBuf);

impl MeshDir {
    fn create(n: u32) -> Result<Self, MeshError> {
        let dir = std::env::temp_dir().join(format!("e2e-mesh-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(MeshError::io("creating the mesh directory"))?;
        Ok(Self(dir))
    }
}

impl Drop for MeshDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates every pod in parallel (namespace, link, iptables-init).
fn create_pods(
    node: &Node,
    spec: &MeshSpec,
    dir: &Path,
    iptables_init: &Path,
) -> Result<Vec<Pod>, MeshError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = spec
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let init = w.sidecar.then_some(iptables_init);
                s.spawn(move || Pod::create(node, i, w, dir, init))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(MeshError::Unknown("pod setup panicked".into())))
            })
            .collect()
    })
}

/// Waits (up to 5 s) until the sidecar reports no listener or cluster still warming.
/// A proxy without these stats counts as warm.
fn wait_warm(sc: &Sidecar, ns: &crate::netns::Netns) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let warming = sc
            .admin(ns, "/stats?filter=total_listeners_warming|warming_clusters")
            .map(|(_, body)| {
                body.lines().any(|l| {
                    l.rsplit_once(": ")
                        .is_some_and(|(_, v)| v.trim().parse::<u64>().unwrap_or(0) > 0)
                })
            })
            .unwrap_or(false);
        if !warming {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
