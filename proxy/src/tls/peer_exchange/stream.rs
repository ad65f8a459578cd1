//! A stream that does the TCP metadata exchange: our frame goes out before any data we
//! write, and the peer's frame is taken off the front of what we read. Reads and writes stay
//! independent, so neither side waits for the other to speak first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{self, Decode};
use super::{LocalNode, PeerMetadataSlot, PeerOutcome};

/// How much we read at a time while looking for the peer's frame.
const READ_CHUNK: usize = 4096;

#[derive(Debug)]
enum ReadState {
    /// Collecting the peer's frame.
    Frame(BytesMut),
    /// Handing out bytes that came after (or instead of) the frame.
    Replay(Bytes),
    /// Plain pass-through.
    Done,
}

/// A stream with Istio's metadata exchange on top (or a plain pass-through).
#[derive(Debug)]
pub struct PeerExchange<S> {
    inner: S,
    /// Our frame, until fully written.
    out: Bytes,
    state: ReadState,
    peer: PeerMetadataSlot,
}

// === impl PeerExchange ===

impl<S> PeerExchange<S> {
    /// Exchanges metadata as `node` on `inner`.
    pub fn new(inner: S, node: &LocalNode) -> Self {
        Self {
            inner,
            out: Bytes::copy_from_slice(node.frame()),
            state: ReadState::Frame(BytesMut::new()),
            peer: PeerMetadataSlot::default(),
        }
    }

    /// No exchange: every byte passes through.
    pub fn passthrough(inner: S) -> Self {
        Self {
            inner,
            out: Bytes::new(),
            state: ReadState::Done,
            peer: PeerMetadataSlot::default(),
        }
    }

    /// Where the peer's metadata appears once read.
    pub fn peer_metadata(&self) -> PeerMetadataSlot {
        self.peer.clone()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncWrite + Unpin> PeerExchange<S> {
    /// Writes what is left of our frame.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PeerExchange<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                ReadState::Done => return Pin::new(&mut this.inner).poll_read(cx, buf),
                ReadState::Replay(rest) => {
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest.split_to(n));
                    if rest.is_empty() {
                        this.state = ReadState::Done;
                    }
                    return Poll::Ready(Ok(()));
                }
                ReadState::Frame(acc) => match codec::decode(acc) {
                    Decode::NeedMore => {
                        let mut chunk = [0u8; READ_CHUNK];
                        let mut rb = ReadBuf::new(&mut chunk);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                        if rb.filled().is_empty() {
                            // Envoy gives up on a peer that closes before its frame.
                            this.peer.set(PeerOutcome::Absent(
                                "the peer closed before sending its metadata",
                            ));
                            let rest = std::mem::take(acc).freeze();
                            if rest.is_empty() {
                                this.state = ReadState::Done;
                                return Poll::Ready(Ok(()));
                            }
                            this.state = ReadState::Replay(rest);
                            continue;
                        }
                        acc.extend_from_slice(rb.filled());
                    }
                    Decode::Done { consumed, peer } => {
                        this.peer.set(PeerOutcome::Received(peer));
                        let rest = std::mem::take(acc).freeze().slice(consumed..);
                        this.state = replay(rest);
                    }
                    Decode::Invalid { consumed, reason } => {
                        tracing::warn!("istio-peer-exchange: {reason}");
                        this.peer.set(PeerOutcome::Absent(reason));
                        let rest = std::mem::take(acc).freeze().slice(consumed..);
                        this.state = replay(rest);
                    }
                    Decode::TooLarge(len) => {
                        this.peer
                            .set(PeerOutcome::Absent("metadata frame too large"));
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "istio-peer-exchange: the peer announced {len} bytes of metadata, \
                                 more than the {} allowed",
                                codec::MAX_PAYLOAD
                            ),
                        )));
                    }
                },
            }
        }
    }
}

fn replay(rest: Bytes) -> ReadState {
    if rest.is_empty() {
        ReadState::Done
    } else {
        ReadState::Replay(rest)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerExchange<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_frame(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_frame(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_frame(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
