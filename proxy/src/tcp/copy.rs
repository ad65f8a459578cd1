//! Copying bytes both ways between two streams until both sides are done, as tcp_proxy does:
//! an EOF on one side becomes a half-close (shutdown of writes) on the other, and the other
//! direction keeps flowing until it ends too.
//!
//! One future polls both directions, so no stream is split. Small exchanges are read into a
//! buffer on the stack and written straight out; only what the writer cannot take at once
//! is kept on the heap. Bulk flows switch to a larger heap buffer, so each system call moves
//! more. An idle connection holds no copy buffers at all.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

/// How much is read at once into the stack buffer (every connection starts so).
const READ_SIZE: usize = 32 * 1024;
/// The heap buffer of a direction in bulk mode: reads and writes this large take a
/// fraction of the system calls (Envoy reads and writes up to its 1 MiB watermark).
const BULK_SIZE: usize = 256 * 1024;

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
    /// Bytes read but not yet written. Empty (no allocation) unless the writer pushed
    /// back or the direction is in bulk mode, where reads land here directly.
    buf: BytesMut,
    /// A read filled the stack buffer: the flow is bulk, so read and write in
    /// [`BULK_SIZE`] chunks until it turns quiet again.
    bulk: bool,
    /// Bytes read since the reader last had nothing to give.
    burst: usize,
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
///
/// Small exchanges go through a stack buffer and never allocate. Once a read fills it, the
/// direction switches to a heap buffer: reads land there directly, keep coming while the
/// writer is busy (up to [`BULK_SIZE`]), and each write hands the writer all that is
/// buffered. A burst smaller than the stack buffer frees the heap buffer again.
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
        // Hand the writer what is buffered; while it is busy, read ahead.
        while !dir.buf.is_empty() {
            match Pin::new(&mut *writer).poll_write(cx, &dir.buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((io::ErrorKind::WriteZero.into(), false)));
                }
                Poll::Ready(Ok(n)) => {
                    dir.buf.advance(n);
                    dir.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, false))),
                Poll::Pending => {
                    if dir.bulk {
                        read_ahead(cx, dir, reader, from, observer, moved)?;
                    }
                    return Poll::Pending;
                }
            }
        }
        if dir.read_done {
            if !dir.shut_down {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(|e| (e, false))?;
                dir.shut_down = true;
            }
            return Poll::Ready(Ok(()));
        }
        let read = if dir.bulk {
            dir.buf.reserve(BULK_SIZE);
            poll_read_buf(Pin::new(&mut *reader), cx, &mut dir.buf).map_err(|e| (e, true))
        } else {
            read_small(cx, dir, reader, writer)
        };
        match read {
            Poll::Pending => {
                if dir.bulk && dir.burst < READ_SIZE {
                    // Quiet again: give the memory back.
                    dir.bulk = false;
                    dir.buf = BytesMut::new();
                }
                dir.burst = 0;
                if dir.need_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(|e| (e, false))?;
                    dir.need_flush = false;
                }
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => dir.read_done = true,
            Poll::Ready(Ok(n)) => dir.count(n, from, observer, moved),
        }
    }
}

/// Reads into the stack buffer and writes straight out; what the writer does not take is
/// kept in `dir.buf`. A full read switches the direction to bulk mode.
fn read_small<R, W>(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    reader: &mut R,
    writer: &mut W,
) -> Poll<Result<usize, (io::Error, bool)>>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
    let mut buf = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf)).map_err(|e| (e, true))?;
    let data = buf.filled();
    if data.len() == READ_SIZE {
        dir.bulk = true;
    }
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
                // Keep the rest until the writer has room again (the caller's loop
                // writes it, and its pending write registers for the wake-up).
                dir.buf.extend_from_slice(&data[written..]);
                break;
            }
        }
    }
    Poll::Ready(Ok(data.len()))
}

/// While the writer is busy, keeps reading into the bulk buffer until it holds
/// [`BULK_SIZE`] or the reader has nothing more. The writer's pending write has registered
/// the wake-up, so this may stop on data as well as on `Pending`.
fn read_ahead<R, O>(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    reader: &mut R,
    from: From,
    observer: &O,
    moved: &mut bool,
) -> Result<(), (io::Error, bool)>
where
    R: AsyncRead + Unpin + ?Sized,
    O: Observer + ?Sized,
{
    while !dir.read_done && dir.buf.len() < BULK_SIZE {
        dir.buf.reserve(BULK_SIZE - dir.buf.len());
        match poll_read_buf(Pin::new(&mut *reader), cx, &mut dir.buf) {
            Poll::Pending => {
                dir.burst = 0;
                break;
            }
            Poll::Ready(Err(e)) => return Err((e, true)),
            Poll::Ready(Ok(0)) => dir.read_done = true,
            Poll::Ready(Ok(n)) => dir.count(n, from, observer, moved),
        }
    }
    Ok(())
}

// === impl Direction ===

impl Direction {
    fn count<O: Observer + ?Sized>(
        &mut self,
        n: usize,
        from: From,
        observer: &O,
        moved: &mut bool,
    ) {
        *moved = true;
        self.total += n as u64;
        self.burst += n;
        observer.copied(from, n);
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

    /// Bulk both ways through pipes of odd, small capacities, so writes are partial and
    /// the writer pushes back at every point of the stack, bulk and read-ahead paths.
    #[tokio::test]
    async fn bulk_survives_partial_writes_and_back_pressure_both_ways() {
        let (mut client, mut a) = duplex(70_001);
        let (mut b, mut server) = duplex(5_003);
        let proxy = tokio::spawn(async move {
            let observer = |_: From, _: usize| {};
            copy_bidirectional(&mut a, &mut b, None, &observer).await
        });
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let down: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 + 5) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let server_side = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(&mut server);
            let (got, ()) = tokio::join!(
                async {
                    let mut got = Vec::new();
                    rd.read_to_end(&mut got).await.unwrap();
                    got
                },
                async {
                    // A slow reader on the other end: small writes with pauses.
                    for chunk in down2.chunks(100_000) {
                        wr.write_all(chunk).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    wr.shutdown().await.unwrap();
                }
            );
            got
        });
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let (got_down, ()) = tokio::join!(
            async {
                let mut got = Vec::new();
                let mut chunk = [0u8; 1000];
                loop {
                    let n = rd.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break got;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
            },
            async {
                wr.write_all(&up2).await.unwrap();
                wr.shutdown().await.unwrap();
            }
        );
        let got_up = server_side.await.unwrap();
        assert!(
            got_up == up,
            "client to server: {} of {} bytes, in order",
            got_up.len(),
            up.len()
        );
        assert!(
            got_down == down,
            "server to client: {} of {} bytes",
            got_down.len(),
            down.len()
        );
        let totals = proxy.await.unwrap().unwrap();
        assert_eq!((totals.a_to_b, totals.b_to_a), (3_000_000, 2_000_000));
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
