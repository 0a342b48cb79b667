//! The sections of the file that no other module owns (`[log]`, `[listen]`, `[tls]`, `[proxy]`,
//! `[registrar]`, `[timers]`, `[limits]`, `[metrics]`) as written, with the defaults a file that
//! leaves a key out gets.

use serde::Deserialize;

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Level or tracing filter directive.
    pub level: String,
    /// `human` or `json`.
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: "human".into(),
        }
    }
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// UDP address, empty to disable.
    pub udp: String,
    /// TCP address, empty to disable.
    pub tcp: String,
    /// TLS address, empty to disable.
    pub tls: String,
    /// Host written in Via / Record-Route / Path.
    pub advertise: String,
    /// Other names of this host.
    pub aliases: Vec<String>,
    /// Further listeners, several per transport allowed (`[[listen.extra]]`).
    pub extra: Vec<ExtraListener>,
    /// Listeners behind load balancers (`[listen.proxy_protocol.<listener>]`).
    pub proxy_protocol:
        std::collections::BTreeMap<String, crate::inbound_config::ProxyProtocolSection>,
}

/// `[[listen.extra]]`: one more listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// Its name, for `[auth.listener.<name>]` and logs.
    pub name: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// `IP:port`.
    pub address: String,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            udp: "0.0.0.0:5060".into(),
            tcp: "0.0.0.0:5060".into(),
            tls: "0.0.0.0:5061".into(),
            advertise: String::new(),
            aliases: Vec::new(),
            extra: Vec::new(),
            proxy_protocol: Default::default(),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// Directory for the generated certificate when `cert` is empty.
    pub generated_dir: String,
    /// Subject alternative names of the generated certificate.
    pub subject_names: Vec<String>,
    /// PEM CA bundle to verify TLS next hops.
    pub next_hop_ca: String,
    /// PEM CA bundle that signs the certificates of servers trusted by name.
    pub peer_ca: String,
    /// PEM client certificate chain presented to TLS next hops (mutual TLS).
    pub client_cert: String,
    /// PEM private key of `client_cert`.
    pub client_key: String,
    /// Per-next-hop TLS settings (`[[tls.next_hop]]`).
    pub next_hop: Vec<crate::hop_config::NextHopTlsSection>,
    /// TLS handshake limit.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert: String::new(),
            key: String::new(),
            generated_dir: "sagw-data".into(),
            subject_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            next_hop_ca: String::new(),
            peer_ca: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
            next_hop: Vec::new(),
            handshake_timeout_secs: 10,
        }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// `registrar` or `edge`.
    pub mode: String,
    /// Served domains (empty: any).
    pub domains: Vec<String>,
    /// `transport:host[:port]`, `sip:`/`sips:` URIs or host names (RFC 3263).
    pub next_hops: Vec<String>,
    /// IPs treated as servers.
    pub trusted_peers: Vec<String>,
    /// DNS names of servers trusted by their TLS certificate (signed by `tls.peer_ca`).
    pub trusted_peer_names: Vec<String>,
    /// `ip:port` or `ip` a client's Route may name besides the next hops.
    pub client_routes: Vec<String>,
    /// Retry-After on 503.
    pub retry_after_secs: u64,
    /// Live server transactions limit.
    pub max_transactions: usize,
    /// Of those, one client's at most (its identity, else its address); absent: a quarter.
    pub max_transactions_per_client: Option<usize>,
    /// CPU for the core thread: `auto`, `none` or a CPU number.
    pub core_cpu: String,
    /// Threads for connections and TLS: `auto` or a number.
    pub workers: String,
    /// How long a drain (SIGTERM) waits for transactions in progress.
    pub drain_grace_secs: u64,
    /// Seconds between OPTIONS probes of each next-hop target (0: no probing).
    pub probe_interval_secs: u64,
    /// Failed probes (or transactions) in a row after which a probed next hop is down.
    pub probe_failures_down: u32,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            mode: "registrar".into(),
            domains: Vec::new(),
            next_hops: Vec::new(),
            trusted_peers: Vec::new(),
            trusted_peer_names: Vec::new(),
            client_routes: Vec::new(),
            retry_after_secs: 30,
            max_transactions: 100_000,
            max_transactions_per_client: None,
            core_cpu: "auto".into(),
            workers: "auto".into(),
            drain_grace_secs: 10,
            probe_interval_secs: 0,
            probe_failures_down: 3,
        }
    }
}

/// `[registrar]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSection {
    /// Expiry when the REGISTER gives none.
    pub default_expires_secs: u64,
    /// Shorter non-zero expiries get 423.
    pub min_expires_secs: u64,
    /// Longer expiries are shortened.
    pub max_expires_secs: u64,
    /// Bindings per AOR.
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        RegistrarSection {
            default_expires_secs: 3600,
            min_expires_secs: 60,
            max_expires_secs: 7200,
            max_bindings_per_aor: 10,
        }
    }
}

/// `[timers]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TimersSection {
    /// T1.
    pub t1_ms: u64,
    /// T2.
    pub t2_ms: u64,
    /// T4.
    pub t4_ms: u64,
    /// Timer C.
    pub timer_c_secs: u64,
    /// Fail-over wait.
    pub fail_over_ms: u64,
}

impl Default for TimersSection {
    fn default() -> Self {
        TimersSection {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_c_secs: 181,
            fail_over_ms: 4000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Concurrent TCP+TLS connections.
    pub max_connections: usize,
    /// Concurrent accepted connections from one source address (IPv6: one /56).
    pub max_connections_per_ip: usize,
    /// Message (and UDP datagram) size.
    pub max_message_bytes: usize,
    /// Header fields per message.
    pub max_headers: usize,
    /// One header line.
    pub max_line_bytes: usize,
    /// Close a connection silent for this long.
    pub idle_timeout_secs: u64,
    /// Close a connection whose partial message is not complete after this long.
    pub message_timeout_secs: u64,
    /// Messages queued towards one connection before it is closed as too slow.
    pub write_queue_messages: usize,
    /// Bytes waiting for one connection's socket before it is closed as too slow.
    pub write_queue_bytes: usize,
    /// What all accepted connections' backlogs may hold together; past it connections are
    /// closed, clients' first and the largest first. Unset: 256 MiB, or four times
    /// `write_queue_bytes` when that is larger.
    pub write_backlog_total_bytes: Option<usize>,
    /// Close a connection when one write to it does not complete within this.
    pub write_timeout_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 10_000,
            max_connections_per_ip: 500,
            max_message_bytes: 65_535,
            max_headers: 256,
            max_line_bytes: 8192,
            idle_timeout_secs: 600,
            message_timeout_secs: 30,
            write_queue_messages: 1024,
            write_queue_bytes: 1 << 20,
            write_backlog_total_bytes: None,
            write_timeout_secs: 30,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// HTTP listen address for `/metrics`, empty to disable.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sagw_proxy::Transport;

    use crate::config::{Config, CoreCpu};

    #[test]
    fn partial_files_take_defaults() {
        let c = Config::parse("[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[proxy]\nnext_hops = [\"udp:127.0.0.1:5070\"]").unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.udp, None);
        assert_eq!(s.next_hops.len(), 1);
        assert_eq!(s.next_hops[0].transport, Transport::Udp);
        assert_eq!(s.registrar.default_expires, Duration::from_secs(3600));
        assert_eq!(s.core_cpu, CoreCpu::Auto);
    }
}
