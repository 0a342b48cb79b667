//! The configuration of everything towards the servers behind the gateway: `proxy.next_hops`
//! (addresses or names), active probing (`proxy.probe_*`), the DNS servers (`[dns]`) and outbound
//! TLS (`tls.next_hop_ca`, `tls.client_cert`/`client_key`, `[[tls.next_hop]]`), validated into
//! [`HopSettings`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use sagw_proxy::{NextHop, ProbeConfig, Transport};
use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::resolver::{HopTarget, NextHopSpec};
use crate::tls_client::{ClientCertFiles, OutboundTlsSettings, PeerTls};

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `[dns]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// `ip` or `ip:port` of the DNS servers to ask (empty: those of `/etc/resolv.conf`).
    pub nameservers: Vec<String>,
}

/// One `[[tls.next_hop]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NextHopTlsSection {
    /// Host name (or IP address) of the next hop these settings apply to.
    pub host: String,
    /// PEM CA bundle for it (default `tls.next_hop_ca`).
    pub ca: String,
    /// PEM client certificate chain for it (default `tls.client_cert`).
    pub client_cert: String,
    /// PEM key of that certificate (default `tls.client_key`).
    pub client_key: String,
    /// Name to verify and send as SNI instead of `host`.
    pub server_name: String,
}

/// What [`validate`] makes of those settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSettings {
    /// `proxy.next_hops`, in order.
    pub specs: Vec<NextHopSpec>,
    /// Probing.
    pub probe: ProbeConfig,
    /// `[dns] nameservers` (empty: the system's).
    pub nameservers: Vec<SocketAddr>,
    /// Outbound TLS.
    pub outbound_tls: OutboundTlsSettings,
}

impl HopSettings {
    /// The entries given as addresses (the others are names, resolved at start and again as
    /// their records expire).
    pub fn literal_hops(&self) -> Vec<NextHop> {
        self.specs
            .iter()
            .filter_map(|s| match &s.target {
                HopTarget::Addr(h) => Some(*h),
                HopTarget::Name(_) => None,
            })
            .collect()
    }
}

fn path(v: &str) -> Option<PathBuf> {
    match v.trim() {
        "" => None,
        p => Some(PathBuf::from(p)),
    }
}

fn cert_pair(
    key_prefix: &str,
    cert: &str,
    key: &str,
) -> Result<Option<ClientCertFiles>, ConfigError> {
    match (path(cert), path(key)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ClientCertFiles { cert, key })),
        (Some(_), None) => Err(invalid(
            format!("{key_prefix}client_key"),
            "must be set when client_cert is",
        )),
        (None, Some(_)) => Err(invalid(
            format!("{key_prefix}client_cert"),
            "must be set when client_key is",
        )),
    }
}

