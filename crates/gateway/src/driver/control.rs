//! The gateway's [`Lifecycle`]: a configuration reload swaps what the tasks read (settings, the
//! TLS server and client configurations, the per-address caps, the authentication stage's
//! routing) and hands the proxy's new settings to the core thread; a drain closes the listeners
//! and turns the proxy's intake to draining. Which settings are live is decided in
//! [`crate::reload`].

use std::sync::mpsc::SyncSender;
use std::time::Duration;

use sagw_proxy::LiveSettings;
use tracing::error;

use super::*;
use crate::auth::StageRouting;
use crate::lifecycle::{Lifecycle, ReloadError, ReloadReport};
use crate::reload::{ConfigSource, Plan, plan};

/// [`Shared::in_progress`] before the core thread has counted, once draining.
pub(super) const NOT_COUNTED: usize = usize::MAX;

/// How long a reload waits for the core thread to confirm the proxy's new settings: the core
/// takes them before anything else it reads, so this is only reached when it is stuck or gone.
const CORE_CONFIRM: Duration = Duration::from_secs(5);

/// What the control surfaces send the core thread.
pub(super) enum Control {
    /// New settings for the proxy and the UDP parser; `done` is answered once they apply.
    Reconfigure {
        live: Box<LiveSettings>,
        limits: sagw_sip::Limits,
        done: SyncSender<()>,
    },
    /// Open or draining; `done` is answered once the proxy has it.
    Intake {
        intake: Intake,
        done: SyncSender<()>,
    },
}

/// The authentication stage's parts a reload changes.
#[derive(Clone)]
pub(super) struct AuthLive {
    /// The director map and policy router the stage reads per request.
    pub(super) routing: Arc<ArcSwap<StageRouting>>,
    pub(super) core: Arc<sagw_auth::SecurityCore>,
    /// The credentials file, re-read at every reload.
    pub(super) users: Arc<crate::users::ReloadingStore>,
}

/// The users removed or changed in the credentials file lose their SAs now, not when they idle
/// out (up to the 8-hour lifetime). Called by the periodic check and by a reload.
pub(super) fn credentials_reloaded(
    core: &sagw_auth::SecurityCore,
    r: &crate::users::Reloaded,
    wake: &CoreWake,
) {
    for u in &r.changed {
        let n = core.revoke_user(&u.user, u.sip_identity.as_deref());
        if n > 0 {
            info!(user = %u.user, revoked = n, "credentials removed or changed: security associations ended");
        }
    }
    // In a pool the core thread passes the revocations on.
    if !r.changed.is_empty() {
        wake.force();
    }
}

/// The proxy's part of the settings.
///
/// Next hops given by name keep the targets they resolve to now (from the published next-hop
/// table) until the watcher has resolved the new configuration: a reload that leaves a name in
/// place must not leave the core without its targets meanwhile.
fn live_settings(s: &Settings, table: &crate::hops::HopTable) -> LiveSettings {
    let next_hops = s
        .hops
        .specs
        .iter()
        .flat_map(|spec| match &spec.target {
            crate::resolver::HopTarget::Addr(h) => vec![*h],
            crate::resolver::HopTarget::Name(_) => table.targets_of(&spec.configured),
        })
        .collect();
    LiveSettings {
        domains: s.domains.clone(),
        next_hops,
        trusted_peers: s.trusted_peers.clone(),
        client_routes: s.client_routes.clone(),
        timers: s.timers,
        retry_after: s.retry_after,
        max_transactions: s.max_transactions,
        max_transactions_per_client: s.max_transactions_per_client,
        registrar: s.registrar.clone(),
        probe: s.hops.probe,
    }
}

/// Reload and drain for one running gateway (see [`Running::lifecycle`]).
pub(super) struct GatewayControl {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    intake: watch::Sender<Intake>,
    source: Mutex<Option<ConfigSource>>,
    /// One reload at a time (SIGHUP and the admin API may ask together); holds the certificate
    /// in use, to tell a renewed file from the same one.
    reloading: Mutex<Option<CertInfo>>,
    auth: Option<AuthLive>,
    /// The admin API's token in force, when the API runs: read again from `admin.token_file` at
    /// each reload.
    admin_token: Option<crate::admin::AdminToken>,
}

