//! The TOML configuration: schema (serde, unknown keys rejected), defaults (config/default.toml,
//! embedded) and validation into typed [`Settings`] with errors that name the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sagw_proxy::{Mode, NextHop, RegistrarConfig, RouteTarget, Timers, Transport};
use serde::Deserialize;

pub use crate::cpu::{CoreCpu, Workers};

/// The embedded default configuration (config/default.toml).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (the message names the key and line).
    #[error("{0}")]
    Syntax(String),
    /// A value that parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `listen.tcp`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

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
    /// Concurrent accepted connections from one source address (IPv6: one /64).
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

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[log]`
    pub log: LogSection,
    /// `[listen]`
    pub listen: ListenSection,
    /// `[tls]`
    pub tls: TlsSection,
    /// `[proxy]`
    pub proxy: ProxySection,
    /// `[registrar]`
    pub registrar: RegistrarSection,
    /// `[timers]`
    pub timers: TimersSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
    /// `[auth]`
    pub auth: crate::auth_config::AuthSection,
    /// `[state]`
    pub state: crate::state_config::StateSection,
    /// `[admin]`
    pub admin: crate::admin_config::AdminSection,
    /// `[dns]`
    pub dns: crate::hop_config::DnsSection,
}

impl Config {
    /// Parse TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Operator-provided PEM files.
    Files {
        /// Chain.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
    },
    /// Generated at first start and kept in this directory.
    Generated {
        /// Directory.
        dir: PathBuf,
        /// SANs.
        names: Vec<String>,
    },
}

/// Validated, typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Log filter directive.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// UDP listen address.
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address.
    pub tls: Option<SocketAddr>,
    /// Every listener in [`crate::listener::ListenerId`] order: `[listen]`'s udp, tcp, tls (those
    /// set), then `[[listen.extra]]` in file order.
    pub listeners: Vec<crate::listener::ListenerSpec>,
    /// Advertised host (empty: derived from the listen addresses at start).
    pub advertise: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Certificate.
    pub cert: CertSource,
    /// CA bundle for TLS next hops.
    pub next_hop_ca: Option<PathBuf>,
    /// TLS handshake limit.
    pub handshake_timeout: Duration,
    /// Proxy mode.
    pub mode: Mode,
    /// Served domains.
    pub domains: Vec<String>,
    /// The next hops given as addresses (`hops.specs` has them all, names included).
    pub next_hops: Vec<NextHop>,
    /// Trusted peers.
    pub trusted_peers: Vec<IpAddr>,
    /// Servers trusted by their TLS certificate (`tls.peer_ca`, `proxy.trusted_peer_names`).
    pub peer_trust: Option<crate::inbound_config::PeerTrustSettings>,
    /// Where a client's Route may lead besides the next hops.
    pub client_routes: Vec<RouteTarget>,
    /// Retry-After.
    pub retry_after: Duration,
    /// Transaction limit.
    pub max_transactions: usize,
    /// Where the core thread runs.
    pub core_cpu: CoreCpu,
    /// How many runtime worker threads run the connection tasks.
    pub workers: Workers,
    /// How long a drain waits for the transactions in progress before the gateway stops.
    pub drain_grace: Duration,
    /// Registrar.
    pub registrar: RegistrarConfig,
    /// Timers.
    pub timers: Timers,
    /// Connection limit.
    pub max_connections: usize,
    /// Accepted connections per source address (IPv6: per /64).
    pub max_connections_per_ip: usize,
    /// Message limits for the parser.
    pub sip_limits: sagw_sip::Limits,
    /// Idle limit.
    pub idle_timeout: Duration,
    /// Partial-message limit.
    pub message_timeout: Duration,
    /// Per-connection queue.
    pub write_queue: usize,
    /// How long one write to a connection may take.
    pub write_timeout: Duration,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// Client authentication; `None` when `[auth] enabled = false`.
    pub auth: Option<crate::auth_config::AuthSettings>,
    /// Where SAs, bindings and keys live (docs/pools.md).
    pub state: crate::state_config::StateSettings,
    /// The admin API and the load balancers' SIP probes.
    pub admin: crate::admin_config::AdminSettings,
    /// Next hops (addresses and names), probing, DNS and outbound TLS.
    pub hops: crate::hop_config::HopSettings,
}

/// A server the gateway trusts by the source address of its messages, where that address can be
/// forged: over UDP anyone who can send the gateway a datagram can write any source address (a
/// TCP connection needs the handshake, which an attacker off the path cannot complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoofableTrust {
    /// A `proxy.trusted_peers` address while a UDP listener is open: a datagram from it skips
    /// client authentication.
    TrustedPeer(IpAddr),
    /// A UDP `proxy.next_hops` entry: datagrams from its address and port are taken as the next
    /// hop's (requests to clients, responses).
    UdpNextHop(SocketAddr),
}

impl std::fmt::Display for SpoofableTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoofableTrust::TrustedPeer(ip) => write!(
                f,
                "proxy.trusted_peers: messages from {ip} skip client authentication, and a UDP \
                 listener is open: anyone who can reach it can forge {ip} as the source of a \
                 datagram and be trusted as that server. Reach trusted servers over TCP or TLS \
                 only (close the UDP listeners or filter spoofed sources at the network edge), \
                 or trust them by their TLS certificate instead (tls.peer_ca, \
                 proxy.trusted_peer_names)"
            ),
            SpoofableTrust::UdpNextHop(addr) => write!(
                f,
                "proxy.next_hops: udp:{addr} is trusted by its source address and port, which \
                 anyone who can send the gateway a datagram can forge to pass requests and \
                 responses as the next hop's. Prefer tcp: or tls: next hops (mutual TLS for \
                 servers is planned), or filter spoofed sources at the network edge"
            ),
        }
    }
}

impl Settings {
    /// What the sans-IO edge is configured with: these settings, the addresses the gateway
    /// advertises, the flow-token key and the next hops as resolved. One place, so that a bench
    /// or test edge (`examples/digest_flow.rs`) runs as the gateway's does.
    pub fn edge_config(
        &self,
        local: sagw_proxy::LocalAddrs,
        flow_token_key: sagw_proxy::Secret,
        next_hops: Vec<NextHop>,
    ) -> sagw_proxy::EdgeConfig {
        let mut cfg = sagw_proxy::EdgeConfig::new(local, flow_token_key);
        cfg.mode = self.mode;
        cfg.domains = self.domains.clone();
        cfg.next_hops = next_hops;
        cfg.probe = self.hops.probe;
        cfg.trusted_peers = self.trusted_peers.clone();
        cfg.client_routes = self.client_routes.clone();
        cfg.timers = self.timers;
        cfg.retry_after = self.retry_after;
        cfg.max_transactions = self.max_transactions;
        cfg.registrar = self.registrar.clone();
        cfg.probers = self.admin.sip_probers.clone();
        cfg
    }

    /// Servers trusted by a source address that can be forged (see [`SpoofableTrust`]): logged
    /// as warnings at start and by `sagw check-config`.
    pub fn spoofable_trust(&self) -> Vec<SpoofableTrust> {
        let udp_listener = self.listeners.iter().any(|l| l.transport == Transport::Udp);
        let peers = self
            .trusted_peers
            .iter()
            .filter(|_| udp_listener)
            .map(|ip| SpoofableTrust::TrustedPeer(*ip));
        let hops = self
            .next_hops
            .iter()
            .filter(|h| h.transport == Transport::Udp)
            .map(|h| SpoofableTrust::UdpNextHop(h.addr));
        peers.chain(hops).collect()
    }
}

fn opt_addr(key: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    v.trim()
        .parse()
        .map(Some)
        .map_err(|_| invalid(key, format!("`{v}` is not an IP:port socket address")))
}

/// Time values are added to `Instant`s: bound them so that can never overflow.
fn bounded(key: &str, v: u64, max: u64) -> Result<u64, ConfigError> {
    if v == 0 || v > max {
        Err(invalid(key, format!("must be between 1 and {max}")))
    } else {
        Ok(v)
    }
}

const DAY_SECS: u64 = 86_400;
const DAY_MS: u64 = DAY_SECS * 1000;

fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

impl Config {
    /// The listener table: `[listen]`'s three, then the extra ones; names unique, no two
    /// listeners of one socket kind on one address.
    fn listeners(
        &self,
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        tls: Option<SocketAddr>,
    ) -> Result<Vec<crate::listener::ListenerSpec>, ConfigError> {
        use crate::listener::ListenerSpec;
        let mut out: Vec<ListenerSpec> = [
            ("udp", Transport::Udp, udp),
            ("tcp", Transport::Tcp, tcp),
            ("tls", Transport::Tls, tls),
        ]
        .into_iter()
        .filter_map(|(name, transport, addr)| {
            addr.map(|addr| ListenerSpec {
                name: name.to_owned(),
                transport,
                addr,
                proxy_protocol: None,
            })
        })
        .collect();
        for (i, x) in self.listen.extra.iter().enumerate() {
            let key = format!("listen.extra[{i}]");
            let name = x.name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    format!("{key}.name"),
                    "a listener name is letters, digits, - and _",
                ));
            }
            if matches!(name, "udp" | "tcp" | "tls") || out.iter().any(|l| l.name == name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("`{name}` names another listener (udp, tcp and tls are [listen]'s)"),
                ));
            }
            let transport = Transport::from_token(x.transport.trim()).ok_or_else(|| {
                invalid(
                    format!("{key}.transport"),
                    format!("`{}` is not udp, tcp or tls", x.transport),
                )
            })?;
            let addr = opt_addr(&format!("{key}.address"), &x.address)?
                .ok_or_else(|| invalid(format!("{key}.address"), "must be set"))?;
            out.push(ListenerSpec {
                name: name.to_owned(),
                transport,
                addr,
                proxy_protocol: None,
            });
        }
        if out.is_empty() {
            return Err(invalid(
                "listen",
                "at least one of udp, tcp, tls must be set",
            ));
        }
        if out.len() >= usize::from(crate::listener::ListenerId::OUTBOUND.0) {
            return Err(invalid("listen.extra", "too many listeners"));
        }
        // TCP and TLS listeners are both TCP sockets: one address serves one of them. Port 0 is a
        // fresh port at every bind, never a clash.
        let datagram = |t: Transport| t == Transport::Udp;
        for (i, a) in out.iter().enumerate() {
            if let Some(b) = out.iter().skip(i + 1).find(|b| {
                a.addr.port() != 0
                    && b.addr == a.addr
                    && datagram(a.transport) == datagram(b.transport)
            }) {
                let key = if matches!(b.name.as_str(), "udp" | "tcp" | "tls") {
                    format!("listen.{}", b.name)
                } else {
                    let i = self
                        .listen
                        .extra
                        .iter()
                        .position(|x| x.name.trim() == b.name)
                        .unwrap_or(0);
                    format!("listen.extra[{i}].address")
                };
                return Err(invalid(
                    key,
                    format!("{} is already the address of listener `{}`", b.addr, a.name),
                ));
            }
        }
        Ok(out)
    }

    /// Check every value and build [`Settings`].
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let log_format = match self.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("`{other}` is not human or json"),
                ));
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "`{}` is not a level (trace, debug, info, warn, error) or filter",
                    self.log.level
                ),
            ));
        }
        let udp = opt_addr("listen.udp", &self.listen.udp)?;
        let tcp = opt_addr("listen.tcp", &self.listen.tcp)?;
        let tls = opt_addr("listen.tls", &self.listen.tls)?;
        let mut listeners = self.listeners(udp, tcp, tls)?;
        crate::inbound_config::apply_proxy_protocol(&mut listeners, &self.listen.proxy_protocol)?;
        if self
            .listen
            .advertise
            .contains(|c: char| c.is_whitespace() || c == ';' || c == '>')
        {
            return Err(invalid(
                "listen.advertise",
                "must be a bare host name or IP address",
            ));
        }
        let cert = match (self.tls.cert.trim(), self.tls.key.trim()) {
            ("", "") => {
                if self.tls.generated_dir.trim().is_empty() {
                    return Err(invalid(
                        "tls.generated_dir",
                        "must be set when tls.cert is empty",
                    ));
                }
                if self.tls.subject_names.is_empty() {
                    return Err(invalid("tls.subject_names", "must name at least one host"));
                }
                CertSource::Generated {
                    dir: PathBuf::from(&self.tls.generated_dir),
                    names: self.tls.subject_names.clone(),
                }
            }
            ("", _) => return Err(invalid("tls.cert", "must be set when tls.key is")),
            (_, "") => return Err(invalid("tls.key", "must be set when tls.cert is")),
            (c, k) => CertSource::Files {
                cert: PathBuf::from(c),
                key: PathBuf::from(k),
            },
        };
        let mode = match self.proxy.mode.as_str() {
            "registrar" => Mode::Registrar,
            "edge" => Mode::Edge,
            other => {
                return Err(invalid(
                    "proxy.mode",
                    format!("`{other}` is not registrar or edge"),
                ));
            }
        };
        let hops = crate::hop_config::validate(self)?;
        let next_hops = hops.literal_hops();
        if mode == Mode::Edge && hops.specs.is_empty() {
            return Err(invalid(
                "proxy.next_hops",
                "edge mode needs at least one next hop",
            ));
        }
        let next_hop_ca = match self.tls.next_hop_ca.trim() {
            "" => None,
            p => Some(PathBuf::from(p)),
        };
        let trusted_peers = self
            .proxy
            .trusted_peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        format!("proxy.trusted_peers[{i}]"),
                        format!("`{p}` is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_routes = self
            .proxy
            .client_routes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<SocketAddr>()
                    .map(RouteTarget::Addr)
                    .or_else(|_| p.parse::<IpAddr>().map(RouteTarget::Host))
                    .map_err(|_| {
                        invalid(
                            format!("proxy.client_routes[{i}]"),
                            format!("`{p}` is neither `ip:port` nor an IP address"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let r = &self.registrar;
        positive("registrar.min_expires_secs", r.min_expires_secs)?;
        bounded(
            "registrar.max_expires_secs",
            r.max_expires_secs,
            365 * DAY_SECS,
        )?;
        bounded(
            "proxy.retry_after_secs",
            self.proxy.retry_after_secs,
            DAY_SECS,
        )?;
        if r.max_expires_secs < r.min_expires_secs {
            return Err(invalid(
                "registrar.max_expires_secs",
                "must be at least registrar.min_expires_secs",
            ));
        }
        if !(r.min_expires_secs..=r.max_expires_secs).contains(&r.default_expires_secs) {
            return Err(invalid(
                "registrar.default_expires_secs",
                "must lie between registrar.min_expires_secs and registrar.max_expires_secs",
            ));
        }
        positive(
            "registrar.max_bindings_per_aor",
            r.max_bindings_per_aor as u64,
        )?;
        let t = &self.timers;
        bounded("timers.t1_ms", t.t1_ms, 60_000)?;
        if t.t2_ms < t.t1_ms {
            return Err(invalid("timers.t2_ms", "must be at least timers.t1_ms"));
        }
        bounded("timers.t2_ms", t.t2_ms, DAY_MS)?;
        bounded("timers.t4_ms", t.t4_ms, DAY_MS)?;
        bounded("timers.timer_c_secs", t.timer_c_secs, DAY_SECS)?;
        bounded("timers.fail_over_ms", t.fail_over_ms, DAY_MS)?;
        let l = &self.limits;
        positive("limits.max_connections", l.max_connections as u64)?;
        positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip as u64,
        )?;
        if !(512..=65_535).contains(&l.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be between 512 and 65535",
            ));
        }
        positive("limits.max_headers", l.max_headers as u64)?;
        if l.max_line_bytes < 128 {
            return Err(invalid("limits.max_line_bytes", "must be at least 128"));
        }
        bounded(
            "limits.idle_timeout_secs",
            l.idle_timeout_secs,
            7 * DAY_SECS,
        )?;
        bounded(
            "limits.message_timeout_secs",
            l.message_timeout_secs,
            DAY_SECS,
        )?;
        positive("limits.write_queue_messages", l.write_queue_messages as u64)?;
        bounded("limits.write_timeout_secs", l.write_timeout_secs, DAY_SECS)?;
        positive(
            "tls.handshake_timeout_secs",
            self.tls.handshake_timeout_secs,
        )?;
        positive("proxy.max_transactions", self.proxy.max_transactions as u64)?;
        let core_cpu = CoreCpu::parse(&self.proxy.core_cpu)?;
        let workers = Workers::parse(&self.proxy.workers)?;
        bounded("proxy.drain_grace_secs", self.proxy.drain_grace_secs, 3600)?;
        let metrics = opt_addr("metrics.listen", &self.metrics.listen)?;
        let peer_trust = crate::inbound_config::peer_trust(
            &self.tls.peer_ca,
            &self.proxy.trusted_peer_names,
            &listeners,
        )?;
        let mut auth = self.auth.validate()?;
        if let Some(a) = auth.as_mut() {
            let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
            a.by_listener = a.bind_listeners(&names)?;
        }
        Ok(Settings {
            log_level: self.log.level.clone(),
            log_format,
            udp,
            tcp,
            tls,
            listeners,
            advertise: self.listen.advertise.trim().to_owned(),
            aliases: self.listen.aliases.clone(),
            cert,
            next_hop_ca,
            handshake_timeout: Duration::from_secs(self.tls.handshake_timeout_secs),
            mode,
            domains: self.proxy.domains.clone(),
            next_hops,
            trusted_peers,
            peer_trust,
            client_routes,
            retry_after: Duration::from_secs(self.proxy.retry_after_secs),
            max_transactions: self.proxy.max_transactions,
            core_cpu,
            workers,
            drain_grace: Duration::from_secs(self.proxy.drain_grace_secs),
            registrar: RegistrarConfig {
                default_expires: Duration::from_secs(r.default_expires_secs),
                min_expires: Duration::from_secs(r.min_expires_secs),
                max_expires: Duration::from_secs(r.max_expires_secs),
                max_bindings_per_aor: r.max_bindings_per_aor,
            },
            timers: Timers {
                t1: Duration::from_millis(t.t1_ms),
                t2: Duration::from_millis(t.t2_ms),
                t4: Duration::from_millis(t.t4_ms),
                timer_c: Duration::from_secs(t.timer_c_secs),
                fail_over: Duration::from_millis(t.fail_over_ms),
            },
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            sip_limits: sagw_sip::Limits {
                max_message_bytes: l.max_message_bytes,
                max_headers: l.max_headers,
                max_line_bytes: l.max_line_bytes,
                ..sagw_sip::Limits::default()
            },
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            message_timeout: Duration::from_secs(l.message_timeout_secs),
            write_queue: l.write_queue_messages,
            write_timeout: Duration::from_secs(l.write_timeout_secs),
            metrics,
            auth,
            state: self.state.validate()?,
            admin: self.admin.validate()?,
            hops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_the_built_in_defaults() {
        let c = Config::embedded().unwrap();
        // Except for the challenge policies (docs/configuration.md): a file gets the policies and
        // client rules it writes, and the top-level set that was the default before there were
        // policies, so nobody's file starts offering a scheme its operator did not write.
        let mut d = Config::default();
        assert_eq!(d.auth.schemes, ["ntlm", "digest"]);
        assert_eq!(d.auth.kerberos_without_keytab, "refuse");
        assert!(d.auth.policy.is_empty() && d.auth.client.is_empty());
        d.auth.schemes = vec!["digest".into()];
        d.auth.kerberos_without_keytab = "skip".into();
        d.auth.policy = c.auth.policy.clone();
        d.auth.client = c.auth.client.clone();
        // And the snapshot: a file that names none saves nothing (tests, and operators who
        // want restarts to sign everyone out); the embedded configuration saves one.
        assert!(d.state.snapshot.is_empty());
        d.state.snapshot = "sagw-data/state.snapshot".into();
        assert_eq!(c, d);
        assert_eq!(c.auth.client.len(), 2);
        let s = c.validate().unwrap();
        let a = s.auth.as_ref().expect("auth on");
        let names: Vec<&str> = a.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "md5-only", "mssipae"]);
        assert!(
            a.ntlm && a.kerberos && a.digest,
            "the union of the policies"
        );
        let listeners: Vec<&str> = s.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(listeners, ["udp", "tcp", "tls"]);
        assert_eq!(s.tcp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.tls, Some("0.0.0.0:5061".parse().unwrap()));
        assert_eq!(s.udp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.mode, Mode::Registrar);
        assert_eq!(s.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    fn err(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|_| ())) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[listen]\ntcp = \"nope\"").contains("`listen.tcp`"));
        assert!(
            err("[proxy]\nnext_hops = [\"tcp:127.0.0.1:5070\", \"sctp:1.2.3.4:5\"]")
                .contains("`proxy.next_hops[1]`")
        );
        assert!(err("[proxy]\nmode = \"edge\"").contains("`proxy.next_hops`"));
        assert!(err("[timers]\nt1_ms = 0").contains("`timers.t1_ms`"));
        assert!(
            err("[timers]\ntimer_c_secs = 9223372036854775807").contains("`timers.timer_c_secs`")
        );
        assert!(
            err("[limits]\nidle_timeout_secs = 99999999999").contains("`limits.idle_timeout_secs`")
        );
        assert!(
            err("[registrar]\ndefault_expires_secs = 10")
                .contains("`registrar.default_expires_secs`")
        );
        assert!(err("[log]\nformat = \"xml\"").contains("`log.format`"));
        assert!(err("[proxy]\ncore_cpu = \"fast\"").contains("`proxy.core_cpu`"));
        assert!(err("[proxy]\ndrain_grace_secs = 0").contains("`proxy.drain_grace_secs`"));
        assert!(err("[tls]\ncert = \"a.pem\"").contains("`tls.key`"));
        assert!(err("[proxy]\nnext_hops = [\"tls:127.0.0.1:5071\"]").contains("`tls.next_hop_ca`"));
        // Unknown keys are rejected with their name.
        let e = err("[listen]\ntcpp = \"1.2.3.4:5\"");
        assert!(e.contains("tcpp"), "{e}");
        let e = err("[nosuch]\n");
        assert!(e.contains("nosuch"), "{e}");
    }

    #[test]
    fn policy_errors_name_the_key() {
        let e = |t: &str| err(t);
        assert!(e("[auth]\nschemes = [\"ntlm\", \"basic\"]").contains("`auth.schemes`: `basic`"));
        assert!(e("[auth.policy.p]\nschemes = [\"spnego\"]").contains("`auth.policy.p.schemes`"));
        assert!(
            e("[auth.policy.p]\nschemes = []")
                .contains("`auth.policy.p.schemes`: enable at least one")
        );
        assert!(
            e("[auth.policy.p]\nschemes = [\"digest\"]\ndigest_algorithms = []")
                .contains("`auth.policy.p.digest_algorithms`")
        );
        assert!(
            e("[auth.policy.p]\nschemes = [\"digest\"]\ndigest_algorithms = [\"SHA-1\"]")
                .contains("`auth.policy.p.digest_algorithms`: `SHA-1`")
        );
        assert!(
            e("[auth.policy.p]\nschemes = [\"digest\"]\ndigest_algorithms = [\"MD5\", \"md5\"]")
                .contains("listed twice")
        );
        assert!(
            e("[auth.policy.p]\nschemes = [\"ntlm\"]\nregister_challenge = 403")
                .contains("`auth.policy.p.register_challenge`")
        );
        assert!(e("[auth.policy.default]\nschemes = [\"ntlm\"]").contains("`auth.policy.default`"));
        assert!(
            e("[[auth.client]]\nuser_agent = \"(baresip\"\npolicy = \"default\"")
                .contains("`auth.client[0].user_agent`: not a regular expression")
        );
        assert!(
            e("[[auth.client]]\nepid = \"maybe\"\npolicy = \"default\"")
                .contains("`auth.client[0].epid`")
        );
        assert!(
            e("[[auth.client]]\npolicy = \"default\"")
                .contains("`auth.client[0]`: a rule needs a condition")
        );
        assert!(
            e("[[auth.client]]\nepid = \"present\"\npolicy = \"lync\"")
                .contains("`auth.client[0].policy`: no policy is named `lync`")
        );
        assert!(e("[auth.listener.tls]\npolicy = \"lync\"").contains("`auth.listener.tls.policy`"));
        assert!(
            e("[auth.listener.phones]\npolicy = \"default\"")
                .contains("`auth.listener.phones`: no listener is named `phones`")
        );
        assert!(
            e("[auth]\nkerberos_without_keytab = \"maybe\"")
                .contains("`auth.kerberos_without_keytab`")
        );
    }

    #[test]
    fn listener_errors_name_the_key() {
        let e = |t: &str| err(t);
        let base = "[listen]\nudp = \"127.0.0.1:5060\"\ntcp = \"127.0.0.1:5060\"\ntls = \"127.0.0.1:5061\"\n";
        assert!(
            e(&format!("{base}[[listen.extra]]\nname = \"b\"\ntransport = \"tls\"\naddress = \"127.0.0.1:5060\""))
                .contains("`listen.extra[0].address`: 127.0.0.1:5060 is already the address of listener `tcp`")
        );
        assert!(
            e(&format!("{base}[[listen.extra]]\nname = \"b\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\""))
                .contains("`listen.extra[0].address`")
        );
        assert!(
            e(&format!("{base}[[listen.extra]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5070\""))
                .contains("`listen.extra[0].name`")
        );
        assert!(
            e(&format!("{base}[[listen.extra]]\nname = \"x\"\ntransport = \"sctp\"\naddress = \"127.0.0.1:5070\""))
                .contains("`listen.extra[0].transport`")
        );
        assert!(
            e(&format!(
                "{base}[[listen.extra]]\nname = \"x\"\ntransport = \"tcp\"\naddress = \"\""
            ))
            .contains("`listen.extra[0].address`: must be set")
        );
        assert!(
            e(&format!("{base}[[listen.extra]]\nname = \"x\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5070\"\n[[listen.extra]]\nname = \"x\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5070\""))
                .contains("`listen.extra[1].name`")
        );
        // UDP and TCP on one address are two sockets; two listeners on port 0 never clash.
        let ok = format!(
            "{base}[[listen.extra]]\nname = \"u\"\ntransport = \"udp\"\naddress = \"127.0.0.1:5061\"\n[[listen.extra]]\nname = \"p\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n[[listen.extra]]\nname = \"q\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n[auth.policy.phones]\nschemes = [\"digest\"]\n[auth.listener.p]\npolicy = \"phones\"\n"
        );
        let s = Config::parse(&ok).unwrap().validate().unwrap();
        assert_eq!(s.listeners.len(), 6);
        let a = s.auth.unwrap();
        assert_eq!(a.by_listener.len(), 6);
        assert_eq!(a.by_listener[4].policy, a.policy_index("phones"));
        assert_eq!(a.by_listener[5].policy, None);
    }

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

    /// The settings of a configuration with `[proxy] key = "value"` and defaults otherwise.
    fn with_proxy(key: &str, value: &str) -> Settings {
        Config::parse(&format!("[proxy]\n{key} = \"{value}\""))
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn core_cpu_values() {
        let cpu = |v: &str| with_proxy("core_cpu", v).core_cpu;
        assert_eq!(cpu("auto"), CoreCpu::Auto);
        assert_eq!(cpu("none"), CoreCpu::Unpinned);
        assert_eq!(cpu("3"), CoreCpu::Cpu(3));
        assert!(err("[proxy]\ncore_cpu = \"-1\"").contains("`proxy.core_cpu`"));
    }

    #[test]
    fn workers_values() {
        let workers = |v: &str| with_proxy("workers", v).workers;
        assert_eq!(workers("auto"), Workers::Auto);
        assert_eq!(workers(" 3 "), Workers::Count(3));
        for bad in ["0", "-1", "many", "10000"] {
            assert!(
                err(&format!("[proxy]\nworkers = \"{bad}\"")).contains("`proxy.workers`"),
                "{bad}"
            );
        }
    }
}
