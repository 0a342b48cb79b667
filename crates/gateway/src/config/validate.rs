//! [`Config::validate`]: every value checked, with an error that names its key, and turned into
//! [`Settings`]; the sections that live in other modules are validated there and called from here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use sagw_proxy::{Mode, RegistrarConfig, RouteTarget, Timers, Transport};

use super::{CertSource, Config, ConfigError, CoreCpu, LogFormat, Settings, Workers, invalid};

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
/// `limits.write_queue_bytes`: two messages of the largest size the parser takes, and a bound
/// that still means something (past it, `max_connections` of them is more memory than a host has).
const WRITE_QUEUE_BYTES_MIN: usize = 128 << 10;
const WRITE_QUEUE_BYTES_MAX: usize = 1 << 30;
/// `limits.write_backlog_total_bytes` when unset (or four times `write_queue_bytes`, when that
/// is more): a thousand connections' worth of ordinary backlogs (a few hundred KB each), where
/// `max_connections` full ones were 10 GiB.
const WRITE_BACKLOG_TOTAL_DEFAULT: usize = 256 << 20;
/// Its largest: a bound that still bounds.
const WRITE_BACKLOG_TOTAL_MAX: usize = 1 << 40;

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
        super::check_log_level(&self.log.level)?;
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
        // At least one message of the largest size the parser takes, with room for what the
        // gateway adds to it (Via, Record-Route): below that, one large answer behind a short
        // backlog would close a client that reads.
        if !(WRITE_QUEUE_BYTES_MIN..=WRITE_QUEUE_BYTES_MAX).contains(&l.write_queue_bytes) {
            return Err(invalid(
                "limits.write_queue_bytes",
                "must be between 131072 (128 KiB) and 1073741824 (1 GiB)",
            ));
        }
        // Unset, it follows a larger `write_queue_bytes`, so that a configuration written before
        // it existed does not have its one connection's bound cut by it: four times that, as the
        // budget counts a backlog's buffer, which holds up to about twice what waits in it after
        // the half-consumed front is dropped, and doubles as it grows. Written, it may be below
        // that (then it is the tighter bound for every connection), but it holds at least what
        // one connection's smallest bound does.
        let write_backlog_total_bytes = match l.write_backlog_total_bytes {
            None => WRITE_BACKLOG_TOTAL_DEFAULT.max(l.write_queue_bytes.saturating_mul(4)),
            Some(v) if (WRITE_QUEUE_BYTES_MIN..=WRITE_BACKLOG_TOTAL_MAX).contains(&v) => v,
            Some(_) => {
                return Err(invalid(
                    "limits.write_backlog_total_bytes",
                    "must be between 131072 (128 KiB) and 1099511627776 (1 TiB)",
                ));
            }
        };
        bounded("limits.write_timeout_secs", l.write_timeout_secs, DAY_SECS)?;
        // Bounded as documented: `Instant::now()` plus 2^63 s panicked the accept task.
        bounded(
            "tls.handshake_timeout_secs",
            self.tls.handshake_timeout_secs,
            3600,
        )?;
        positive("proxy.max_transactions", self.proxy.max_transactions as u64)?;
        let max_transactions_per_client = match self.proxy.max_transactions_per_client {
            None => (self.proxy.max_transactions / 4).max(1),
            Some(n) if (1..=self.proxy.max_transactions).contains(&n) => n,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "proxy.max_transactions_per_client".into(),
                    message: "must be between 1 and proxy.max_transactions".into(),
                });
            }
        };
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
        let state = self.state.validate()?;
        kerberos_workers_off_the_core(auth.as_ref(), &state)?;
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
            max_transactions_per_client,
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
            write_queue_bytes: l.write_queue_bytes,
            write_backlog_total_bytes,
            write_timeout: Duration::from_secs(l.write_timeout_secs),
            metrics,
            auth,
            state,
            admin: self.admin.validate()?,
            hops,
        })
    }
}

