//! Pods and the node: each pod is a network namespace with one veth to the "node"
//! namespace, which routes between pods and translates service VIPs to pod IPs with
//! kube-proxy's iptables rules. A sidecar pod has had `iptables-init` run in it with the
//! injector's default arguments.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cp::model::{MeshSpec, Workload};
use crate::netns::{self, Netns};

use super::MeshError;
use super::app::App;
use super::sidecar::Sidecar;

/// The injector's default `istio-init` arguments.
pub const INJECTOR_DEFAULT: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// A pod. Drops its sidecar, then its app, then its namespace.
#[derive(Debug)]
pub struct Pod {
    pub sidecar: Option<Sidecar>,
    pub app: Option<App>,
    pub workload: Workload,
    /// The pod's filesystem root (Envoy's cwd: `./etc/istio/proxy/...` live here).
    pub root: PathBuf,
    pub ns: Netns,
}

/// The node: routes between pods; kube-proxy's NAT for service VIPs.
#[derive(Debug)]
pub struct Node {
    pub ns: Netns,
}

// === impl Node ===

impl Node {
    pub fn new() -> Result<Self, MeshError> {
        let ns = Netns::new("node").map_err(MeshError::io("creating the node namespace"))?;
        ns.sysctl("net.ipv4.ip_forward", "1")
            .map_err(MeshError::io("enabling forwarding on the node"))?;
        Ok(Self { ns })
    }

    /// kube-proxy (iptables mode): each `VIP:port` is DNATed to a random endpoint.
    pub fn program_services(&self, spec: &MeshSpec) -> Result<(), MeshError> {
        let mut chains = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
        let mut rules =
            String::from("-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n");
        let mut n = 0;
        for svc in &spec.services {
            let endpoints: Vec<&Workload> = spec.endpoints(svc).collect();
            for port in &svc.ports {
                n += 1;
                let chain = format!("KUBE-SVC-{n}");
                chains.push_str(&format!(":{chain} - [0:0]\n"));
                rules.push_str(&format!(
                    "-A KUBE-SERVICES -d {}/32 -p tcp --dport {} -j {chain}\n",
                    svc.vip, port.port
                ));
                for (i, w) in endpoints.iter().enumerate() {
                    let left = endpoints.len() - i;
                    let random = if left > 1 {
                        format!(
                            "-m statistic --mode random --probability {:.5} ",
                            1.0 / left as f64
                        )
                    } else {
                        String::new()
                    };
                    rules.push_str(&format!(
                        "-A {chain} -p tcp {random}-j DNAT --to-destination {}:{}\n",
                        w.ip, port.target_port
                    ));
                }
            }
        }
        let input = format!("{chains}{rules}COMMIT\n");
        let mut cmd = self.ns.command("iptables-restore");
        cmd.arg("--noflush");
        run_with_stdin(cmd, &input).map_err(MeshError::io("programming kube-proxy rules"))
    }
}

fn run_with_stdin(mut cmd: std::process::Command, input: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

// === impl Pod ===

impl Pod {
    /// Creates the pod's namespace, links it to the node (pod `.x/24`, node `.1`), makes
    /// its root directory and, for a sidecar pod, runs `iptables-init` in it.
    pub fn create(
        node: &Node,
        index: usize,
        w: &Workload,
        dir: &Path,
        iptables_init: Option<&Path>,
    ) -> Result<Self, MeshError> {
        let what = |s: &str| format!("{s} for pod {}", w.key());
        let ns = Netns::new("pod").map_err(MeshError::io(what("creating the namespace")))?;
        let [a, b, c, _] = w.ip.octets();
        let gateway = Ipv4Addr::new(a, b, c, 1);
        netns::link(
            &ns,
            "eth0",
            &[&format!("{}/24", w.ip)],
            &node.ns,
            &format!("p{index}"),
            &[&format!("{gateway}/24")],
        )
        .map_err(MeshError::io(what("linking to the node")))?;
        ns.ip(["route", "add", "default", "via", &gateway.to_string()])
            .map_err(MeshError::io(what("adding the default route")))?;
        let root = dir.join(w.key());
        std::fs::create_dir_all(root.join("etc/istio/proxy"))
            .map_err(MeshError::io(what("creating the root directory")))?;
        if let Some(bin) = iptables_init {
            let out = ns
                .command(bin)
                .args(INJECTOR_DEFAULT)
                .output()
                .map_err(MeshError::io(what("running iptables-init")))?;
            if !out.status.success() {
                return Err(MeshError::IptablesInit {
                    pod: w.key(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        Ok(Self {
            sidecar: None,
            app: None,
            workload: w.clone(),
            root,
            ns,
        })
    }
}
