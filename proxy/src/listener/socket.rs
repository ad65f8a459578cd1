//! Listening sockets and the original destination of redirected connections.

use std::net::SocketAddr;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::TcpStream;

/// How a listening socket is set up.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    /// IP_TRANSPARENT: accept connections for any address (TPROXY).
    pub transparent: bool,
    /// IP_FREEBIND: bind addresses not (yet) on this host.
    pub freebind: bool,
    pub backlog: u32,
}

/// Binds a listening socket like Envoy does: SO_REUSEADDR, IPv6 sockets v6-only, optional
/// transparent and freebind. The socket is non-blocking, ready for the runtime to adopt.
pub fn bind(addr: SocketAddr, opts: BindOptions) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        if opts.transparent {
            socket.set_ip_transparent_v6(true)?;
        }
        if opts.freebind {
            socket.set_freebind_v6(true)?;
        }
    } else {
        if opts.transparent {
            socket.set_ip_transparent_v4(true)?;
        }
        if opts.freebind {
            socket.set_freebind_v4(true)?;
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// The destination the client dialled before iptables redirected the connection
/// (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), or `None` when it was not redirected.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    addr.ok()?.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unredirected_connection_reports_its_own_destination() {
        let listener = tokio::net::TcpListener::from_std(
            bind(
                "127.0.0.1:0".parse().unwrap(),
                BindOptions {
                    transparent: false,
                    freebind: false,
                    backlog: 16,
                },
            )
            .unwrap(),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr);
        let (accepted, _) = tokio::join!(listener.accept(), client);
        let (stream, _) = accepted.unwrap();
        // Without iptables, conntrack still knows the connection: its original
        // destination is the listener's own address.
        assert_eq!(original_dst(&stream).unwrap_or(addr), addr);
    }
}
