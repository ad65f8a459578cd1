//! The backends every scenario talks to: a TCP echo, a bulk source and an HTTP/1.1 server,
//! each on its own loopback port, served by one dedicated thread.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The ports of the running backends.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    /// Echoes every byte back.
    pub echo: SocketAddr,
    /// Reads an 8-byte big-endian length, answers with that many bytes; repeats.
    pub bulk: SocketAddr,
    /// Answers every HTTP/1.1 request with 200 and `http_body` bytes (HTTP/1.1 and h2c).
    pub http: SocketAddr,
}

/// Starts the backends on a thread of their own (a current-thread runtime, so the backend
/// costs the same single core whichever proxy is measured).
pub fn start(http_body: usize) -> std::io::Result<Upstreams> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("upstreams".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let bind = || TcpListener::bind(("127.0.0.1", 0));
                let (echo, bulk, http) = match tokio::try_join!(bind(), bind(), bind()) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let addrs = (|| {
                    Ok(Upstreams {
                        echo: echo.local_addr()?,
                        bulk: bulk.local_addr()?,
                        http: http.local_addr()?,
                    })
                })();
                let _ = tx.send(addrs);
                tokio::join!(
                    serve(echo, echo_conn),
                    serve(bulk, bulk_conn),
                    serve(http, move |s| http_conn(s, http_body)),
                );
            });
        })?;
    rx.recv().map_err(std::io::Error::other)?
}

async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(handler(stream));
            }
        })
        .await;
}

async fn echo_conn(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn bulk_conn(mut stream: TcpStream) -> std::io::Result<()> {
    let chunk = vec![0x5au8; 256 * 1024];
    loop {
        let mut len = [0u8; 8];
        if stream.read_exact(&mut len).await.is_err() {
            return Ok(());
        }
        let mut left = u64::from_be_bytes(len);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
    }
}

async fn http_conn(mut stream: TcpStream, body: usize) -> std::io::Result<()> {
    let response = {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {body}\r\n\r\n"
        )
        .into_bytes();
        r.extend(std::iter::repeat_n(b'x', body));
        r
    };
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Answer every complete request head in the buffer (GETs only: no bodies).
        let mut answered = 0;
        let mut out = Vec::new();
        while let Some(end) = find(&buf[answered..], b"\r\n\r\n") {
            answered += end + 4;
            out.extend_from_slice(&response);
        }
        if answered > 0 {
            buf.drain(..answered);
            stream.write_all(&out).await?;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The offset of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
