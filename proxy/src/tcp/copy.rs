//! Copying bytes both ways between two streams until both sides are done, as tcp_proxy does:
//! an EOF on one side becomes a half-close (shutdown of writes) on the other, and the other
//! direction keeps flowing until it ends too.
//!
//! One future polls both directions, so no stream is split. Data is read into a buffer on the
//! stack and written straight out; only what the writer cannot take at once is kept on the
//! heap. An idle connection therefore holds no copy buffers at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How much is read at once.
const READ_SIZE: usize = 32 * 1024;

/// Which side bytes were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    A,
    B,
}

/// Told about every chunk copied, for byte counters.
pub trait Observer {
    fn copied(&self, from: From, bytes: usize);
}

impl<F: Fn(From, usize)> Observer for F {
    fn copied(&self, from: From, bytes: usize) {
        self(from, bytes)
    }
}

/// How a copy ended.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// No byte moved either way for the idle timeout.
    #[error("idle timeout")]
    Idle,
    /// Reading or writing side A failed (a reset, typically).
    #[error("side A: {0}")]
    A(io::Error),
    /// Reading or writing side B failed.
    #[error("side B: {0}")]
    B(io::Error),
}

/// Bytes moved in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written.
    pending: Vec<u8>,
    pos: usize,
    read_done: bool,
    shut_down: bool,
    total: u64,
    need_flush: bool,
}

/// Copies until both directions have ended, or `idle` passes without traffic.
pub async fn copy_bidirectional<A, B, O>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
    observer: &O,
) -> Result<Totals, CopyError>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: Observer + ?Sized,
{
    Copy {
        a,
        b,
        ab: Direction::default(),
        ba: Direction::default(),
        idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)), Instant::now())),
        observer,
    }
    .await
}

struct Copy<'a, A: ?Sized, B: ?Sized, O: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    ab: Direction,
    ba: Direction,
    /// The timeout, its timer, and when bytes last moved.
    idle: Option<(Duration, Pin<Box<Sleep>>, Instant)>,
    observer: &'a O,
}

impl<A, B, O> Future for Copy<'_, A, B, O>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: Observer + ?Sized,
{
    type Output = Result<Totals, CopyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut moved = false;
        let ab = poll_direction(
            cx,
            &mut this.ab,
            &mut *this.a,
            &mut *this.b,
            From::A,
            this.observer,
            &mut moved,
        )
        .map_err(|(e, side)| side_error(e, side, From::A));
        let ba = poll_direction(
            cx,
            &mut this.ba,
            &mut *this.b,
            &mut *this.a,
            From::B,
            this.observer,
            &mut moved,
        )
        .map_err(|(e, side)| side_error(e, side, From::B));
        if let Poll::Ready(Err(e)) = ab {
            return Poll::Ready(Err(e));
        }
        if let Poll::Ready(Err(e)) = ba {
            return Poll::Ready(Err(e));
        }
        if ab.is_ready() && ba.is_ready() {
            return Poll::Ready(Ok(Totals {
                a_to_b: this.ab.total,
                b_to_a: this.ba.total,
            }));
        }
        if let Some((timeout, sleep, last)) = this.idle.as_mut() {
            if moved {
                *last = Instant::now();
            }
            loop {
                if sleep.as_mut().poll(cx).is_pending() {
                    break;
                }
                // The timer fired; it only counts if nothing moved since it was set.
                let deadline = *last + *timeout;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(CopyError::Idle));
                }
                sleep.as_mut().reset(deadline);
            }
        }
        Poll::Pending
    }
}

/// Maps an error to the side whose stream failed: `reader_failed` says whether it was the
/// reading side of the direction that started at `from`.
fn side_error(e: io::Error, reader_failed: bool, from: From) -> CopyError {
    match (from, reader_failed) {
        (From::A, true) | (From::B, false) => CopyError::A(e),
        (From::B, true) | (From::A, false) => CopyError::B(e),
    }
}

