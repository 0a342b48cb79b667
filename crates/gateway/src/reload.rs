//! Configuration reload (SIGHUP, the admin API): where the file comes from, and which of its
//! settings a running gateway can take over and which wait for a restart.
//!
//! A reload is all or nothing: the file is read and validated, the certificate and CA files it
//! names are loaded, and only when everything holds is anything applied; a broken file leaves the
//! running configuration as it was. What can change live is applied; what cannot (listen
//! addresses, `[state]`, the identity the authentication core was built with...) keeps its
//! running value and is listed in [`ReloadReport::needs_restart`]. [`plan`] decides this, field
//! by field: it destructures [`Settings`] whole, so a new setting does not compile until someone
//! decided which kind it is.
//!
//! Nothing a reload does touches a security association, a binding, a transaction or a
//! connection (docs/configuration.md, "Reloading").

use std::path::PathBuf;

use crate::auth_config::{AuthSettings, ClientRule};
use crate::config::{Config, ConfigError, Settings};
use crate::lifecycle::ReloadReport;

/// Where the configuration comes from, as `sagw` was started: the file (or the embedded default)
/// and the command-line overrides, which keep applying at every reload.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config`; `None`: the embedded default.
    pub path: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

impl ConfigSource {
    /// The file as parsed, with the overrides applied (not validated).
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.path {
            Some(p) => Config::load(p)?,
            None => Config::embedded()?,
        };
        // Under systemd (StateDirectory=) the working directory is `/`: relative data paths go
        // under the state directory instead (docs/deployment.md), at start and on every reload.
        if let Some(dir) = crate::service::state_directory() {
            crate::service::place_data_under(&mut cfg, &dir);
        }
        if let Some(l) = &self.log_level {
            // The file's own level is checked all the same: an override (`--log-level`, or the
            // `RUST_LOG` a reload keeps) must not hide a typo that the next start without it
            // would refuse.
            crate::config::check_log_level(&cfg.log.level)?;
            cfg.log.level = l.clone();
        }
        if let Some(f) = &self.log_format {
            cfg.log.format = f.clone();
        }
        Ok(cfg)
    }

    /// The validated settings.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        self.load_config()?.validate()
    }

    /// For logs: the file, or "embedded default".
    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(
            || "embedded default".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// What a reload applies: the settings to run with from now on (the new file's, with the
/// running values kept for what needs a restart) and what changed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The settings in effect after the reload.
    pub effective: Settings,
    /// The keys applied, and those that wait for a restart.
    pub report: ReloadReport,
}

/// Takes `new` over where it differs from `current`: applied, reported under `key`.
fn live<T: PartialEq>(report: &mut ReloadReport, key: &str, old: &T, new: T) -> T {
    if *old != new {
        report.applied.push(key.to_owned());
    }
    new
}

/// Keeps `current` where `new` differs: reported under `key` as needing a restart.
fn fixed<T: PartialEq + Clone>(report: &mut ReloadReport, key: &str, old: &T, new: T) -> T {
    if *old != new {
        report.needs_restart.push(key.to_owned());
    }
    old.clone()
}

/// The servers trusted by their certificate apply live: new handshakes are judged by the new CA
/// and names, and open connections trusted before are judged again (those no longer trusted are
/// closed). Revoking a server's trust must not wait for a restart.
fn plan_peer_trust(
    r: &mut ReloadReport,
    old: &Option<crate::inbound_config::PeerTrustSettings>,
    new: Option<crate::inbound_config::PeerTrustSettings>,
) -> Option<crate::inbound_config::PeerTrustSettings> {
    let ca =
        |p: &Option<crate::inbound_config::PeerTrustSettings>| p.as_ref().map(|p| p.ca.clone());
    let names = |p: &Option<crate::inbound_config::PeerTrustSettings>| {
        p.as_ref().map(|p| p.names.clone()).unwrap_or_default()
    };
    if ca(old) != ca(&new) {
        r.applied.push("tls.peer_ca".to_owned());
    }
    if names(old) != names(&new) {
        r.applied.push("proxy.trusted_peer_names".to_owned());
    }
    new
}

