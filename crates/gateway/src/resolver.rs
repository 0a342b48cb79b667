//! RFC 3263 server location with `hickory-resolver`: NAPTR → SRV → A/AAAA, SRV priorities and
//! weights (RFC 2782), and a cache of the results with their DNS lifetimes.
//!
//! Next hops may be configured by name (`proxy.next_hops`: `sip:pool.example.com`,
//! `tls:pool.example.com`, `tcp:fe1.example.com:5060`); host names in a Route are resolved when
//! the proxy core asks ([`sagw_proxy::Action::Resolve`]). The core itself never resolves (it is
//! sans-IO): the driver does it here, in a task, and hands the targets back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use sagw_proxy::{NextHop, Transport};
use tracing::debug;

/// How long a failed or empty resolution is remembered before it is tried again.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Bounds on how often a name is resolved again, whatever its records' TTL says: a TTL of 0
/// must not turn into a query per request, and a day-long one should not keep a moved pool away.
const MIN_TTL: Duration = Duration::from_secs(5);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Most answers kept (clients' Routes can name any number of names).
const MAX_CACHED: usize = 16_384;

/// What a next hop names: an address, or a host name to resolve the RFC 3263 way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopTarget {
    /// A literal address: used as it is.
    Addr(NextHop),
    /// A host name.
    Name(NameQuery),
}

/// A host name with what the URI or configuration says about reaching it (RFC 3263 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameQuery {
    /// Lower-cased host name, no trailing dot.
    pub host: String,
    /// A port: then no SRV look-up (§4.2).
    pub port: Option<u16>,
    /// A transport: then no NAPTR look-up (§4.1).
    pub transport: Option<Transport>,
    /// `sips:`: TLS only.
    pub secure: bool,
}

/// One `proxy.next_hops` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHopSpec {
    /// As written in the configuration (for logs, metrics and the admin API).
    pub configured: String,
    /// What it names.
    pub target: HopTarget,
}

/// Why a next-hop entry is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn host_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// A DNS name as the gateway accepts one (letters, digits, `-`, `_`, dots between labels).
fn valid_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `host[:port]` or `[v6][:port]`.
fn split_hostport(s: &str) -> Result<(&str, Option<u16>), SpecError> {
    let bad_port = |p: &str| SpecError(format!("bad port `{p}`"));
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| SpecError("unclosed `[`".into()))?;
        let host = s.get(..v6.len() + 2).unwrap_or(s);
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p.parse().map_err(|_| bad_port(p))?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(SpecError(format!("unexpected `{after}`"))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h, Some(p.parse().map_err(|_| bad_port(p))?))),
        None => Ok((s, None)),
    }
}

impl NextHopSpec {
    /// Parse `transport:host[:port]`, `sip:host[:port][;transport=t]`, `sips:host[:port]` or a
    /// bare `host[:port]`; the host is an address or a DNS name.
    pub fn parse(v: &str) -> Result<NextHopSpec, SpecError> {
        let v = v.trim();
        let lower = v.to_ascii_lowercase();
        let (transport, secure, hostport) =
            if lower.starts_with("sip:") || lower.starts_with("sips:") {
                let uri = sagw_proxy::uri::SipUri::parse(v)
                    .ok_or_else(|| SpecError(format!("`{v}` is not a SIP URI")))?;
                if uri.user.is_some() {
                    return Err(SpecError(
                        "a next hop is a server: no user part in its URI".into(),
                    ));
                }
                let t = match uri.param("transport") {
                    Some(t) => Some(
                        Transport::from_token(t)
                            .ok_or_else(|| SpecError(format!("unknown transport `{t}`")))?,
                    ),
                    None => uri.transport(),
                };
                if uri.secure && t.is_some_and(|t| t != Transport::Tls) {
                    return Err(SpecError(
                        "a sips: next hop is reached over TLS only".into(),
                    ));
                }
                let host = uri.host.to_owned();
                return NextHopSpec::build(v, &host, uri.port, t, uri.secure);
            } else {
                match v.split_once(':') {
                    Some((t, rest)) if Transport::from_token(t).is_some() => {
                        (Transport::from_token(t), false, rest)
                    }
                    _ => (None, false, v),
                }
            };
        let (host, port) = split_hostport(hostport)?;
        NextHopSpec::build(v, host, port, transport, secure)
    }

