//! The HTTP/1.1 server under the metrics and admin listeners: hyper's connection handling
//! (keep-alive, request parsing, bounded buffers and header timeout) around an axum router, with
//! a cap on concurrent connections and a bound on how long a response may wait for its reader.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;
use tracing::debug;

/// A request head that is not complete after this long closes the connection; so does a
/// keep-alive connection idle this long (hyper times the wait for each request's head).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose writes make no progress for this long is closed. hyper times only the
/// wait for a request head: a client that pipelines requests and never reads the answers stalls
/// hyper's writes, hyper then stops reading, and without this the connection (and its slot under
/// the cap) would be held for ever by a peer that sends nothing more.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection (its minimum is 8 KiB): bounds a request head.
const MAX_BUF: usize = 16 * 1024;

/// Serve `app` on `listener` until `stop` changes: at most `max_connections` at once (one more is
/// closed as soon as it is accepted, so a flood of idle connections costs the gateway a socket
/// each for no longer than the accept).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    max_connections: usize,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: wait rather than spin on the error.
                debug!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(listener = what, %peer, max_connections, "connection refused: at the cap");
            drop(sock);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(StallLimit::new(sock)), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(listener = what, %peer, error = %e, "HTTP connection ended");
                    }
                }
                _ = stop.changed() => {}
            }
            drop(permit);
        });
    }
}

/// A stream whose writes fail with `TimedOut` once they have been pending, without a byte
/// written or a flush completed, for [`WRITE_STALL_TIMEOUT`]. The timer is polled with the
/// write, so it wakes the connection task that waits on the socket; hyper keeps polling its
/// pending write, sees the error, and ends the connection.
struct StallLimit<S> {
    inner: S,
    /// Armed at the first pending write after progress, cleared by the next progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallLimit<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            stalled: None,
        }
    }

    /// What a write-side poll of the inner stream means under the limit.
    fn limit<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer has not read the response",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.limit(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.limit(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.limit(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.limit(cx, r)
    }
}
