//! A downstream stream that counts the bytes it reads and writes into the HCM's
//! `downstream_cx_rx_bytes_total` / `downstream_cx_tx_bytes_total`, and runs the HTTP/1
//! request-header clock: hyper only sees complete requests, so this is where the first
//! byte of a request is seen (starting Envoy's per-stream timers) and where a header
//! timeout's 408 is written in hyper's place before the connection is failed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Conn;
use crate::stats::Counter;

/// The HTTP/2 connection preface's start: such connections get no header clock.
const H2_PREFACE: &[u8] = b"PRI ";

#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    rx: Counter,
    tx: Counter,
    /// The connection whose header clock this feeds; `None` for HTTP/2.
    clock: Option<Arc<Conn>>,
    /// The connection's first bytes, until there are enough to tell HTTP/2 apart.
    sniff: Vec<u8>,
    /// A header timeout's reply and how much of it is written.
    reply: Option<(Bytes, usize)>,
}

// === impl Counted ===

impl<T> Counted<T> {
    pub fn new(inner: T, rx: Counter, tx: Counter, clock: Option<Arc<Conn>>) -> Self {
        Self {
            inner,
            rx,
            tx,
            clock,
            sniff: Vec::new(),
            reply: None,
        }
    }

    /// Feeds bytes just read to the header clock.
    fn seen(&mut self, bytes: &[u8]) {
        let Some(conn) = &self.clock else { return };
        if self.sniff.len() < H2_PREFACE.len() {
            let take = (H2_PREFACE.len() - self.sniff.len()).min(bytes.len());
            self.sniff.extend_from_slice(&bytes[..take]);
            if !H2_PREFACE.starts_with(&self.sniff) {
                // Not HTTP/2: stop comparing.
                self.sniff.resize(H2_PREFACE.len(), 0);
            } else if self.sniff.len() == H2_PREFACE.len() {
                conn.stop_header_clock();
                self.clock = None;
                return;
            }
        }
        conn.request_bytes_arrived();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Counted<T> {
    /// Writes the header timeout's reply, half-closes, then fails the read so hyper drops
    /// the connection.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((reply, at)) = &mut self.reply {
            while *at < reply.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &reply[*at..]))?;
                if n == 0 {
                    break;
                }
                self.tx.add(n as u64);
                *at += n;
            }
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request header timeout",
        )))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reply.is_none()
            && let Some(reply) = this.clock.as_ref().and_then(|c| c.take_header_reply())
        {
            this.reply = Some((reply, 0));
        }
        if this.reply.is_some() {
            return this.poll_reply(cx);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.rx.add(n as u64);
            this.seen(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx.add(*n as u64);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx.add(*n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