/// Next hops by name, probing and outbound TLS apply live (the names are resolved again at
/// once, the TLS configurations rebuilt, new targets probed); the DNS servers are the
/// resolver's, built at start.
fn plan_hops(
    r: &mut ReloadReport,
    old: &crate::hop_config::HopSettings,
    mut new: crate::hop_config::HopSettings,
) -> crate::hop_config::HopSettings {
    new.nameservers = fixed(
        r,
        "dns.nameservers",
        &old.nameservers,
        std::mem::take(&mut new.nameservers),
    );
    // Entries given by address are reported under proxy.next_hops already (Settings::next_hops).
    if old.specs != new.specs && !r.applied.iter().any(|k| k == "proxy.next_hops") {
        r.applied.push("proxy.next_hops".into());
    }
    if old.probe != new.probe {
        r.applied.push("proxy.probe_interval_secs".into());
    }
    // tls.next_hop_ca is reported with the other Settings fields.
    if old.outbound_tls.client != new.outbound_tls.client {
        r.applied.push("tls.client_cert".into());
    }
    if old.outbound_tls.peers != new.outbound_tls.peers {
        r.applied.push("tls.next_hop".into());
    }
    new
}

/// The config key of a listener: `listen.udp|tcp|tls`, or `listen.extra.<name>`.
fn listener_key(name: &str) -> String {
    if matches!(name, "udp" | "tcp" | "tls") {
        format!("listen.{name}")
    } else {
        format!("listen.extra.{name}")
    }
}

