//! Test servers and clients that report addresses, so a test can see where a connection
//! really went: which listener took it, what its original destination was (SO_ORIGINAL_DST
//! after an iptables REDIRECT, or the local address of a transparent TPROXY socket), and
//! which peer address it came from.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

use crate::netns::Netns;

/// Listeners inside a namespace that answer every connection with one line,
/// `<label> local=<addr> orig=<addr|-> peer=<addr>`, then close it. Stopped on drop.
#[derive(Debug)]
pub struct AddrServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

// === impl AddrServer ===

impl AddrServer {
    /// Binds every address (IPv6 ones as v6-only, so `0.0.0.0:p` and `[::]:p` can coexist)
    /// inside `ns` and serves until dropped. With `transparent`, the sockets get
    /// IP_TRANSPARENT, as a TPROXY listener needs.
    pub fn start(
        ns: &Netns,
        label: &str,
        addrs: &[SocketAddr],
        transparent: bool,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &addr in addrs {
            let (ready_tx, ready_rx) = mpsc::channel();
            let label = label.to_string();
            let stop2 = stop.clone();
            let handle = ns.spawn(move || {
                let listener = match bind(addr, transparent) {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                serve(&listener, &label, &stop2);
                Ok(())
            });
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("server thread died before binding"))??;
            threads.push(thread::spawn(move || {
                let _ = handle.join();
            }));
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for AddrServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr, transparent: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        if transparent {
            socket.set_ip_transparent_v6(true)?;
        }
    } else if transparent {
        socket.set_ip_transparent_v4(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn serve(listener: &TcpListener, label: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let local = stream
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let sock = SockRef::from(&stream);
                let orig = if peer.is_ipv4() {
                    sock.original_dst_v4()
                } else {
                    sock.original_dst_v6()
                };
                let orig = orig
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map_or_else(|| "-".to_string(), |a| a.to_string());
                let line = format!("{label} local={local} orig={orig} peer={peer}\n");
                let _ = stream.write_all(line.as_bytes());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Connects from inside `ns` (as this process's user) and returns what the server said.
pub fn connect_from(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    ns.enter(move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply.trim_end().to_string())
    })
}

/// Connects from inside `ns` as another user (a separate process running with `uid`/`gid`,
/// since iptables' owner match looks at the socket's owner) and returns what the server
/// said, or the client's error output.
pub fn connect_as(ns: &Netns, uid: u32, addr: SocketAddr) -> std::io::Result<String> {
    let host = addr.ip().to_string();
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} || exit 7; timeout 5 cat <&3",
        port = addr.port()
    );
    ns.enter(move || {
        let out = Command::new("timeout")
            .args(["10", "bash", "-c", &script])
            .uid(uid)
            .gid(uid)
            .output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(std::io::Error::other(format!(
                "connecting to {addr} as uid {uid} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    })
}
