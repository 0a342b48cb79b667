//! Configuration of what arrives at the listeners: the PROXY protocol per listener
//! (`[listen.proxy_protocol.<listener>]`) and servers trusted by their TLS certificate
//! (`tls.peer_ca`, `proxy.trusted_peer_names`). Validated into [`crate::listener::ListenerSpec`]
//! and [`PeerTrustSettings`], errors naming the key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use sagw_proxy::Transport;
use serde::Deserialize;

use crate::config::{ConfigError, Settings};
use crate::listener::ListenerSpec;
use crate::proxy_protocol::{Balancers, Prefix};

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `[listen.proxy_protocol.<listener>]`: the listener sits behind load balancers that write a
/// PROXY protocol header (v2, or v1) before the client's bytes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolSection {
    /// The balancers' addresses or prefixes (`10.0.0.7`, `10.0.0.0/24`): connections from them
    /// must start with a header; connections from anywhere else are direct clients.
    pub from: Vec<String>,
}

/// Sets each listener's balancers from `[listen.proxy_protocol.<listener>]`.
pub fn apply_proxy_protocol(
    listeners: &mut [ListenerSpec],
    sections: &BTreeMap<String, ProxyProtocolSection>,
) -> Result<(), ConfigError> {
    for (name, section) in sections {
        let key = format!("listen.proxy_protocol.{name}");
        let Some(listener) = listeners.iter_mut().find(|l| &l.name == name) else {
            return Err(invalid(key, format!("no listener is named `{name}`")));
        };
        if listener.transport == Transport::Udp {
            return Err(invalid(
                key,
                "the PROXY protocol is for tcp and tls listeners (a UDP datagram has no header)",
            ));
        }
        if section.from.is_empty() {
            return Err(invalid(
                format!("{key}.from"),
                "name at least one balancer address or prefix",
            ));
        }
        let prefixes = section
            .from
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<Prefix>()
                    .map_err(|e| invalid(format!("{key}.from[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        listener.proxy_protocol = Some(Balancers::new(prefixes));
    }
    Ok(())
}

/// Servers trusted by their certificate (see [`crate::peer_trust`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTrustSettings {
    /// `tls.peer_ca`: the CA bundle (PEM) peer certificates must chain to.
    pub ca: PathBuf,
    /// `proxy.trusted_peer_names`: DNS names a peer certificate must carry (one of them).
    pub names: Vec<String>,
}

/// Validates `tls.peer_ca` and `proxy.trusted_peer_names`: both set or neither, names that are
/// DNS names (no wildcards, no addresses), and a TLS listener to present them on.
pub fn peer_trust(
    peer_ca: &str,
    names: &[String],
    listeners: &[ListenerSpec],
) -> Result<Option<PeerTrustSettings>, ConfigError> {
    let ca = peer_ca.trim();
    match (ca.is_empty(), names.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            return Err(invalid(
                "tls.peer_ca",
                "must be set when proxy.trusted_peer_names is (the CA that signs the peers' certificates)",
            ));
        }
        (false, true) => {
            return Err(invalid(
                "proxy.trusted_peer_names",
                "must name at least one peer when tls.peer_ca is set",
            ));
        }
        (false, false) => {}
    }
    for (i, n) in names.iter().enumerate() {
        let key = format!("proxy.trusted_peer_names[{i}]");
        let bare = n.trim().trim_end_matches('.');
        if bare.parse::<IpAddr>().is_ok() {
            return Err(invalid(
                key,
                format!(
                    "`{n}` is an address: peers are trusted by the DNS name in their certificate (addresses go in proxy.trusted_peers)"
                ),
            ));
        }
        if bare.contains('*') {
            return Err(invalid(
                key,
                format!("`{n}`: wildcards are not accepted, list each peer's name"),
            ));
        }
        if rustls_pki_types::DnsName::try_from(bare).is_err() {
            return Err(invalid(key, format!("`{n}` is not a DNS name")));
        }
    }
    if !listeners.iter().any(|l| l.transport == Transport::Tls) {
        return Err(invalid(
            "proxy.trusted_peer_names",
            "peers present their certificate over TLS: open a tls listener",
        ));
    }
    Ok(Some(PeerTrustSettings {
        ca: PathBuf::from(ca),
        names: names.to_vec(),
    })
    .filter(|_| true))
}

/// A `proxy.trusted_peers` address kept beside trust by certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTrustBesideNames(pub IpAddr);

impl std::fmt::Display for AddressTrustBesideNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self.0;
        write!(
            f,
            "proxy.trusted_peers: {ip} is trusted by its address alone while servers are also \
             trusted by certificate (proxy.trusted_peer_names): any connection from {ip} skips \
             client authentication without presenting a certificate. Keep address entries only \
             for servers that cannot present one (the gateways of a pool talk over TCP), and \
             remove those now trusted by name"
        )
    }
}