/// Decides, setting by setting, what `new` changes now and what waits for a restart.
pub fn plan(current: &Settings, new: Settings) -> Plan {
    let mut r = ReloadReport::default();
    // Whole: a field added to Settings must be classified here (see the module comment).
    let Settings {
        log_level,
        log_format,
        udp,
        tcp,
        tls,
        listeners,
        advertise,
        aliases,
        cert,
        next_hop_ca,
        handshake_timeout,
        mode,
        domains,
        next_hops,
        trusted_peers,
        client_routes,
        retry_after,
        max_transactions,
        max_transactions_per_client,
        core_cpu,
        workers,
        drain_grace,
        registrar,
        timers,
        max_connections,
        max_connections_per_ip,
        sip_limits,
        idle_timeout,
        message_timeout,
        write_queue,
        write_queue_bytes,
        write_backlog_total_bytes,
        write_timeout,
        metrics,
        admin,
        peer_trust,
        auth,
        state,
        hops,
    } = new;
    let c = current;
    // Sockets are bound once: each listener that moved, appeared or went away is named.
    let mut names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    for l in &listeners {
        if !names.contains(&l.name.as_str()) {
            names.push(&l.name);
        }
    }
    for name in names {
        let old = c.listeners.iter().find(|l| l.name == name);
        let new = listeners.iter().find(|l| l.name == name);
        if old != new {
            r.needs_restart.push(listener_key(name));
        }
    }
    let (_, _, _) = (udp, tcp, tls);
    let effective_auth = match (&c.auth, auth) {
        (None, None) => None,
        (Some(old), Some(new)) => Some(plan_auth(&mut r, old, new, c.listeners == listeners)),
        (old, _) => {
            r.needs_restart.push("auth.enabled".to_owned());
            old.clone()
        }
    };
    let mut limits = c.sip_limits.clone();
    limits.max_message_bytes = live(
        &mut r,
        "limits.max_message_bytes",
        &c.sip_limits.max_message_bytes,
        sip_limits.max_message_bytes,
    );
    limits.max_headers = live(
        &mut r,
        "limits.max_headers",
        &c.sip_limits.max_headers,
        sip_limits.max_headers,
    );
    limits.max_line_bytes = live(
        &mut r,
        "limits.max_line_bytes",
        &c.sip_limits.max_line_bytes,
        sip_limits.max_line_bytes,
    );
    let effective = Settings {
        log_level: live(&mut r, "log.level", &c.log_level, log_level),
        log_format: fixed(&mut r, "log.format", &c.log_format, log_format),
        udp: c.udp,
        tcp: c.tcp,
        tls: c.tls,
        listeners: c.listeners.clone(),
        advertise: fixed(&mut r, "listen.advertise", &c.advertise, advertise),
        aliases: fixed(&mut r, "listen.aliases", &c.aliases, aliases),
        cert: live(&mut r, "tls.cert", &c.cert, cert),
        next_hop_ca: live(&mut r, "tls.next_hop_ca", &c.next_hop_ca, next_hop_ca),
        handshake_timeout: live(
            &mut r,
            "tls.handshake_timeout_secs",
            &c.handshake_timeout,
            handshake_timeout,
        ),
        mode: fixed(&mut r, "proxy.mode", &c.mode, mode),
        domains: live(&mut r, "proxy.domains", &c.domains, domains),
        next_hops: live(&mut r, "proxy.next_hops", &c.next_hops, next_hops),
        trusted_peers: live(
            &mut r,
            "proxy.trusted_peers",
            &c.trusted_peers,
            trusted_peers,
        ),
        client_routes: live(
            &mut r,
            "proxy.client_routes",
            &c.client_routes,
            client_routes,
        ),
        retry_after: live(
            &mut r,
            "proxy.retry_after_secs",
            &c.retry_after,
            retry_after,
        ),
        max_transactions: live(
            &mut r,
            "proxy.max_transactions",
            &c.max_transactions,
            max_transactions,
        ),
        max_transactions_per_client: live(
            &mut r,
            "proxy.max_transactions_per_client",
            &c.max_transactions_per_client,
            max_transactions_per_client,
        ),
        core_cpu: fixed(&mut r, "proxy.core_cpu", &c.core_cpu, core_cpu),
        workers: fixed(&mut r, "proxy.workers", &c.workers, workers),
        drain_grace: live(
            &mut r,
            "proxy.drain_grace_secs",
            &c.drain_grace,
            drain_grace,
        ),
        registrar: live(&mut r, "registrar", &c.registrar, registrar),
        timers: live(&mut r, "timers", &c.timers, timers),
        max_connections: live(
            &mut r,
            "limits.max_connections",
            &c.max_connections,
            max_connections,
        ),
        max_connections_per_ip: live(
            &mut r,
            "limits.max_connections_per_ip",
            &c.max_connections_per_ip,
            max_connections_per_ip,
        ),
        sip_limits: limits,
        idle_timeout: live(
            &mut r,
            "limits.idle_timeout_secs",
            &c.idle_timeout,
            idle_timeout,
        ),
        message_timeout: live(
            &mut r,
            "limits.message_timeout_secs",
            &c.message_timeout,
            message_timeout,
        ),
        write_queue: live(
            &mut r,
            "limits.write_queue_messages",
            &c.write_queue,
            write_queue,
        ),
        write_queue_bytes: live(
            &mut r,
            "limits.write_queue_bytes",
            &c.write_queue_bytes,
            write_queue_bytes,
        ),
        // The core reads it at each check: applies at once, to the connections open too.
        write_backlog_total_bytes: live(
            &mut r,
            "limits.write_backlog_total_bytes",
            &c.write_backlog_total_bytes,
            write_backlog_total_bytes,
        ),
        write_timeout: live(
            &mut r,
            "limits.write_timeout_secs",
            &c.write_timeout,
            write_timeout,
        ),
        metrics: fixed(&mut r, "metrics.listen", &c.metrics, metrics),
        admin: fixed(&mut r, "admin", &c.admin, admin),
        peer_trust: plan_peer_trust(&mut r, &c.peer_trust, peer_trust),
        auth: effective_auth,
        state: fixed(&mut r, "state", &c.state, state),
        hops: plan_hops(&mut r, &c.hops, hops),
    };
    Plan {
        effective,
        report: r,
    }
}