impl GatewayControl {
    pub(super) fn new(
        shared: Arc<Shared>,
        control: mpsc::UnboundedSender<Control>,
        intake: watch::Sender<Intake>,
        cert: Option<CertInfo>,
        auth: Option<AuthLive>,
        admin_token: Option<crate::admin::AdminToken>,
    ) -> Self {
        GatewayControl {
            shared,
            control,
            intake,
            source: Mutex::new(None),
            reloading: Mutex::new(cert),
            auth,
            admin_token,
        }
    }

    pub(super) fn set_source(&self, source: ConfigSource) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some(source);
        }
    }

    pub(super) fn drain_grace(&self) -> Duration {
        self.shared.settings.load().drain_grace
    }

    pub(super) async fn drained(&self) {
        loop {
            let counted = self.shared.in_progress.load(Ordering::Relaxed);
            if self.draining() && counted == 0 && self.queues_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True when every connection's writer has taken all that was queued for it.
    fn queues_empty(&self) -> bool {
        self.shared.core_backlogged.load(Ordering::Relaxed) == 0
            && self.shared.flows.lock().is_ok_and(|t| {
                t.by_id.values().all(|h| match &h.io {
                    ConnIo::Task { tx, .. } => tx.capacity() == tx.max_capacity(),
                    ConnIo::Core => true,
                })
            })
    }

    /// Everything that can fail first (the file, the certificate, the CA), then the changes.
    fn try_reload(&self, cert: &mut Option<CertInfo>) -> Result<ReloadReport, ReloadError> {
        let source = self
            .source
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| {
                ReloadError("started without a configuration source to re-read".into())
            })?;
        let new = source
            .load()
            .map_err(|e| ReloadError(format!("{}: {e}", source.describe())))?;
        let current = self.shared.settings.load_full();
        let Plan {
            effective,
            mut report,
        } = plan(&current, new);
        let tls_err = |e: tls::TlsError| ReloadError(e.to_string());
        // The files are read again even when their paths did not change: a renewed certificate
        // (or peer CA) is usually written over the old one.
        let peers = match &effective.peer_trust {
            Some(p) => Some(Arc::new(PeerTrust::load(&p.ca, &p.names).map_err(tls_err)?)),
            None => None,
        };
        let server = match self.shared.tls_server.load().as_ref() {
            Some(_) => {
                let id = tls::load_identity(&effective.cert).map_err(tls_err)?;
                Some((
                    tls::server_config(&id, peers.as_deref()).map_err(tls_err)?,
                    id.info,
                ))
            }
            None => None,
        };
        let client =
            crate::tls_client::OutboundTls::load(&effective.hops.outbound_tls).map_err(tls_err)?;
        // The credentials file is read on every reload, and one that cannot be loaded (made
        // readable by others, a syntax error) fails the reload like an invalid configuration: the
        // operator who removed a user must not be told "ok" while that user keeps signing in.
        let users = match (&self.auth, &effective.auth) {
            (Some(a), Some(_)) => Some(
                a.users
                    .read_now()
                    .map_err(|e| ReloadError(format!("auth.credentials: {e}")))?,
            ),
            _ => None,
        };
        // The admin token is read again as the credentials file is: a leaked token replaced in
        // its file is refused from this reload on, and a file that cannot be read fails the
        // reload (the token in force stays).
        let admin_token = match &self.admin_token {
            Some(_) => Some(
                crate::admin::read_token(&effective.admin.token_file)
                    .map_err(|e| ReloadError(e.to_string()))?,
            ),
            None => {
                // Off since start (no usable token then, or no listener): a token written since
                // does not turn it on without a restart, and the operator is told so rather
                // than "ok".
                if effective.admin.listen.is_some()
                    && crate::admin::read_token(&effective.admin.token_file).is_ok()
                    && !report.needs_restart.iter().any(|k| k.starts_with("admin"))
                {
                    report.needs_restart.push("admin.token_file".into());
                }
                None
            }
        };

        if let Some((config, info)) = server {
            let renewed = cert.as_ref().map(|c| &c.fingerprint) != Some(&info.fingerprint);
            if renewed {
                info!(path = %info.cert_path.display(), sha256 = %info.fingerprint, "TLS certificate replaced: new connections get it, open ones keep theirs");
                if !report.applied.iter().any(|k| k == "tls.cert") {
                    report.applied.push("tls.cert".into());
                }
            }
            self.shared.tls_server.store(Some(config));
            *cert = Some(info);
        }
        // Before the core is told (Control::Reconfigure): it judges the connections trusted
        // by certificate again under these.
        if let (Some(cell), Some(token)) = (&self.admin_token, admin_token)
            && !cell.load().same_as(&token)
        {
            cell.store(Arc::new(token));
            info!(
                "admin API token replaced from admin.token_file: the previous one is refused from now on"
            );
            report.applied.push("admin.token_file".into());
        }
        self.shared.peers.store(peers);
        self.shared.outbound_tls.store(Arc::new(client));
        self.shared
            .per_ip
            .reconfigure(effective.max_connections_per_ip, exempt(&effective));
        if effective.log_level != current.log_level {
            // Audited as a change through the admin API is, before the new filter applies; not
            // when the filter in force is that one already (set through the API meanwhile).
            let new = effective.log_level.trim();
            let audited = |old: &str| {
                if old != new {
                    crate::audit::log_filter_changed("reload", old, new);
                }
            };
            if let Err(e) = crate::logging::change_level(&effective.log_level, audited) {
                warn!(error = %e, "log level not changed");
            }
        }
        if let (Some(a), Some(s)) = (&self.auth, &effective.auth) {
            let router = a
                .routing
                .load()
                .router
                .with_rules(s.client_rules.clone(), s.by_listener.clone());
            a.routing.store(Arc::new(StageRouting {
                director: s.director.clone(),
                router,
            }));
            if let Some(staged) = users {
                let r = a.users.apply(staged);
                info!(users = r.users, "credentials file re-read");
                credentials_reloaded(&a.core, &r, &self.shared.wake);
            }
        }
        let live = Box::new(live_settings(&effective, &self.shared.hop_table));
        let limits = effective.sip_limits.clone();
        let confirmed = self.tell_core(|done| Control::Reconfigure { live, limits, done });
        self.shared.settings.store(Arc::new(effective));
        // Names added, removed or changed are resolved now, not at their records' expiry.
        self.shared.resolve_again.notify_one();
        // Waited for so that whoever asked (a test, the admin API) sees the new settings in
        // every request sent after the answer.
        confirmed.wait("the new settings");
        Ok(report)
    }

    /// Sends the core `control`, made with the channel the core answers on once it has applied
    /// it, and wakes the core.
    fn tell_core(&self, control: impl FnOnce(SyncSender<()>) -> Control) -> CoreConfirmation {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let sent = self.control.send(control(done_tx)).is_ok();
        self.shared.wake.force();
        CoreConfirmation(sent.then_some(done_rx))
    }
}