/// Check the next-hop, probing, DNS and outbound TLS settings.
pub fn validate(c: &Config) -> Result<HopSettings, ConfigError> {
    let specs = c
        .proxy
        .next_hops
        .iter()
        .enumerate()
        .map(|(i, h)| {
            NextHopSpec::parse(h).map_err(|e| {
                invalid(
                    format!("proxy.next_hops[{i}]"),
                    format!(
                        "`{h}`: {e} (write transport:host:port, sip:host, sips:host or a host name)"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let interval = match c.proxy.probe_interval_secs {
        0 => None,
        s if s > 3600 => {
            return Err(invalid(
                "proxy.probe_interval_secs",
                "must be between 0 (off) and 3600",
            ));
        }
        s => Some(Duration::from_secs(s)),
    };
    if !(1..=100).contains(&c.proxy.probe_failures_down) {
        return Err(invalid(
            "proxy.probe_failures_down",
            "must be between 1 and 100",
        ));
    }
    let nameservers = c
        .dns
        .nameservers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    invalid(
                        format!("dns.nameservers[{i}]"),
                        format!("`{s}` is not an IP address or IP:port"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ca = path(&c.tls.next_hop_ca);
    let client = cert_pair("tls.", &c.tls.client_cert, &c.tls.client_key)?;
    let mut peers = Vec::with_capacity(c.tls.next_hop.len());
    for (i, p) in c.tls.next_hop.iter().enumerate() {
        let key = format!("tls.next_hop[{i}]");
        let host = p.host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(invalid(format!("{key}.host"), "must name the next hop"));
        }
        let peer_ca = path(&p.ca);
        if peer_ca.is_none() && ca.is_none() {
            return Err(invalid(
                format!("{key}.ca"),
                "must be set when tls.next_hop_ca is not",
            ));
        }
        let server_name = match p.server_name.trim() {
            "" => None,
            n if rustls_pki_types::ServerName::try_from(n).is_err() => {
                return Err(invalid(
                    format!("{key}.server_name"),
                    format!("`{n}` is not a DNS name or IP address"),
                ));
            }
            n => Some(n.to_owned()),
        };
        peers.push(PeerTls {
            host,
            ca: peer_ca,
            client: cert_pair(&format!("{key}."), &p.client_cert, &p.client_key)?,
            server_name,
        });
    }
    // A TLS hop needs a CA to be verified against: the default, or one of its own.
    for (i, s) in specs.iter().enumerate() {
        if s.transport() != Some(Transport::Tls) || ca.is_some() {
            continue;
        }
        let host = match &s.target {
            HopTarget::Addr(h) => h.addr.ip().to_string(),
            HopTarget::Name(q) => q.host.clone(),
        };
        if !peers.iter().any(|p| p.host == host) {
            return Err(invalid(
                "tls.next_hop_ca",
                format!(
                    "must be set when a next hop uses tls (proxy.next_hops[{i}] `{}`), or give it a [[tls.next_hop]] ca",
                    s.configured
                ),
            ));
        }
    }
    Ok(HopSettings {
        specs,
        probe: ProbeConfig {
            interval,
            failures_down: c.proxy.probe_failures_down,
        },
        nameservers,
        outbound_tls: OutboundTlsSettings { ca, client, peers },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[proxy]\nprobe_interval_secs = 4000").contains("`proxy.probe_interval_secs`"));
        assert!(err("[proxy]\nprobe_failures_down = 0").contains("`proxy.probe_failures_down`"));
        assert!(err("[dns]\nnameservers = [\"dns.example\"]").contains("`dns.nameservers[0]`"));
        assert!(err("[tls]\nclient_cert = \"c.pem\"").contains("`tls.client_key`"));
        assert!(err("[[tls.next_hop]]\nhost = \"pool\"").contains("`tls.next_hop[0].ca`"));
        assert!(
            err("[tls]\nnext_hop_ca = \"ca.pem\"\n[[tls.next_hop]]\nhost = \"pool\"\nserver_name = \"a b\"")
                .contains("`tls.next_hop[0].server_name`")
        );
        assert!(
            err("[proxy]\nnext_hops = [\"sips:pool.example.com\"]").contains("`tls.next_hop_ca`")
        );
        assert!(
            err("[proxy]\nnext_hops = [\"sip:u@pool.example.com\"]")
                .contains("`proxy.next_hops[0]`")
        );
    }

    #[test]
    fn names_probing_dns_and_client_certificates() {
        let s = Config::parse(
            "[proxy]\nnext_hops = [\"tls:pool.example.com\", \"udp:10.0.0.5:5060\"]\nprobe_interval_secs = 5\n\
             [dns]\nnameservers = [\"127.0.0.1:5353\", \"10.0.0.53\"]\n\
             [tls]\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n\
             [[tls.next_hop]]\nhost = \"Pool.Example.com\"\nca = \"pool-ca.pem\"\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let h = &s.hops;
        assert_eq!(h.specs.len(), 2);
        assert_eq!(h.literal_hops().len(), 1);
        assert_eq!(s.next_hops, h.literal_hops());
        assert_eq!(h.probe.interval, Some(Duration::from_secs(5)));
        assert_eq!(h.probe.failures_down, 3);
        assert_eq!(h.nameservers[1], "10.0.0.53:53".parse().unwrap());
        assert_eq!(h.outbound_tls.peers[0].host, "pool.example.com");
        assert!(h.outbound_tls.client.is_some());
    }
}