/// Client rules compare by what they match (a regular expression by its pattern).
fn same_rules(a: &[ClientRule], b: &[ClientRule]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.epid == y.epid
                && x.policy == y.policy
                && x.user_agent.as_ref().map(regex::Regex::as_str)
                    == y.user_agent.as_ref().map(regex::Regex::as_str)
        })
}

/// `[auth]`: the director map, the client-kind rules and the per-listener pins change live (the
/// stage reads them per request); the challenge policies themselves, and everything the security
/// core was built with (realm, domain, FQDN, keytab, keys, credentials file, lifetimes), need a
/// restart: the core holds SAs made under them (and `[auth.domain]`: its library and worker
/// threads live as long as the process). The credentials file's *contents* are re-read
/// at every reload whatever this says.
fn plan_auth(
    r: &mut ReloadReport,
    c: &AuthSettings,
    new: AuthSettings,
    same_listeners: bool,
) -> AuthSettings {
    let AuthSettings {
        ntlm,
        kerberos,
        digest,
        realm,
        sip_domain,
        fqdn,
        credentials,
        register_family,
        other_family,
        signature_header,
        version,
        sa_lifetime,
        sa_idle,
        deprecated,
        netbios_domain,
        netbios_computer,
        ntlm_skew,
        keytab,
        kerberos_realm,
        kerberos_skew,
        digest_realm,
        digest_algorithms,
        nonce_lifetime,
        max_tracked_nonces,
        max_tracked_nonces_per_identity,
        nonce_key,
        director,
        kerberos_without_keytab,
        policies,
        client_rules,
        listener_auth,
        by_listener,
        max_sas_per_identity,
        max_epid_len,
        kerberos_workers,
        kerberos_queue,
        kerberos_queue_per_source,
        directory,
        domain_ntlm,
    } = new;
    // The rules and pins name policies by index: they change live only over the same policies
    // (and the pins only over the same listeners).
    let same_policies = c.policies == policies
        && c.ntlm == ntlm
        && c.kerberos == kerberos
        && c.digest == digest
        && c.register_family == register_family
        && c.other_family == other_family;
    if !same_policies {
        r.needs_restart.push("auth.policy".to_owned());
    }
    let (client_rules, rules_changed) = if same_rules(&c.client_rules, &client_rules) {
        (client_rules, false)
    } else if same_policies {
        r.applied.push("auth.client".to_owned());
        (client_rules, false)
    } else {
        (c.client_rules.clone(), true)
    };
    if rules_changed {
        r.needs_restart.push("auth.client".to_owned());
    }
    let pins_live = same_policies && same_listeners;
    let (listener_auth, by_listener) = if c.listener_auth == listener_auth {
        // Unchanged pins; the table per listener id follows the listeners, which stay as they
        // run until a restart (their change is reported under `listen.*`).
        (c.listener_auth.clone(), c.by_listener.clone())
    } else if pins_live {
        r.applied.push("auth.listener".to_owned());
        (listener_auth, by_listener)
    } else {
        r.needs_restart.push("auth.listener".to_owned());
        (c.listener_auth.clone(), c.by_listener.clone())
    };
    AuthSettings {
        ntlm: c.ntlm,
        kerberos: c.kerberos,
        digest: c.digest,
        realm: fixed(r, "auth.realm", &c.realm, realm),
        sip_domain: fixed(r, "auth.sip_domain", &c.sip_domain, sip_domain),
        fqdn: fixed(r, "auth.fqdn", &c.fqdn, fqdn),
        credentials: fixed(r, "auth.credentials", &c.credentials, credentials),
        register_family: c.register_family,
        other_family: c.other_family,
        signature_header: fixed(
            r,
            "auth.signature_header",
            &c.signature_header,
            signature_header,
        ),
        version: fixed(r, "auth.version", &c.version, version),
        sa_lifetime: fixed(r, "auth.sa_lifetime_secs", &c.sa_lifetime, sa_lifetime),
        sa_idle: fixed(r, "auth.sa_idle_secs", &c.sa_idle, sa_idle),
        deprecated,
        netbios_domain: fixed(
            r,
            "auth.ntlm_netbios_domain",
            &c.netbios_domain,
            netbios_domain,
        ),
        netbios_computer: fixed(
            r,
            "auth.ntlm_netbios_computer",
            &c.netbios_computer,
            netbios_computer,
        ),
        ntlm_skew: fixed(r, "auth.ntlm_max_clock_skew_secs", &c.ntlm_skew, ntlm_skew),
        keytab: fixed(r, "auth.kerberos_keytab", &c.keytab, keytab),
        kerberos_realm: fixed(r, "auth.kerberos_realm", &c.kerberos_realm, kerberos_realm),
        kerberos_skew: fixed(
            r,
            "auth.kerberos_max_clock_skew_secs",
            &c.kerberos_skew,
            kerberos_skew,
        ),
        digest_realm: fixed(r, "auth.digest_realm", &c.digest_realm, digest_realm),
        digest_algorithms: fixed(
            r,
            "auth.digest_algorithms",
            &c.digest_algorithms,
            digest_algorithms,
        ),
        nonce_lifetime: fixed(
            r,
            "auth.digest_nonce_lifetime_secs",
            &c.nonce_lifetime,
            nonce_lifetime,
        ),
        max_tracked_nonces: fixed(
            r,
            "auth.digest_max_tracked_nonces",
            &c.max_tracked_nonces,
            max_tracked_nonces,
        ),
        max_tracked_nonces_per_identity: fixed(
            r,
            "auth.digest_max_nonces_per_identity",
            &c.max_tracked_nonces_per_identity,
            max_tracked_nonces_per_identity,
        ),
        nonce_key: fixed(r, "auth.nonce_key", &c.nonce_key, nonce_key),
        director: live(r, "auth.director", &c.director, director),
        kerberos_without_keytab: fixed(
            r,
            "auth.kerberos_without_keytab",
            &c.kerberos_without_keytab,
            kerberos_without_keytab,
        ),
        policies: c.policies.clone(),
        client_rules,
        listener_auth,
        by_listener,
        max_sas_per_identity: fixed(
            r,
            "auth.max_sas_per_identity",
            &c.max_sas_per_identity,
            max_sas_per_identity,
        ),
        max_epid_len: fixed(r, "auth.max_epid_len", &c.max_epid_len, max_epid_len),
        kerberos_workers: fixed(
            r,
            "auth.kerberos_workers",
            &c.kerberos_workers,
            kerberos_workers,
        ),
        kerberos_queue: fixed(r, "auth.kerberos_queue", &c.kerberos_queue, kerberos_queue),
        kerberos_queue_per_source: fixed(
            r,
            "auth.kerberos_queue_per_source",
            &c.kerberos_queue_per_source,
            kerberos_queue_per_source,
        ),
        // The lookup (its connections, CA, bind password, cache) is built once at start.
        directory: fixed(r, "auth.directory", &c.directory, directory),
        // The winbind library and the worker threads live as long as the process.
        domain_ntlm: fixed(r, "auth.domain", &c.domain_ntlm, domain_ntlm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        let base = "[listen]\nudp = \"127.0.0.1:5060\"\ntcp = \"127.0.0.1:5060\"\ntls = \"\"\n[proxy]\nmode = \"edge\"\n";
        Config::parse(&format!("{base}{text}"))
            .expect("parses")
            .validate()
            .expect("valid")
    }

    const HOP_A: &str = "next_hops = [\"udp:127.0.0.1:5070\"]\n";
    const HOP_B: &str = "next_hops = [\"udp:127.0.0.1:5080\"]\n";

    /// An override (`--log-level`, or `RUST_LOG` kept across reloads) does not hide a broken
    /// `log.level` in the file: the next start without the override would refuse it.
    #[test]
    fn an_override_does_not_hide_a_broken_log_level() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sagw.toml");
        std::fs::write(
            &path,
            "[log]\nlevel = \"sagw=loud\"\n[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n",
        )
        .expect("config");
        let source = ConfigSource {
            path: Some(path.clone()),
            log_level: Some("warn".into()),
            log_format: None,
        };
        let e = source
            .load()
            .expect_err("a broken log.level under an override");
        assert!(e.to_string().contains("log.level"), "{e}");
        std::fs::write(
            &path,
            "[log]\nlevel = \"debug\"\n[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n",
        )
        .expect("config");
        assert_eq!(source.load().expect("valid").log_level, "warn");
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let s = settings(HOP_A);
        let p = plan(&s, s.clone());
        assert_eq!(p.report, ReloadReport::default());
    }

    #[test]
    fn live_settings_are_taken_over() {
        let old = settings(HOP_A);
        let new = settings(&format!(
            "{HOP_B}retry_after_secs = 7\n[limits]\nmax_connections = 3\nmax_message_bytes = 4096\n[log]\nlevel = \"debug\"\n"
        ));
        let p = plan(&old, new);
        assert_eq!(
            p.report.applied,
            [
                "limits.max_message_bytes",
                "log.level",
                "proxy.next_hops",
                "proxy.retry_after_secs",
                "limits.max_connections",
            ]
        );
        assert!(p.report.needs_restart.is_empty());
        assert_eq!(p.effective.next_hops[0].addr.port(), 5080);
        assert_eq!(p.effective.max_connections, 3);
        assert_eq!(p.effective.sip_limits.max_message_bytes, 4096);
        assert_eq!(p.effective.log_level, "debug");
    }

    #[test]
    fn the_write_queue_limits_are_live() {
        let old = settings(HOP_A);
        let new = settings(&format!(
            "{HOP_A}[limits]\nwrite_queue_bytes = 2097152\nwrite_queue_messages = 10\n\
             write_backlog_total_bytes = 4194304\n"
        ));
        let p = plan(&old, new);
        let mut applied = p.report.applied.clone();
        applied.sort();
        assert_eq!(
            applied,
            [
                "limits.write_backlog_total_bytes",
                "limits.write_queue_bytes",
                "limits.write_queue_messages"
            ]
        );
        assert!(p.report.needs_restart.is_empty());
        assert_eq!(p.effective.write_queue_bytes, 2 << 20);
        assert_eq!(p.effective.write_queue, 10);
        assert_eq!(p.effective.write_backlog_total_bytes, 4 << 20);
    }

    #[test]
    fn listen_addresses_and_state_keep_their_running_values() {
        let old = settings(HOP_A);
        let text = format!(
            "{HOP_A}core_cpu = \"none\"\nworkers = \"3\"\n[[listen.extra]]\nname = \"x\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:5099\"\n[state]\nnode_id = \"n2\"\n"
        );
        let mut new = Config::parse(&format!(
            "[listen]\nudp = \"127.0.0.1:5062\"\ntcp = \"127.0.0.1:5060\"\ntls = \"\"\n[proxy]\nmode = \"edge\"\n{text}"
        ))
        .expect("parses")
        .validate()
        .expect("valid");
        new.max_transactions = 5;
        let p = plan(&old, new);
        assert_eq!(
            p.report.needs_restart,
            [
                "listen.udp",
                "listen.extra.x",
                "proxy.core_cpu",
                "proxy.workers",
                "state"
            ]
        );
        assert_eq!(p.report.applied, ["proxy.max_transactions"]);
        assert_eq!(p.effective.listeners, old.listeners);
        assert_eq!(p.effective.udp, old.udp);
        assert_eq!(p.effective.state, old.state);
        assert_eq!(p.effective.max_transactions, 5);
    }

    fn auth(extra: &str) -> Settings {
        settings(&format!(
            "{HOP_A}[auth]\nenabled = true\nschemes = [\"ntlm\", \"digest\"]\nsip_domain = \"example.com\"\ncredentials = \"/nonexistent/users\"\n{extra}"
        ))
    }

    #[test]
    fn the_domain_section_is_fixed_at_start() {
        let old = auth("");
        let new = auth("[auth.domain]\nntlm = \"winbind\"\n");
        let p = plan(&old, new);
        assert_eq!(p.report.needs_restart, ["auth.domain"]);
        assert_eq!(p.effective.auth.expect("auth").domain_ntlm, None);
        let on = auth("[auth.domain]\nntlm = \"winbind\"\n");
        let more = auth("[auth.domain]\nntlm = \"winbind\"\nworkers = 8\n");
        let p = plan(&on, more);
        assert_eq!(p.report.needs_restart, ["auth.domain"]);
        assert_eq!(
            p.effective
                .auth
                .expect("auth")
                .domain_ntlm
                .map(|d| d.workers),
            Some(4)
        );
    }

    #[test]
    fn auth_routing_is_live_and_the_core_is_not() {
        let old = auth("[auth.policy.p]\nschemes = [\"digest\"]\n");
        let new = auth(
            "realm = \"OTHER\"\n[auth.director]\n\"example.com\" = \"sip:10.0.0.9\"\n[auth.policy.p]\nschemes = [\"digest\"]\n[[auth.client]]\nepid = \"absent\"\npolicy = \"p\"\n[auth.listener.udp]\npolicy = \"p\"\n",
        );
        let p = plan(&old, new);
        assert_eq!(
            p.report.applied,
            ["auth.client", "auth.listener", "auth.director"]
        );
        assert_eq!(p.report.needs_restart, ["auth.realm"]);
        let a = p.effective.auth.expect("auth");
        assert_eq!(a.realm, old.auth.as_ref().expect("auth").realm);
        assert_eq!(a.client_rules.len(), 1);
        assert_eq!(a.director.len(), 1);

        // Other policies: the rules that name them wait for the restart too.
        let new = auth(
            "[auth.policy.p]\nschemes = [\"ntlm\"]\n[[auth.client]]\nepid = \"absent\"\npolicy = \"p\"\n",
        );
        let p = plan(&old, new);
        assert!(p.report.applied.is_empty(), "{:?}", p.report);
        assert_eq!(p.report.needs_restart, ["auth.policy", "auth.client"]);
        let a = p.effective.auth.expect("auth");
        assert!(a.client_rules.is_empty());
        assert_eq!(a.policies, old.auth.as_ref().expect("auth").policies);
    }

    #[test]
    fn the_directory_waits_for_a_restart() {
        let dir = |ttl: u64| {
            format!(
                "[auth.directory]\nurl = \"ldaps://dc1.example.com\"\nca_file = \"/etc/sagw/ad-ca.pem\"\n\
                 bind_dn = \"svc@example.com\"\nbind_password_file = \"/etc/sagw/ldap.secret\"\n\
                 base_dn = \"DC=example,DC=com\"\ncache_ttl_secs = {ttl}\n"
            )
        };
        let old = auth(&dir(300));
        for new in [auth(&dir(60)), auth("")] {
            let p = plan(&old, new);
            assert_eq!(p.report.needs_restart, ["auth.directory"]);
            assert!(p.report.applied.is_empty(), "{:?}", p.report);
            assert_eq!(
                p.effective.auth.expect("auth").directory,
                old.auth.as_ref().expect("auth").directory
            );
        }
        let p = plan(&old, auth(&dir(300)));
        assert_eq!(p.report, ReloadReport::default());
    }
}
