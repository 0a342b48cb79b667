//! `[admin]`: the admin HTTP API's listener and token, the names it answers to, and the load
//! balancers whose SIP OPTIONS probes are answered without a challenge.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// The admin API's default address: loopback, on a port apart from the ones a SIP host already
/// has in use (5060/5061 SIP, 9090 Prometheus, 9464 this gateway's metrics, 8080/8443 the usual
/// web and proxy ports); 5089 is not in Debian's /etc/services, next to the SIP ports it serves.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5089";

/// `[admin]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// HTTP listen address of the admin API and `/healthz`, `/readyz`; empty: off.
    pub listen: String,
    /// File holding the bearer token (one line; not readable by others).
    pub token_file: String,
    /// Host names the API answers to besides IP literals and `localhost` (a request whose Host
    /// header names anything else is refused: DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Addresses of load balancers whose SIP OPTIONS to the gateway itself are answered 200
    /// (503 while draining) without a challenge.
    pub sip_probers: Vec<String>,
    /// Seconds a client has to send a request head, and again its body once the head is in: a
    /// client that trickles its request is cut then, and its place under the connection cap freed.
    pub request_timeout_secs: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: DEFAULT_LISTEN.into(),
            token_file: "sagw-data/admin.token".into(),
            allowed_hosts: Vec::new(),
            sip_probers: Vec::new(),
            request_timeout_secs: crate::http::REQUEST_TIMEOUT.as_secs(),
        }
    }
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where the API listens; `None`: off.
    pub listen: Option<SocketAddr>,
    /// The bearer token's file (read at start; see [`crate::admin::read_token`]).
    pub token_file: PathBuf,
    /// Lower-cased extra host names.
    pub allowed_hosts: Vec<String>,
    /// Load balancers' addresses.
    pub sip_probers: Vec<IpAddr>,
    /// How long a request head may take to arrive, and its body after it
    /// (`admin.request_timeout_secs`).
    pub request_timeout: Duration,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl AdminSection {
    /// Check every value.
    pub fn validate(&self) -> Result<AdminSettings, ConfigError> {
        let listen = match self.listen.trim() {
            "" => None,
            v => Some(v.parse::<SocketAddr>().map_err(|_| {
                invalid("admin.listen", format!("`{v}` is not an IP:port address"))
            })?),
        };
        if listen.is_some() && self.token_file.trim().is_empty() {
            return Err(invalid(
                "admin.token_file",
                "must name the bearer token's file while admin.listen is set",
            ));
        }
        let mut allowed_hosts = Vec::with_capacity(self.allowed_hosts.len());
        for h in &self.allowed_hosts {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(invalid(
                    "admin.allowed_hosts",
                    format!("`{h}` is not a host name"),
                ));
            }
            allowed_hosts.push(h);
        }
        let sip_probers = self
            .sip_probers
            .iter()
            .map(|p| {
                p.trim().parse::<IpAddr>().map_err(|_| {
                    invalid(
                        "admin.sip_probers",
                        format!("`{p}` is not an IP address (no port, no name)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=300).contains(&self.request_timeout_secs) {
            return Err(invalid(
                "admin.request_timeout_secs",
                "must be 1 to 300 (seconds)",
            ));
        }
        Ok(AdminSettings {
            listen,
            token_file: PathBuf::from(self.token_file.trim()),
            allowed_hosts,
            sip_probers,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_loopback_and_checks_each_key() {
        let s = AdminSection::default().validate().unwrap();
        assert_eq!(s.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert!(s.sip_probers.is_empty());
        let err = |f: fn(&mut AdminSection)| {
            let mut a = AdminSection::default();
            f(&mut a);
            a.validate().unwrap_err().to_string()
        };
        assert!(err(|a| a.listen = "localhost:1".into()).contains("`admin.listen`"));
        assert!(err(|a| a.token_file = String::new()).contains("`admin.token_file`"));
        assert!(err(|a| a.allowed_hosts = vec!["a b".into()]).contains("`admin.allowed_hosts`"));
        assert!(
            err(|a| a.sip_probers = vec!["10.0.0.9:5060".into()]).contains("`admin.sip_probers`")
        );
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        for bad in [0, 301] {
            let a = AdminSection {
                request_timeout_secs: bad,
                ..AdminSection::default()
            };
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains("`admin.request_timeout_secs`"), "{e}");
        }
        let off = AdminSection {
            listen: String::new(),
            token_file: String::new(),
            ..AdminSection::default()
        };
        assert_eq!(off.validate().unwrap().listen, None);
    }
}