    fn build(
        configured: &str,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
    ) -> Result<NextHopSpec, SpecError> {
        if port == Some(0) {
            return Err(SpecError("port 0".into()));
        }
        let target = match host_ip(host) {
            Some(ip) => {
                let t = transport.unwrap_or(if secure {
                    Transport::Tls
                } else {
                    Transport::Udp
                });
                HopTarget::Addr(NextHop {
                    transport: t,
                    addr: SocketAddr::new(ip, port.unwrap_or(t.default_port())),
                })
            }
            None => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if !valid_name(&host) {
                    return Err(SpecError(format!(
                        "`{host}` is neither an IP address nor a host name"
                    )));
                }
                HopTarget::Name(NameQuery {
                    host,
                    port,
                    transport,
                    secure,
                })
            }
        };
        Ok(NextHopSpec {
            configured: configured.to_owned(),
            target,
        })
    }

    /// The transport it is reached over, when the entry fixes it.
    pub fn transport(&self) -> Option<Transport> {
        match &self.target {
            HopTarget::Addr(h) => Some(h.transport),
            HopTarget::Name(q) if q.secure => Some(Transport::Tls),
            HopTarget::Name(q) => q.transport,
        }
    }
}

/// One resolved target and the name it was found under: a TLS connection to it verifies that
/// name (and sends it as SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Transport and address.
    pub hop: NextHop,
    /// The name that was looked up (RFC 5922 §4.1: what a TLS connection to the target verifies,
    /// whichever NAPTR or SRV records led to the address).
    pub name: String,
}

/// The targets of a name, in the order to try them, and until when they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Targets (empty: the name did not resolve).
    pub targets: Vec<Resolved>,
    /// The shortest lifetime of the records that gave them.
    pub valid_until: Instant,
}

/// Resolver set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// The system configuration (`/etc/resolv.conf`) could not be read.
    #[error("DNS resolver: {0} (set [dns] nameservers)")]
    System(String),
    /// The resolver refused its configuration.
    #[error("DNS resolver: {0}")]
    Build(String),
}

/// One SRV record, as the ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower first.
    pub priority: u16,
    /// Share of the traffic within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host, no trailing dot.
    pub target: String,
}

/// RFC 2782 order: by priority, and within one priority a weighted random order (each next
/// record picked with probability proportional to its weight; weight-0 records placed first and
/// so picked only when the draw is 0, "a very small chance"). `draw(n)` returns a uniform
/// number in `0..=n`.
pub fn order_srv(mut records: Vec<Srv>, mut draw: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records.first().map_or(0, |r| r.priority);
        let same = records
            .iter()
            .take_while(|r| r.priority == priority)
            .count();
        let mut group: Vec<Srv> = records.drain(..same).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = draw(total);
            let mut running = 0u32;
            let i = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(i));
        }
    }
    out
}

/// The SRV service names for a transport, in the order they are tried: TLS also looks for
/// Microsoft's `_sipinternaltls._tcp` (Lync/Skype for Business pools publish it for their
/// internal servers, often without `_sips._tcp`).
fn srv_services(t: Transport) -> &'static [&'static str] {
    match t {
        Transport::Udp => &["_sip._udp"],
        Transport::Tcp => &["_sip._tcp"],
        Transport::Tls => &["_sips._tcp", "_sipinternaltls._tcp"],
    }
}

/// The transports a name with neither port nor transport is tried over when it has no NAPTR
/// records, most preferred first (RFC 3263 §4.1 leaves the order to the client: TLS first).
fn fallback_transports(secure: bool) -> &'static [Transport] {
    if secure {
        &[Transport::Tls]
    } else {
        &[Transport::Tls, Transport::Tcp, Transport::Udp]
    }
}

