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

/// The default of `admin.request_timeout_secs`, and the metrics listener's: a request head that
/// is not complete after this long closes the connection (hyper times the wait for each request's
/// head, so a keep-alive connection idle this long is closed too), and so does a body not complete
/// this long after its head ([`read_body_within`]). hyper's head timer alone leaves the body
/// untimed: a client that sends a head with `Content-Length: 1000` and then a byte a second held
/// its connection, and its place under the cap, for as long as it liked.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read ([`read_body_within`]); the admin API's bodies are a log filter.
pub const MAX_BODY: usize = 4096;
/// A connection whose writes make no progress for this long is closed. hyper times only the
/// wait for a request head: a client that pipelines requests and never reads the answers stalls
/// hyper's writes, hyper then stops reading, and without this the connection (and its slot under
/// the cap) would be held for ever by a peer that sends nothing more.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection (its minimum is 8 KiB): bounds a request head.
const MAX_BUF: usize = 16 * 1024;

/// Connections one source address (IPv6: its /56) may hold on an HTTP listener, of its
/// `max_connections`: one host that kept every connection open (re-opened as they time out)
/// starved the health checks of the load balancer and the monitoring.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 8;

/// Serve `app` on `listener` until `stop` changes: at most `max_connections` at once, and
/// [`MAX_CONNECTIONS_PER_SOURCE`] from one source (one more is closed as soon as it is accepted,
/// so a flood of idle connections costs the gateway a socket each for no longer than the accept).
/// A request's head must be in within `request_timeout`, and its body within `request_timeout`
/// of the head (see [`REQUEST_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    max_connections: usize,
    request_timeout: Duration,
    what: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let per_source = crate::per_ip::PerIp::new(MAX_CONNECTIONS_PER_SOURCE, Vec::new());
    let app = app.layer(axum::middleware::from_fn_with_state(
        request_timeout,
        read_body_within,
    ));
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
        let slot = match per_source.admit(peer.ip()) {
            crate::per_ip::Admission::Counted(slot) => slot,
            crate::per_ip::Admission::Exempt | crate::per_ip::Admission::Refused => {
                debug!(listener = what, %peer, "connection refused: its source holds its share");
                drop(sock);
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
                .header_read_timeout(request_timeout)
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
            drop((permit, slot));
        });
    }
}

/// Reads the whole request body (at most [`MAX_BODY`]) within `deadline` before anything else
/// looks at the request: a body that does not arrive in time is answered 408 and the connection
/// closed, one too large 413 (closed too: the rest of it is not read). Runs before the routes'
/// own checks (the token among them), so that a client without the token cannot hold a
/// connection by trickling a body either; what it can make the gateway buffer is [`MAX_BODY`].
async fn read_body_within(
    axum::extract::State(deadline): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let closing = |status: StatusCode, why: &'static str| {
        (status, [(header::CONNECTION, "close")], why).into_response()
    };
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(_)) => closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or broken\n",
        ),
        Err(_) => {
            debug!(?deadline, "request body not received in time: closing");
            closing(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            )
        }
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