/// The core's answer to a [`Control`], to wait for (`None`: it could not be sent).
struct CoreConfirmation(Option<std::sync::mpsc::Receiver<()>>);

impl CoreConfirmation {
    /// Waits up to [`CORE_CONFIRM`]; says so when the core did not confirm `what`.
    fn wait(self, what: &str) {
        if self
            .0
            .is_none_or(|rx| rx.recv_timeout(CORE_CONFIRM).is_err())
        {
            warn!("the core thread did not confirm {what} (stopped or stuck)");
        }
    }
}

impl Lifecycle for GatewayControl {
    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut cert = match self.reloading.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let result = self.try_reload(&mut cert);
        let outcome = match &result {
            Ok(r) => {
                info!(applied = ?r.applied, "configuration reloaded");
                if !r.needs_restart.is_empty() {
                    warn!(needs_restart = ?r.needs_restart, "changed settings that take effect only after a restart: their running values stay");
                }
                "ok"
            }
            Err(e) => {
                error!(error = %e, "configuration reload failed: the running configuration stays");
                "failed"
            }
        };
        self.shared.metrics.config_reload(outcome);
        result
    }

    fn drain(&self) {
        if self.draining() {
            return;
        }
        // The core first, confirmed, then the listeners: once they are closed (what a load
        // balancer, or a test, sees of a drain), every request the core reads is answered as a
        // draining gateway's. The other way round, a request sent on an open connection just
        // after the listeners closed could still be taken in as new work.
        self.tell_core(|done| Control::Intake {
            intake: Intake::Draining,
            done,
        })
        .wait("the drain");
        if self.intake.send_replace(Intake::Draining) != Intake::Draining {
            info!("draining: listeners closed, new requests answered 503 with Retry-After");
        }
    }

    fn draining(&self) -> bool {
        *self.intake.borrow() == Intake::Draining
    }
}