/// The RFC 3263 resolver with its cache.
pub struct Resolver {
    dns: TokioResolver,
    cache: Mutex<HashMap<NameQuery, Resolution>>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `nameservers` (UDP, then TCP for truncated answers), or the system's
    /// (`/etc/resolv.conf`) when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Resolver, ResolverError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| ResolverError::System(e.to_string()))?
        } else {
            let servers = nameservers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        // A request waits for the answer: a dead DNS server must fail it in seconds.
        let opts = builder.options_mut();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let dns = builder
            .build()
            .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Resolver {
            dns,
            cache: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// A resolver with no DNS server: every name fails to resolve. For a gateway whose next hops
    /// are all addresses on a host without `/etc/resolv.conf`: it must still start, and only a
    /// name in a Route (answered 503) needs DNS.
    pub fn without_servers() -> Result<Resolver, ResolverError> {
        let dns = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(Vec::new()),
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Resolver {
            dns,
            cache: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    fn draw(&self, n: u32) -> u32 {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 4];
        if n == 0 || self.rng.fill(&mut b).is_err() {
            return 0;
        }
        u32::from_be_bytes(b) % (n + 1)
    }

    /// The targets of `q`, from the cache while its records live, else from DNS.
    pub async fn resolve(&self, q: &NameQuery) -> Resolution {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some(r) = cache.get(q).filter(|r| r.valid_until > now)
        {
            return r.clone();
        }
        let r = self.resolve_uncached(q).await;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, r| r.valid_until > now);
            }
            // Names come from clients' Routes too: past the bound an answer is not kept (each
            // such name costs its queries again), rather than the cache growing with them.
            if cache.len() < MAX_CACHED || cache.contains_key(q) {
                cache.insert(q.clone(), r.clone());
            }
        }
        r
    }

    async fn resolve_uncached(&self, q: &NameQuery) -> Resolution {
        let mut until = Instant::now() + MAX_TTL;
        let mut targets = Vec::new();
        match (q.port, q.transport.or(q.secure.then_some(Transport::Tls))) {
            // §4.2: a port means A/AAAA only.
            (Some(port), t) => {
                let t = t.unwrap_or(Transport::Udp);
                self.addresses(&q.host, port, t, &mut targets, &mut until)
                    .await;
            }
            // A transport but no port: SRV for it, else A/AAAA with its default port.
            (None, Some(t)) => {
                if !self.srv(&q.host, t, &mut targets, &mut until).await {
                    self.addresses(&q.host, t.default_port(), t, &mut targets, &mut until)
                        .await;
                }
            }
            // Neither: NAPTR, else SRV per transport, else A/AAAA over UDP (TLS for sips).
            (None, None) => {
                if !self.naptr(q, &mut targets, &mut until).await {
                    let mut found = false;
                    for t in fallback_transports(q.secure) {
                        if self.srv(&q.host, *t, &mut targets, &mut until).await {
                            found = true;
                            break;
                        }
                    }
                    if !found {
                        let t = if q.secure {
                            Transport::Tls
                        } else {
                            Transport::Udp
                        };
                        self.addresses(&q.host, t.default_port(), t, &mut targets, &mut until)
                            .await;
                    }
                }
            }
        }
        // RFC 5922 §4.1: a TLS target is verified against the domain that was looked up, not the
        // NAPTR replacement or SRV target DNS returned (whoever answers DNS must not choose the
        // name the gateway checks, one they hold a certificate for).
        for t in &mut targets {
            t.name.clone_from(&q.host);
        }
        let now = Instant::now();
        let valid_until = if targets.is_empty() {
            now + NEGATIVE_TTL
        } else {
            until.clamp(now + MIN_TTL, now + MAX_TTL)
        };
        debug!(host = %q.host, targets = targets.len(), "RFC 3263 resolution");
        Resolution {
            targets,
            valid_until,
        }
    }

    /// NAPTR (§4.1): SIP services with the `s` flag, by order and preference, each followed by
    /// its SRV records. False when there were none usable.
    async fn naptr(&self, q: &NameQuery, out: &mut Vec<Resolved>, until: &mut Instant) -> bool {
        let Ok(lookup) = self.dns.lookup(fqdn(&q.host), RecordType::NAPTR).await else {
            return false;
        };
        *until = (*until).min(lookup.valid_until());
        let mut rules: Vec<(u16, u16, Transport, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => {
                    let service = String::from_utf8_lossy(&n.services).to_ascii_uppercase();
                    let t = match service.as_str() {
                        "SIPS+D2T" => Transport::Tls,
                        "SIP+D2T" if !q.secure => Transport::Tcp,
                        "SIP+D2U" if !q.secure => Transport::Udp,
                        _ => return None,
                    };
                    if !n.flags.eq_ignore_ascii_case(b"s") {
                        return None;
                    }
                    let name = n.replacement.to_ascii();
                    Some((
                        n.order,
                        n.preference,
                        t,
                        name.trim_end_matches('.').to_ascii_lowercase(),
                    ))
                }
                _ => None,
            })
            .collect();
        rules.sort_by_key(|r| (r.0, r.1));
        let before = out.len();
        for (_, _, t, srv_name) in rules {
            let _ = self.srv_records(&srv_name, t, out, until).await;
        }
        out.len() > before
    }

    /// SRV for `host` over `t` (each service name of the transport in turn, the first that has
    /// records). False when none had any.
    async fn srv(
        &self,
        host: &str,
        t: Transport,
        out: &mut Vec<Resolved>,
        until: &mut Instant,
    ) -> bool {
        for service in srv_services(t) {
            let name = format!("{service}.{host}");
            if self.srv_records(&name, t, out, until).await {
                return true;
            }
        }
        false
    }

    async fn srv_records(
        &self,
        name: &str,
        t: Transport,
        out: &mut Vec<Resolved>,
        until: &mut Instant,
    ) -> bool {
        let Ok(lookup) = self.dns.lookup(fqdn(name), RecordType::SRV).await else {
            return false;
        };
        *until = (*until).min(lookup.valid_until());
        let records: Vec<Srv> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s
                        .target
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                }),
                _ => None,
            })
            // RFC 2782: a target of "." means the service is decidedly not available.
            .filter(|s| !s.target.is_empty())
            .collect();
        if records.is_empty() {
            return false;
        }
        let before = out.len();
        for s in order_srv(records, |n| self.draw(n)) {
            self.addresses(&s.target, s.port, t, out, until).await;
        }
        out.len() > before
    }

    /// A/AAAA of `host`: one target per address, in the order DNS gave them.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        t: Transport,
        out: &mut Vec<Resolved>,
        until: &mut Instant,
    ) {
        let ips: Vec<IpAddr> = match host_ip(host) {
            Some(ip) => vec![ip],
            None => match self.dns.lookup_ip(fqdn(host)).await {
                Ok(l) => {
                    *until = (*until).min(l.valid_until());
                    l.iter().collect()
                }
                Err(e) => {
                    debug!(%host, error = %e, "no address");
                    Vec::new()
                }
            },
        };
        for ip in ips {
            let r = Resolved {
                hop: NextHop {
                    transport: t,
                    addr: SocketAddr::new(ip, port),
                },
                name: host.to_owned(),
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
}

/// A fully qualified name: no search-domain suffixes are tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    #[test]
    fn srv_order_is_by_priority_then_weighted() {
        let records = vec![
            srv(20, 0, "backup"),
            srv(10, 1, "light"),
            srv(10, 9, "heavy"),
        ];
        // Draws at the top of the range pick the last record of the running sum (heavy, 1+9),
        // then the only one left.
        let order = order_srv(records.clone(), |n| n);
        let names: Vec<&str> = order.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(names, ["heavy", "light", "backup"]);
        // A draw of 1 falls on the light one; priority 20 still comes last.
        let order = order_srv(records, |n| n.min(1));
        let names: Vec<&str> = order.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(names, ["light", "heavy", "backup"]);
    }

    #[test]
    fn weighted_draws_follow_the_weights() {
        let records = vec![srv(1, 1, "a"), srv(1, 3, "b")];
        // Over every possible draw 0..=4 (uniform), b comes first 3 times in 5 with weight 3
        // against 1 (draw 0 and 1 land on a: RFC 2782's "running sum >= draw").
        let firsts: Vec<String> = (0..=4)
            .map(|d| order_srv(records.clone(), |_| d).remove(0).target)
            .collect();
        assert_eq!(firsts.iter().filter(|t| *t == "b").count(), 3);
    }

    #[test]
    fn zero_weight_records_come_first_but_are_rarely_picked() {
        let records = vec![srv(1, 5, "a"), srv(1, 0, "z")];
        // Only a draw of 0 picks the zero-weight record.
        assert_eq!(order_srv(records.clone(), |_| 0)[0].target, "z");
        assert_eq!(order_srv(records, |_| 3)[0].target, "a");
    }

    #[test]
    fn next_hop_entries_by_address_and_by_name() {
        let p = |v: &str| NextHopSpec::parse(v).unwrap().target;
        assert_eq!(
            p("udp:10.0.0.5:5070"),
            HopTarget::Addr(NextHop {
                transport: Transport::Udp,
                addr: "10.0.0.5:5070".parse().unwrap()
            })
        );
        assert_eq!(
            p("tls:[2001:db8::1]"),
            HopTarget::Addr(NextHop {
                transport: Transport::Tls,
                addr: "[2001:db8::1]:5061".parse().unwrap()
            })
        );
        assert_eq!(
            p("tls:Pool.Example.com"),
            HopTarget::Name(NameQuery {
                host: "pool.example.com".into(),
                port: None,
                transport: Some(Transport::Tls),
                secure: false
            })
        );
        assert_eq!(
            p("sips:pool.example.com"),
            HopTarget::Name(NameQuery {
                host: "pool.example.com".into(),
                port: None,
                transport: Some(Transport::Tls),
                secure: true
            })
        );
        assert_eq!(
            p("sip:fe1.example.com:5060;transport=tcp"),
            HopTarget::Name(NameQuery {
                host: "fe1.example.com".into(),
                port: Some(5060),
                transport: Some(Transport::Tcp),
                secure: false
            })
        );
        assert_eq!(
            p("example.com"),
            HopTarget::Name(NameQuery {
                host: "example.com".into(),
                port: None,
                transport: None,
                secure: false
            })
        );
        for bad in [
            "sctp:1.2.3.4:5",
            "udp:1.2.3.4:x",
            "sip:alice@example.com",
            "sips:pool.example.com;transport=udp",
            "tcp:bad host",
            "udp:10.0.0.1:0",
            "",
        ] {
            assert!(NextHopSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