/// With no Kerberos workers an AP-REQ is accepted on the core thread: with a directory or a
/// pool's store, each sign-in would wait there for an LDAP lookup or a store round trip (seconds
/// when either hangs), and so would every other message.
fn kerberos_workers_off_the_core(
    auth: Option<&crate::auth_config::AuthSettings>,
    state: &crate::state_config::StateSettings,
) -> Result<(), ConfigError> {
    let Some(a) = auth else { return Ok(()) };
    let pooled = matches!(
        state.backend,
        crate::state_config::StateBackend::Redis { .. }
    );
    if a.kerberos_workers == 0 && (a.directory.is_some() || pooled) {
        return Err(invalid(
            "auth.kerberos_workers",
            "must be at least 1 with [auth.directory] or a Redis state store: with 0 their lookups would run on the core thread and hold up all traffic",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kerberos_on_the_core_thread_only_without_a_directory_or_a_pool() {
        let directory = "[auth]\nkerberos_workers = 0\n[auth.directory]\nurl = \"ldaps://dc.example.com\"\nbase_dn = \"dc=example,dc=com\"\nbind_dn = \"cn=gw\"\nbind_password_file = \"/etc/sagw/ldap\"\nca_file = \"/etc/sagw/ca.pem\"\n";
        let pool = "[auth]\nkerberos_workers = 0\n[state]\nbackend = \"redis\"\nredis = [\"redis://127.0.0.1:6379\"]\n";
        for text in [directory, pool] {
            let e = err(text);
            assert!(e.contains("auth.kerberos_workers"), "{text}: {e}");
        }
        assert!(
            Config::parse("[auth]\nkerberos_workers = 0\n")
                .and_then(|c| c.validate())
                .is_ok()
        );
    }

    fn err(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|_| ())) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn the_handshake_timeout_is_bounded_as_documented() {
        for v in ["0", "3601", "18446744073709551615"] {
            let e = err(&format!("[tls]\nhandshake_timeout_secs = {v}\n"));
            assert!(e.contains("tls.handshake_timeout_secs"), "{v}: {e}");
        }
        assert!(
            Config::parse("[tls]\nhandshake_timeout_secs = 3600\n")
                .and_then(|c| c.validate())
                .is_ok()
        );
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

    /// The settings of a configuration with `[proxy] key = "value"` and defaults otherwise.
    fn with_proxy(key: &str, value: &str) -> Settings {
        Config::parse(&format!("[proxy]\n{key} = \"{value}\""))
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn the_overall_backlog_budget_follows_a_larger_connection_bound_unless_written() {
        let total = |limits: &str| {
            Config::parse(&format!("[limits]\n{limits}"))
                .and_then(|c| c.validate())
                .map(|s| s.write_backlog_total_bytes)
        };
        assert_eq!(total("").ok(), Some(256 << 20));
        // Unset, it follows a per-connection bound whose buffer may hold more than its default:
        // a configuration written before the budget existed keeps its own bound.
        assert_eq!(total("write_queue_bytes = 1073741824").ok(), Some(4 << 30));
        assert_eq!(total("write_queue_bytes = 67108864").ok(), Some(256 << 20));
        assert_eq!(
            total("write_backlog_total_bytes = 131072").ok(),
            Some(131_072)
        );
        // Written below one connection's bound, it is the tighter bound.
        assert_eq!(
            total("write_queue_bytes = 1073741824\nwrite_backlog_total_bytes = 2097152").ok(),
            Some(2 << 20)
        );
        assert_eq!(
            total("write_backlog_total_bytes = 1099511627776").ok(),
            Some(1 << 40)
        );
        for bad in [
            "write_backlog_total_bytes = 0",
            "write_backlog_total_bytes = 131071",
            "write_backlog_total_bytes = 1099511627777",
        ] {
            let e = total(bad).expect_err(bad).to_string();
            assert!(
                e.contains("`limits.write_backlog_total_bytes`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_write_queue_holds_two_of_the_largest_messages_and_at_most_a_gib() {
        let bytes = |v: usize| {
            Config::parse(&format!("[limits]\nwrite_queue_bytes = {v}"))
                .and_then(|c| c.validate())
                .map(|s| s.write_queue_bytes)
        };
        assert_eq!(
            Config::parse("")
                .unwrap()
                .validate()
                .unwrap()
                .write_queue_bytes,
            1 << 20
        );
        assert_eq!(bytes(131_072).ok(), Some(131_072));
        assert_eq!(bytes(1 << 30).ok(), Some(1 << 30));
        for bad in [0, 65_535, 131_071, (1 << 30) + 1] {
            assert!(
                err(&format!("[limits]\nwrite_queue_bytes = {bad}"))
                    .contains("`limits.write_queue_bytes`"),
                "{bad}"
            );
        }
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
