//! `--run-validation`: prove that redirection works before the pod starts, as Istio's
//! `istio-validation` container does.
//!
//! Listen on loopback at the outbound and inbound capture ports; dial `127.0.0.6:<probe port>`
//! (`[::6]` for IPv6 pods) from loopback. Run as the proxy uid, that connection is captured by
//! the `--uid-owner ... -j ISTIO_IN_REDIRECT` rule, so one of our listeners accepts it and
//! finds the probe port in `SO_ORIGINAL_DST`. If that does not happen within the probe timeout,
//! the rules are not working.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use crate::config::Config;

/// The exit code Istio uses when validation fails (`ValidationErrorCode`).
pub const VALIDATION_EXIT_CODE: u8 = 126;

/// The message istio-iptables prints when validation fails.
pub const VALIDATION_FAILED_MESSAGE: &str = "iptables validation failed; workload is not ready for Istio.
When using Istio CNI, this can occur if a pod is scheduled before the node is ready.

If installed with 'cni.repair.deletePods=true', this pod should automatically be deleted and retry.
Otherwise, this pod will need to be manually removed so that it is scheduled on a node with istio-cni running, allowing iptables rules to be established.";

/// Why validation failed.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("no validation listener could be opened ({0})")]
    NoListener(String),
    #[error(
        "no redirected connection arrived within {timeout:?} (dialled {probe} from loopback; \
         expected it to be redirected to port {proxy_port} or {inbound_port})"
    )]
    Timeout {
        timeout: Duration,
        probe: SocketAddr,
        proxy_port: u16,
        inbound_port: u16,
    },
}

/// Runs the probe. `ipv6` chooses `::1`/`::6` instead of `127.0.0.1`/`127.0.0.6`.
pub fn validate(cfg: &Config, ipv6: bool) -> Result<(), ValidationError> {
    let (listen_ip, probe_ip): (IpAddr, IpAddr) = if ipv6 {
        (
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(),
        )
    } else {
        (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 6).into(),
        )
    };
    let probe = SocketAddr::new(probe_ip, cfg.iptables_probe_port);
    let (done_tx, done_rx) = mpsc::channel::<SocketAddr>();

    let mut errors = Vec::new();
    let mut listening = 0;
    for port in [cfg.proxy_port, cfg.inbound_capture_port] {
        let addr = SocketAddr::new(listen_ip, port);
        match TcpListener::bind(addr) {
            Ok(listener) => {
                tracing::info!("validation: listening on {addr}");
                listening += 1;
                let tx = done_tx.clone();
                let want = cfg.iptables_probe_port;
                thread::spawn(move || serve(&listener, want, &tx));
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    if listening == 0 {
        return Err(ValidationError::NoListener(errors.join(", ")));
    }

    let deadline = Instant::now() + cfg.probe_timeout;
    thread::spawn(move || {
        loop {
            if let Err(e) = dial(listen_ip, probe) {
                tracing::debug!("validation: dialling {probe}: {e}");
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(original) => {
            tracing::info!("validation passed: connection to {original} was redirected");
            Ok(())
        }
        Err(_) => Err(ValidationError::Timeout {
            timeout: cfg.probe_timeout,
            probe,
            proxy_port: cfg.proxy_port,
            inbound_port: cfg.inbound_capture_port,
        }),
    }
}

/// Accepts connections, replies with the original destination port, and reports the first
/// one whose original destination is the probe port.
fn serve(listener: &TcpListener, want: u16, done: &mpsc::Sender<SocketAddr>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let sock = SockRef::from(&stream);
        let original = match stream.local_addr() {
            Ok(SocketAddr::V4(_)) => sock.original_dst_v4(),
            _ => sock.original_dst_v6(),
        };
        let Some(original) = original.ok().and_then(|a| a.as_socket()) else {
            continue;
        };
        let _ = stream.write_all(original.port().to_string().as_bytes());
        if original.port() == want {
            let _ = done.send(original);
            return;
        }
    }
}

/// One connection attempt to the probe address from loopback.
fn dial(from: IpAddr, to: SocketAddr) -> std::io::Result<()> {
    let domain = if to.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(1))
}
