//! The HTTP/1.1 server under the metrics and admin listeners: hyper's connection handling
//! (keep-alive, request parsing, bounded buffers and header timeout) around an axum router, with
//! a cap on concurrent connections.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::debug;

/// A request head that is not complete after this long closes the connection; so does a
/// keep-alive connection idle this long (hyper times the wait for each request's head).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
                .serve_connection(TokioIo::new(sock), svc);
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
