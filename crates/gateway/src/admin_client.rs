//! The client side of the admin API, for `sagw admin …`: one HTTP/1.1 request over hyper.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection.
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("admin API at {addr}: {message}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// What.
        message: String,
    },
    /// No answer in time.
    #[error("admin API at {0}: no answer within 30 s")]
    Timeout(SocketAddr),
}

/// Where to connect for a listen address: a wildcard listener is reached on loopback.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(v6) if v6.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// A path segment with everything but unreserved characters, `:` and `@` percent-encoded
/// (an AOR `sip:alice@example.com` stays readable).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends `method path` with the bearer `token` (and `body` as text), returns the status and the
/// body.
pub async fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), CallError> {
    tokio::time::timeout(
        Duration::from_secs(30),
        exchange(addr, token, method, path, body),
    )
    .await
    .map_err(|_| CallError::Timeout(addr))?
}

async fn exchange(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), CallError> {
    let http = |e: &dyn std::fmt::Display| CallError::Http {
        addr,
        message: e.to_string(),
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| CallError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(conn);
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "text/plain");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_aors_readable_and_escape_the_rest() {
        assert_eq!(segment("sip:alice@example.com"), "sip:alice@example.com");
        assert_eq!(segment("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(
            connect_addr("0.0.0.0:5089".parse().unwrap()),
            "127.0.0.1:5089".parse().unwrap()
        );
        assert_eq!(
            connect_addr("[::]:5089".parse().unwrap()),
            "[::1]:5089".parse().unwrap()
        );
    }
}