/// Moves bytes from `reader` to `writer` until the reader ends and the writer is shut down.
/// Errors carry whether the reader (true) or the writer (false) failed.
fn poll_direction<R, W, O>(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    reader: &mut R,
    writer: &mut W,
    from: From,
    observer: &O,
    moved: &mut bool,
) -> Poll<Result<(), (io::Error, bool)>>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
    O: Observer + ?Sized,
{
    loop {
        // Drain what is left over from a write the writer could not take at once.
        while dir.pos < dir.pending.len() {
            let n = ready!(Pin::new(&mut *writer).poll_write(cx, &dir.pending[dir.pos..]))
                .map_err(|e| (e, false))?;
            if n == 0 {
                return Poll::Ready(Err((io::ErrorKind::WriteZero.into(), false)));
            }
            dir.pos += n;
            dir.need_flush = true;
        }
        if !dir.pending.is_empty() {
            dir.pending = Vec::new();
            dir.pos = 0;
        }
        if dir.read_done {
            if !dir.shut_down {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(|e| (e, false))?;
                dir.shut_down = true;
            }
            return Poll::Ready(Ok(()));
        }
        let mut stack = [0u8; READ_SIZE];
        let mut buf = ReadBuf::new(&mut stack);
        match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
            Poll::Pending => {
                if dir.need_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(|e| (e, false))?;
                    dir.need_flush = false;
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err((e, true))),
            Poll::Ready(Ok(())) => {}
        }
        let data = buf.filled();
        if data.is_empty() {
            dir.read_done = true;
            continue;
        }
        *moved = true;
        dir.total += data.len() as u64;
        observer.copied(from, data.len());
        let mut written = 0;
        while written < data.len() {
            match Pin::new(&mut *writer).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((io::ErrorKind::WriteZero.into(), false)));
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    dir.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, false))),
                Poll::Pending => {
                    // Keep the rest until the writer has room again.
                    dir.pending = data[written..].to_vec();
                    dir.pos = 0;
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// A connected pair of loopback TCP sockets.
    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let (client, mut a) = tcp_pair().await;
        let (mut b, server) = tcp_pair().await;
        let counted = std::sync::Arc::new(AtomicU64::new(0));
        let c2 = counted.clone();
        let proxy = tokio::spawn(async move {
            let observer = move |_: From, n: usize| {
                c2.fetch_add(n as u64, Ordering::Relaxed);
            };
            copy_bidirectional(&mut a, &mut b, None, &observer).await
        });
        // Several megabytes, far more than socket buffers hold, so writers are pushed back.
        let big: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let sent = big.clone();
        let send = tokio::spawn(async move {
            client_wr.write_all(&sent).await.unwrap();
            client_wr.shutdown().await.unwrap();
        });
        let serve = tokio::spawn(async move {
            let mut got = Vec::new();
            server_rd.read_to_end(&mut got).await.unwrap();
            server_wr.write_all(b"reply").await.unwrap();
            server_wr.shutdown().await.unwrap();
            got
        });
        let mut reply = Vec::new();
        client_rd.read_to_end(&mut reply).await.unwrap();
        send.await.unwrap();
        let got = serve.await.unwrap();
        assert!(
            got == big,
            "EOF from the client reaches the server after all the data"
        );
        assert_eq!(
            reply, b"reply",
            "the other direction kept flowing after half-close"
        );
        let totals = proxy.await.unwrap().unwrap();
        assert_eq!(
            totals,
            Totals {
                a_to_b: 4_000_000,
                b_to_a: 5
            }
        );
        assert_eq!(counted.load(Ordering::Relaxed), 4_000_005);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_without_traffic() {
        let (mut client, mut a) = duplex(64);
        let (mut b, _server) = duplex(64);
        let observer = |_: From, _: usize| {};
        let proxy = tokio::spawn(async move {
            copy_bidirectional(&mut a, &mut b, Some(Duration::from_secs(10)), &observer).await
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
        }
        assert!(
            !proxy.is_finished(),
            "traffic every 6s keeps a 10s idle timeout at bay"
        );
        tokio::time::sleep(Duration::from_secs(11)).await;
        let result = proxy.await.unwrap();
        assert!(matches!(result, Err(CopyError::Idle)), "{result:?}");
    }
}