impl Settings {
    /// Address-trusted peers while certificate trust is configured: each logged as a warning at
    /// start and by `sagw check-config`. A warning, not an error: pool gateways are trusted by
    /// address (docs/pools.md) and a migration to certificates keeps both for a while.
    pub fn address_trust_beside_names(&self) -> Vec<AddressTrustBesideNames> {
        if self.peer_trust.is_none() {
            return Vec::new();
        }
        self.trusted_peers
            .iter()
            .map(|ip| AddressTrustBesideNames(*ip))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:0\"\n[[listen.extra]]\nname = \"lb\"\ntransport = \"tls\"\naddress = \"127.0.0.1:0\"\n";

    fn err(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|_| ())) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn proxy_protocol_per_listener() {
        let text = format!(
            "{BASE}[listen.proxy_protocol.lb]\nfrom = [\"10.0.0.0/24\", \"192.0.2.7\"]\n[listen.proxy_protocol.tcp]\nfrom = [\"::1\"]\n"
        );
        let s = Config::parse(&text).unwrap().validate().unwrap();
        let pp: Vec<_> = s
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.proxy_protocol.is_some()))
            .collect();
        assert_eq!(
            pp,
            [("udp", false), ("tcp", true), ("tls", false), ("lb", true)]
        );
        let lb = s.listeners[3].proxy_protocol.as_ref().unwrap();
        assert!(lb.contains("10.0.0.9".parse().unwrap()));
        assert!(!lb.contains("127.0.0.1".parse().unwrap()));
        let e = |t: &str| err(&format!("{BASE}{t}"));
        assert!(
            e("[listen.proxy_protocol.udp]\nfrom = [\"10.0.0.1\"]")
                .contains("`listen.proxy_protocol.udp`: the PROXY protocol is for tcp and tls")
        );
        assert!(
            e("[listen.proxy_protocol.nope]\nfrom = [\"10.0.0.1\"]")
                .contains("`listen.proxy_protocol.nope`: no listener is named `nope`")
        );
        assert!(
            e("[listen.proxy_protocol.lb]\nfrom = []")
                .contains("`listen.proxy_protocol.lb.from`: name at least one")
        );
        assert!(
            e("[listen.proxy_protocol.lb]\nfrom = [\"10.0.0.1\", \"10.0.0.7/24\"]")
                .contains("`listen.proxy_protocol.lb.from[1]`: `10.0.0.7/24` has host bits set")
        );
        assert!(e("[listen.proxy_protocol.lb]\nfrom = [\"lb.example.com\"]").contains("from[0]"));
        assert!(
            e("[listen.proxy_protocol.lb]\nfrom = [\"10.0.0.1\"]\nsend = true").contains("send")
        );
    }

    #[test]
    fn peer_trust_keys() {
        let ok = format!(
            "{BASE}[tls]\npeer_ca = \"/etc/sagw/pool-ca.pem\"\n[proxy]\ntrusted_peer_names = [\"fe1.pool.example.com\"]\ntrusted_peers = [\"192.0.2.9\"]\n"
        );
        let s = Config::parse(&ok).unwrap().validate().unwrap();
        let p = s.peer_trust.as_ref().unwrap();
        assert_eq!(p.names, ["fe1.pool.example.com"]);
        let w: Vec<String> = s
            .address_trust_beside_names()
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("192.0.2.9"), "{w:?}");
        let e = |t: &str| err(&format!("{BASE}{t}"));
        assert!(
            e("[proxy]\ntrusted_peer_names = [\"fe1.example.com\"]")
                .contains("`tls.peer_ca`: must be set")
        );
        assert!(e("[tls]\npeer_ca = \"ca.pem\"").contains("`proxy.trusted_peer_names`: must name"));
        let names = |n: &str| {
            e(&format!(
                "[tls]\npeer_ca = \"ca.pem\"\n[proxy]\ntrusted_peer_names = [\"a.example.com\", \"{n}\"]"
            ))
        };
        assert!(
            names("*.example.com")
                .contains("`proxy.trusted_peer_names[1]`: `*.example.com`: wildcards")
        );
        assert!(
            names("10.0.0.1").contains("`proxy.trusted_peer_names[1]`: `10.0.0.1` is an address")
        );
        assert!(names("fe 1").contains("`proxy.trusted_peer_names[1]`: `fe 1` is not a DNS name"));
        assert!(
            err("[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[tls]\npeer_ca = \"ca.pem\"\n[proxy]\ntrusted_peer_names = [\"a.example.com\"]")
                .contains("open a tls listener")
        );
        // Without certificate trust, address trust warns about nothing new.
        let plain = Config::parse(&format!("{BASE}[proxy]\ntrusted_peers = [\"192.0.2.9\"]\n"))
            .unwrap()
            .validate()
            .unwrap();
        assert!(plain.address_trust_beside_names().is_empty());
    }
}
