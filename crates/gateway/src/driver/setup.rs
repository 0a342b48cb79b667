//! Start-up: binds every listener, loads TLS, resolves the next hops, builds the [`Edge`] from the
//! [`Settings`] (and the authentication stage from `[auth]`), then starts the core thread and the
//! tasks around it and hands back the [`Running`] gateway.
//!
//! Apart from the types the threads share (`mod.rs`): start-up runs once, and after it only what
//! it spawned goes on (the core thread, the accept tasks, housekeeping, the next-hop watcher, the
//! HTTP listeners), meeting through `Shared`.

use super::*;

/// Bind everything and start serving, with the authentication stage `[auth]` describes (none when
/// it is disabled).
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    start_auth(settings, AuthSeams::default()).await
}

/// What a test plugs into the authentication stage instead of what the configuration builds.
#[derive(Default)]
pub struct AuthSeams {
    /// The Kerberos acceptor (instead of MIT's from the keytab).
    pub kerberos: Option<Box<dyn sagw_auth::KerberosBackend>>,
    /// The domain's NTLM verifier (instead of winbind from `[auth.domain]`); its workers take
    /// `[auth.domain]`'s sizes, or their defaults when the section is absent.
    pub domain_ntlm: Option<Arc<dyn sagw_auth::DomainNtlmVerifier>>,
    /// The directory of SIP identities for domain accounts (NTLM through the domain, Kerberos),
    /// instead of the LDAP one `[auth.directory]` builds.
    pub directory: Option<Arc<dyn sagw_auth::AccountDirectory>>,
}

/// [`start`] with test seams ([`AuthSeams`]): a slow domain, a fake directory.
pub async fn start_with_seams(settings: Settings, seams: AuthSeams) -> Result<Running, StartError> {
    start_auth(settings, seams).await
}

/// [`start`] with `kerberos` as the Kerberos acceptor instead of MIT's from the keytab: a test
/// seam (a slow acceptor, to show that sign-ins waiting for it do not hold other messages up).
pub async fn start_with_kerberos_backend(
    settings: Settings,
    kerberos: Box<dyn sagw_auth::KerberosBackend>,
) -> Result<Running, StartError> {
    start_auth(
        settings,
        AuthSeams {
            kerberos: Some(kerberos),
            ..AuthSeams::default()
        },
    )
    .await
}

async fn start_auth(settings: Settings, seams: AuthSeams) -> Result<Running, StartError> {
    let state = crate::state::StateSetup::open(&settings.state).await?;
    let Some(a) = settings.auth.clone() else {
        warn!(
            "authentication is disabled ([auth] enabled = false): every request passes unauthenticated"
        );
        return start_inner(settings, Box::new(NoAuth), None, state, None, Vec::new()).await;
    };
    let mut rng = crate::auth::OsRng::new()?;
    let keys = crate::auth::SharedKeys {
        // A pool's gateways share it (a final leg may reach another one); one gateway draws
        // its own at each start.
        ntlm_challenge: state
            .store
            .is_some()
            .then(|| state.key.ntlm_challenge_key()),
        // One gateway: its Digest nonce key file as before; a pool shares the derived one.
        digest_nonce: state.store.is_some().then(|| state.key.digest_nonce_key()),
        started: Some(std::time::SystemTime::now()),
        digest_node: if state.store.is_some() {
            crate::state::digest_node(&crate::state::node_id(&settings))
        } else {
            0
        },
    };
    let (mut core, users, router) =
        crate::auth::build_core_with_backend(&a, &mut rng, Some(&keys), seams.kerberos)?;
    let mut workers = Vec::new();
    // AP-REQs are accepted by worker threads, never on the core thread (docs/pools.md).
    if core.serves_kerberos() && a.kerberos_workers > 0 {
        workers.push(crate::auth_jobs::AuthWorkers::new(
            sagw_auth::JobKind::Kerberos,
            a.kerberos_workers,
            a.kerberos_queue,
            a.kerberos_queue_per_source,
            settings.retry_after,
        ));
        core = core.with_kerberos_offload();
    }
    // NTLM users outside the credentials file: verified by the domain, on their own workers.
    let domain: Option<(Arc<dyn sagw_auth::DomainNtlmVerifier>, _)> = match (
        seams.domain_ntlm,
        &a.domain_ntlm,
    ) {
        (Some(v), d) => Some((v, d.clone().unwrap_or_default())),
        (None, Some(d)) => {
            let verifier = crate::domain::WinbindVerifier::load(&d.library)
                .map_err(crate::auth::AuthSetupError::from)?;
            info!(library = %d.library, workers = d.workers, "NTLM users outside the credentials file are verified by the domain (winbind)");
            Some((Arc::new(verifier), d.clone()))
        }
        (None, None) => None,
    };
    if let Some((verifier, d)) = domain {
        core = core.with_domain_ntlm(
            verifier,
            sagw_auth::DomainSettings {
                retry_after_secs: u32::try_from(d.retry_after.as_secs()).unwrap_or(u32::MAX),
            },
        );
        workers.push(crate::auth_jobs::AuthWorkers::new(
            sagw_auth::JobKind::DomainNtlm,
            d.workers,
            d.queue,
            d.queue_per_source,
            d.retry_after,
        ));
    }
    // SIP identities of domain accounts from the directory (asked on the workers, after the
    // domain or the KDC vouched for the account).
    let directory = match (seams.directory, &a.directory) {
        (Some(d), _) => Some(d),
        (None, Some(cfg)) => {
            let d = crate::directory::build(cfg).map_err(crate::auth::AuthSetupError::from)?;
            info!(url = %cfg.url, base_dn = %cfg.base_dn, "SIP identities of domain accounts come from the directory (LDAP)");
            Some(d)
        }
        (None, None) => None,
    };
    if let Some(directory) = directory {
        core = core.with_directory(directory);
    }
    if let Some(store) = &state.store {
        // An authenticator accepted by one gateway is refused by every other (MIT's replay
        // cache is per host); asked from the worker threads. So is an NTLM final leg (the
        // challenge key is the pool's): its own workers ask the store, never the core thread.
        workers.push(crate::auth_jobs::AuthWorkers::new(
            sagw_auth::JobKind::NtlmFinalLeg,
            2,
            256,
            // No share of one source: only final legs with the right password get here (one
            // user's), and this queue has no setting to raise a share for clients behind a load
            // balancer.
            256,
            settings.retry_after,
        ));
        core = core
            .with_kerberos_replay_registry(Arc::new(sagw_state::StoreReplayRegistry::new(
                store.clone(),
                tokio::runtime::Handle::current(),
            )))
            .enable_pool_journal();
    }
    let core = Arc::new(core);
    // The pool is joined (below, with authentication on): its node id is this run's from here,
    // and let go again if the start fails after all.
    let node = crate::state::node_id(&settings);
    state.hold_node(&node).await?;
    let held = state
        .store
        .clone()
        .map(|s| (s, node, state.instance.clone()));
    let restored_bindings = state.restore(&core, users.print(), SystemTime::now());
    info!(realm = %a.realm, fqdn = %a.fqdn, "client authentication on");
    for (i, p) in a.policies.iter().enumerate() {
        if let Some(o) = router.policy_id(i).and_then(|id| core.policy_offer(id)) {
            let schemes: Vec<&str> = o.schemes.iter().map(|s| s.label()).collect();
            let algorithms: Vec<&str> = o.digest_algorithms.iter().map(|a| a.token()).collect();
            info!(policy = %p.name, schemes = ?schemes, digest_algorithms = ?algorithms, digest_realm = o.digest_realm.unwrap_or(""), "challenge policy");
        }
    }
    let mut stage =
        crate::auth::SecurityStage::new(core.clone(), Box::new(rng), a.director.clone())
            .with_router(router);
    for w in &workers {
        stage = stage.with_workers(w.clone());
    }
    let live = AuthLive {
        routing: stage.routing(),
        core: core.clone(),
        users: users.clone(),
    };
    let started = start_inner(
        settings,
        Box::new(stage),
        Some((core, users, live)),
        state,
        restored_bindings,
        workers,
    )
    .await;
    if started.is_err()
        && let Some((store, node, instance)) = held
    {
        let _ = store.release_node(&node, &instance).await;
    }
    started
}

/// Bind everything and start serving, with `auth` as the client authentication stage.
pub async fn start_with_auth(
    settings: Settings,
    auth: Box<dyn ClientAuth>,
) -> Result<Running, StartError> {
    let state = crate::state::StateSetup::open(&settings.state).await?;
    start_inner(settings, auth, None, state, None, Vec::new()).await
}

async fn start_inner(
    settings: Settings,
    auth: Box<dyn ClientAuth>,
    security: Option<(
        Arc<sagw_auth::SecurityCore>,
        Arc<crate::users::ReloadingStore>,
        AuthLive,
    )>,
    state: crate::state::StateSetup,
    restored_bindings: Option<Vec<u8>>,
    workers: Vec<Arc<crate::auth_jobs::AuthWorkers>>,
) -> Result<Running, StartError> {
    for w in settings.warnings() {
        warn!("{w}");
    }
    let listeners = bind_listeners(&settings).await?;
    let udp_addr = listeners.first(Transport::Udp);
    let tcp_addr = listeners.first(Transport::Tcp);
    let tls_addr = listeners.first(Transport::Tls);
    let metrics_addr = listeners.metrics.as_ref().and_then(|s| s.local_addr().ok());
    let admin_addr = listeners
        .admin
        .as_ref()
        .and_then(|(s, _)| s.local_addr().ok());

    let tls = load_tls(&settings, tls_addr)?;
    let resolver = Arc::new(resolver(&settings)?);
    let (initial_hops, next_resolution) = resolve_before_start(&settings, &resolver).await;

    let local = local_addrs(&settings, &listeners);
    // Flow tokens outlive the process (Record-Route of long dialogs, Path at a registrar) and
    // cross the pool: they are keyed by the pool key.
    let cfg = settings.edge_config(
        local.clone(),
        Secret::new(state.key.flow_token_key()),
        initial_hops.iter().map(|o| o.resolved.hop).collect(),
    );
    let mut edge = Edge::with_auth(cfg, auth);
    restore_bindings(&mut edge, restored_bindings.as_deref());

    let metrics = Arc::new(Metrics::default());
    if let Some((core, _, _)) = &security {
        let _ = metrics.auth.set(core.clone());
    }
    let (events_tx, events_rx) = mpsc::channel(8192);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (intake_tx, intake_rx) = watch::channel(Intake::Open);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (poll, wake, udp) = core_poll(listeners.udp)?;
    let per_ip = PerIp::new(settings.max_connections_per_ip, exempt(&settings));
    let sip_limits = settings.sip_limits.clone();
    let shared = Arc::new(Shared {
        settings: ArcSwap::from_pointee(settings),
        metrics: metrics.clone(),
        events: events_tx,
        wake: wake.clone(),
        runtime: tokio::runtime::Handle::current(),
        flows: Mutex::new(FlowTable::default()),
        next_flow: AtomicU64::new(first_connection_seq()),
        connections: AtomicUsize::new(0),
        per_ip,
        shutdown: shutdown_rx,
        outbound_tls: arc_swap::ArcSwap::from_pointee(tls.outbound),
        hop_names: Mutex::new(HashMap::new()),
        resolver,
        hop_table: Arc::new(crate::hops::HopTable::default()),
        resolve_again: tokio::sync::Notify::new(),
        intake: intake_rx,
        in_progress: AtomicUsize::new(control::NOT_COUNTED),
        tls_server: ArcSwapOption::new(tls.acceptor),
        peers: ArcSwapOption::new(tls.peers.clone()),
        outbound_source: tcp_addr.map(|a| a.ip()),
        core_backlogged: AtomicUsize::new(0),
    });
    let _ = metrics.hops.set(shared.hop_table.clone());
    let mut hop_origins = HashMap::new();
    record_hop_names(&shared, &mut hop_origins, &initial_hops);
    edge.set_next_hops(cfg_hops(&initial_hops), now());
    shared
        .hop_table
        .publish(edge.hop_status(Instant::now()), &hop_origins);

    let mut tasks = Vec::new();
    let security_core = security.as_ref().map(|(core, _, _)| core);
    let jobs = start_auth_workers(&shared, security_core, workers)?;
    let running_settings = shared.settings.load_full();
    let (pool, pool_events) = join_pool(
        &shared,
        &state,
        security_core,
        &running_settings,
        tcp_addr,
        &mut tasks,
    );
    let save_on_stop = match (&state.snapshot, security.as_ref()) {
        (Some(path), Some((core, users, _))) => Some(SaveOnStop {
            core: core.clone(),
            users: users.clone(),
            path: path.clone(),
            sealer: state.sealer.clone(),
            bindings: Arc::new(Mutex::new(None)),
        }),
        _ => None,
    };
    let core_state = Core {
        edge,
        shared: shared.clone(),
        udp,
        pending: HashMap::new(),
        jobs,
        save_bindings: save_on_stop.as_ref().map(|s| s.bindings.clone()),
        pool,
        pool_events,
        hop_origins,
        control: control_rx,
        sip_limits,
        udp_out: Vec::with_capacity(udp_batch::BATCH),
        registry: poll.registry().try_clone().map_err(StartError::Core)?,
        streams: HashMap::new(),
        backlog_bytes: 0,
        stream_ready: Vec::new(),
        read_buf: core_stream::read_buffer(),
        next_sweep: Instant::now() + core_stream::SWEEP,
    };
    let exit_rx = spawn_core_thread(core_state, poll, events_rx, running_settings.core_cpu)?;
    for (id, transport, balancers, l) in listeners.streams {
        tasks.push(tokio::spawn(accept_task(
            l,
            id,
            transport,
            balancers,
            shared.clone(),
        )));
    }
    let admin = listeners
        .admin
        .map(|(l, token)| (l, Arc::new(arc_swap::ArcSwap::from_pointee(token))));
    let control = Arc::new(GatewayControl::new(
        shared.clone(),
        control_tx,
        intake_tx,
        tls.cert.clone(),
        security.as_ref().map(|(_, _, live)| live.clone()),
        admin.as_ref().map(|(_, token)| token.clone()),
    ));
    let seams = Arc::new(crate::admin::ControlSeams::default());
    seams.attach_lifecycle(control.clone());
    seams.attach_hops(shared.hop_table.clone());
    if let Some((core, users, _)) = security {
        tasks.push(tokio::spawn(housekeeping(
            core,
            users,
            shared.shutdown.clone(),
            wake.clone(),
        )));
    }
    // Also without names now: a reload may bring some.
    let first =
        next_resolution.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(3600));
    tasks.push(tokio::spawn(watch_next_hops(
        shared.clone(),
        first,
        initial_hops.clone(),
    )));
    if let Some(l) = listeners.metrics {
        let app = crate::admin::metrics_router(metrics.clone());
        tasks.push(tokio::spawn(crate::http::serve(
            l,
            app,
            HTTP_CONNECTIONS,
            crate::http::REQUEST_TIMEOUT,
            "metrics",
            shared.shutdown.clone(),
        )));
    }
    if let Some((l, token)) = admin {
        let state = admin_state(token, &shared, &running_settings, &seams, &exit_rx);
        tasks.push(tokio::spawn(crate::http::serve(
            l,
            crate::admin::router(state),
            HTTP_CONNECTIONS,
            running_settings.admin.request_timeout,
            "admin",
            shared.shutdown.clone(),
        )));
    }
    for b in &listeners.bound {
        info!(name = %b.name, transport = %b.transport, addr = %b.addr, "listener");
    }
    info!(
        udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, metrics = ?metrics_addr, admin = ?admin_addr,
        advertise = %local.host, mode = ?running_settings.mode, next_hops = running_settings.hops.specs.len(),
        "sagw listening"
    );
    Ok(Running {
        udp: udp_addr,
        tcp: tcp_addr,
        tls: tls_addr,
        listeners: listeners.bound,
        metrics_addr,
        admin_addr,
        cert: tls.cert,
        metrics,
        hops: shared.hop_table.clone(),
        shutdown: shutdown_tx,
        wake,
        core_exit: exit_rx,
        tasks,
        save_on_stop,
        seams,
        control,
    })
}

/// What start-up binds: the SIP listeners, and the metrics' and admin API's.
struct Listeners {
    /// The UDP sockets, in listener order: the core thread reads them itself.
    udp: Vec<(ListenerId, std::net::UdpSocket)>,
    /// The TCP and TLS listeners, for their accept tasks.
    streams: Vec<(ListenerId, Transport, Option<Balancers>, TcpListener)>,
    /// Every listener as bound, in [`ListenerId`] order.
    bound: Vec<BoundListener>,
    metrics: Option<TcpListener>,
    /// With the admin API's token; `None`: off, or refused for want of a usable token file.
    admin: Option<(TcpListener, crate::admin::Token)>,
}

impl Listeners {
    /// The address of the first listener of `t`: the one the headers the proxy writes name.
    fn first(&self, t: Transport) -> Option<SocketAddr> {
        self.bound.iter().find(|b| b.transport == t).map(|b| b.addr)
    }
}

/// Binds every listener, SIP's in configuration order, then the metrics' and the admin API's.
/// Start-up binds before it loads a certificate, asks DNS or starts the core thread and the
/// tasks: an address that cannot be bound fails the start ([`StartError::Bind`], naming the
/// listener) with none of that done.
async fn bind_listeners(settings: &Settings) -> Result<Listeners, StartError> {
    let bind_err = |what: String, addr| move |source| StartError::Bind { what, addr, source };
    let mut udp_socks = Vec::new();
    let mut streams = Vec::new();
    let mut bound = Vec::new();
    for (i, l) in settings.listeners.iter().enumerate() {
        // Config::validate keeps the count below ListenerId::OUTBOUND.
        let id = ListenerId(u16::try_from(i).unwrap_or(ListenerId::OUTBOUND.0));
        let what = format!("{} listener `{}`", l.transport, l.name);
        let addr = match l.transport {
            Transport::Udp => {
                let sock = bind_udp(l.addr).map_err(bind_err(what.clone(), l.addr))?;
                let addr = sock.local_addr().map_err(bind_err(what, l.addr))?;
                udp_socks.push((id, sock));
                addr
            }
            Transport::Tcp | Transport::Tls => {
                let listener = TcpListener::bind(l.addr)
                    .await
                    .map_err(bind_err(what.clone(), l.addr))?;
                let addr = listener.local_addr().map_err(bind_err(what, l.addr))?;
                streams.push((id, l.transport, l.proxy_protocol.clone(), listener));
                addr
            }
        };
        bound.push(BoundListener {
            name: l.name.clone(),
            transport: l.transport,
            addr,
        });
    }
    let metrics_listener = match settings.metrics {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(bind_err("metrics".into(), a))?,
        ),
        None => None,
    };
    let admin_listener = match admin_listener(&settings.admin).await {
        Ok(l) => l,
        Err(source) => {
            let addr = settings
                .admin
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            return Err(StartError::Bind {
                what: "admin API".into(),
                addr,
                source,
            });
        }
    };
    Ok(Listeners {
        udp: udp_socks,
        streams,
        bound,
        metrics: metrics_listener,
        admin: admin_listener,
    })
}

/// The TLS material, read at start-up: the servers trusted by their certificate, the TLS
/// listeners' certificate and the client side towards next hops.
struct TlsSetup {
    peers: Option<Arc<PeerTrust>>,
    /// `None` without a TLS listener.
    cert: Option<CertInfo>,
    /// The TLS listeners' configuration; `None` without a TLS listener.
    acceptor: Option<Arc<rustls::ServerConfig>>,
    outbound: crate::tls_client::OutboundTls,
}

/// Reads the TLS files at start-up: one missing or unreadable fails the start
/// ([`StartError::Tls`]) rather than a handshake later. The listeners' certificate is loaded, or
/// generated, only when a TLS listener is bound, and logged with its fingerprint.
fn load_tls(settings: &Settings, tls_addr: Option<SocketAddr>) -> Result<TlsSetup, StartError> {
    let peers = match &settings.peer_trust {
        Some(p) => Some(Arc::new(PeerTrust::load(&p.ca, &p.names)?)),
        None => None,
    };
    let (cert, acceptor) = match tls_addr {
        Some(_) => {
            let id = tls::load_identity(&settings.cert)?;
            let how = match (&settings.cert, id.info.generated_now) {
                (CertSource::Files { .. }, _) => "configured",
                (CertSource::Generated { .. }, true) => "generated now",
                (CertSource::Generated { .. }, false) => "generated earlier",
            };
            info!(
                path = %id.info.cert_path.display(),
                sha256 = %id.info.fingerprint,
                "TLS certificate ({how})"
            );
            (
                Some(id.info.clone()),
                Some(tls::server_config(&id, peers.as_deref())?),
            )
        }
        None => (None, None),
    };
    let outbound = crate::tls_client::OutboundTls::load(&settings.hops.outbound_tls)?;
    Ok(TlsSetup {
        peers,
        cert,
        acceptor,
        outbound,
    })
}

/// The DNS resolver. Without usable name servers the gateway still starts when no next hop is
/// configured by name (only host names in a Route go unresolved, logged); when one is, the start
/// fails ([`StartError::Resolver`]): that next hop could never be reached.
fn resolver(settings: &Settings) -> Result<crate::resolver::Resolver, StartError> {
    let names = settings
        .hops
        .specs
        .iter()
        .any(|s| matches!(s.target, crate::resolver::HopTarget::Name(_)));
    match crate::resolver::Resolver::new(&settings.hops.nameservers) {
        Ok(r) => Ok(r),
        Err(e) if !names => {
            warn!(error = %e, "no DNS: host names in a Route will not resolve (503)");
            Ok(crate::resolver::Resolver::without_servers().map_err(|_| e)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The next hops, and when to resolve them again. Names are resolved before the core starts, so
/// that it starts with its targets; a DNS server that does not answer delays the start by at most
/// [`crate::hops::START_RESOLUTION_LIMIT`]: the core then starts with the next hops given as
/// addresses, and [`watch_next_hops`] keeps trying.
async fn resolve_before_start(
    settings: &Settings,
    resolver: &crate::resolver::Resolver,
) -> (Vec<crate::hops::HopOrigin>, Option<Instant>) {
    tokio::time::timeout(
        crate::hops::START_RESOLUTION_LIMIT,
        crate::hops::resolve_all(&settings.hops.specs, resolver),
    )
    .await
    .unwrap_or_else(|_| {
        warn!(
            "next hops: DNS did not answer in time; starting with the next hops given as addresses"
        );
        let literal = settings
            .hops
            .literal_hops()
            .into_iter()
            .zip(
                settings
                    .hops
                    .specs
                    .iter()
                    .filter(|s| matches!(s.target, crate::resolver::HopTarget::Addr(_))),
            )
            .map(|(hop, s)| crate::hops::HopOrigin {
                resolved: crate::resolver::Resolved {
                    hop,
                    name: String::new(),
                },
                configured: s.configured.clone(),
            })
            .collect();
        (literal, Some(Instant::now()))
    })
}

/// Who the edge is: the host it advertises, its aliases and its ports, as bound (a port of 0 in
/// the configuration is known only now).
fn local_addrs(settings: &Settings, listeners: &Listeners) -> LocalAddrs {
    let all: Vec<Option<SocketAddr>> = listeners.bound.iter().map(|b| Some(b.addr)).collect();
    let (host, aliases) = advertised_host(settings, &all);
    let (udp_addr, tcp_addr, tls_addr) = (
        listeners.first(Transport::Udp),
        listeners.first(Transport::Tcp),
        listeners.first(Transport::Tls),
    );
    // Headers the proxy writes name the first listener of each transport; the others' ports are
    // still ours in a Route or Request-URI.
    let firsts = [udp_addr, tcp_addr, tls_addr];
    let mut extra_ports: Vec<u16> = listeners
        .bound
        .iter()
        .map(|b| b.addr.port())
        .filter(|p| !firsts.iter().flatten().any(|a| a.port() == *p))
        .collect();
    extra_ports.dedup();
    LocalAddrs {
        host,
        aliases,
        udp: udp_addr.map(|a| a.port()),
        tcp: tcp_addr.map(|a| a.port()),
        tls: tls_addr.map(|a| a.port()),
        extra_ports,
    }
}

/// The registrar's bindings from the last run's snapshot (`[state] backend = "memory"`). A
/// snapshot that cannot be read is logged and costs its clients a registration, not the start.
fn restore_bindings(edge: &mut Edge, snapshot: Option<&[u8]>) {
    if let Some(bytes) = snapshot.filter(|b| !b.is_empty()) {
        match serde_json::from_slice::<Vec<sagw_proxy::BindingRecord>>(bytes) {
            Ok(records) => {
                // Connections ended with the old process (RFC 5626: their clients register
                // again); the UDP sockets are numbered as before, so their bindings still hold.
                let udp: Vec<_> = records
                    .into_iter()
                    .filter(|r| r.flow.transport == Transport::Udp)
                    .collect();
                let n = edge.import_bindings(udp, now());
                info!(
                    bindings = n,
                    "registrar bindings restored from the last run"
                );
            }
            Err(e) => warn!(error = %e, "registrar bindings in the snapshot not restored"),
        }
    }
}

/// The core thread's `epoll`, with its waker under [`WAKE_TOKEN`] and each UDP socket under
/// token 1 + its index in [`Core`]'s `udp` (listener order): the core finds the socket that is
/// ready by its token.
fn core_poll(
    udp_socks: Vec<(ListenerId, std::net::UdpSocket)>,
) -> Result<(mio::Poll, Arc<CoreWake>, Vec<UdpListener>), StartError> {
    let poll = mio::Poll::new().map_err(StartError::Core)?;
    let wake = Arc::new(CoreWake {
        sleeping: AtomicBool::new(false),
        waker: mio::Waker::new(poll.registry(), WAKE_TOKEN).map_err(StartError::Core)?,
    });
    let mut udp = Vec::with_capacity(udp_socks.len());
    for (i, (listener, sock)) in udp_socks.into_iter().enumerate() {
        let family = udp_batch::Family::of(sock.local_addr().map_err(StartError::Core)?);
        let mut sock = mio::net::UdpSocket::from_std(sock);
        poll.registry()
            .register(&mut sock, mio::Token(1 + i), mio::Interest::READABLE)
            .map_err(StartError::Core)?;
        udp.push(UdpListener {
            listener,
            sock,
            family,
        });
    }
    Ok((poll, wake, udp))
}

/// Starts the workers of deferred sign-ins (Kerberos, domain NTLM), each handing what it finished
/// back to the core thread as an event; `None` when there are none (no authentication, or no
/// sign-in deferred).
fn start_auth_workers(
    shared: &Shared,
    security: Option<&Arc<sagw_auth::SecurityCore>>,
    workers: Vec<Arc<crate::auth_jobs::AuthWorkers>>,
) -> Result<Option<Jobs>, StartError> {
    let Some(security) = security.filter(|_| !workers.is_empty()) else {
        return Ok(None);
    };
    for w in &workers {
        let (tx, wake) = (shared.events.clone(), shared.wake.clone());
        w.start(
            security.clone(),
            Box::new(move |done| {
                // A worker is a plain thread: it may wait for room in the channel.
                let sent = tx.blocking_send(Event::AuthJob(Box::new(done))).is_ok();
                wake.notify();
                sent
            }),
        )
        .map_err(StartError::Core)?;
    }
    let _ = shared.metrics.auth_jobs.set(workers.clone());
    Ok(Some((security.clone(), workers)))
}

/// With `[state] backend = "redis"` and authentication on: the core's link to the pool (its SAs
/// and bindings) and the store task that talks to the store for it, so that the core thread
/// never waits on the network. `(None, None)` otherwise.
fn join_pool(
    shared: &Shared,
    state: &crate::state::StateSetup,
    security: Option<&Arc<sagw_auth::SecurityCore>>,
    settings: &Settings,
    tcp_addr: Option<SocketAddr>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> (
    Option<crate::pool::PoolLink>,
    Option<mpsc::UnboundedReceiver<crate::pool::PoolEvent>>,
) {
    match (&state.store, security, &settings.state.backend) {
        (
            Some(store),
            Some(security),
            crate::state_config::StateBackend::Redis {
                max_claims_in_flight,
                ..
            },
        ) => {
            let (metrics, wake) = (&shared.metrics, &shared.wake);
            let node = crate::state::node_id(settings);
            info!(node = %node, "pool member");
            metrics.gauges.pooled.store(true, Ordering::Relaxed);
            let nudge = wake.clone();
            let _ = metrics.nudge.set(Box::new(move || nudge.force()));
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            let up = Arc::new(AtomicBool::new(store.is_up()));
            let link = crate::pool::PoolLink::new(
                security.clone(),
                cmd_tx,
                up.clone(),
                *max_claims_in_flight,
                tcp_addr,
                metrics.clone(),
            );
            link.load_bindings();
            let task = crate::store_task::StoreTask {
                store: store.clone(),
                sealer: state.sealer.clone(),
                node,
                instance: state.instance.clone(),
                up,
                metrics: metrics.clone(),
            };
            let wake = wake.clone();
            tasks.push(tokio::spawn(task.run(cmd_rx, move |ev| {
                let _ = ev_tx.send(ev);
                wake.notify();
            })));
            (Some(link), Some(ev_rx))
        }
        _ => (None, None),
    }
}

/// Where this run's connection counter starts: anywhere below 2^40 (never 0, a UDP socket's). Flow
/// tokens outlive a restart (their key is the pool key's), and they name a connection by its
/// counter and its peer's address and port: counted from 1 at every start, the k-th connection
/// after a restart from the address and port alice's k-th had (a load balancer's, say) took the
/// requests a registrar still routed by her old Path, signed for her.
fn first_connection_seq() -> u64 {
    (crate::state::run_random() & ((1 << 40) - 1)).max(1)
}

/// Starts the core thread, pinned as `proxy.core_cpu` says. The receiver learns how the thread
/// ended, a panic included: `Running::stopped` and `shutdown` wait on it, and a gateway whose core
/// panicked stops instead of accepting connections it no longer serves.
fn spawn_core_thread(
    core_state: Core,
    poll: mio::Poll,
    events_rx: mpsc::Receiver<Event>,
    cpu: crate::config::CoreCpu,
) -> Result<watch::Receiver<Option<CoreExit>>, StartError> {
    let (exit_tx, exit_rx) = watch::channel(None);
    let pin = core_cpu(cpu)?;
    // The thread says when it has registered itself for `sagw_core_thread_cpu_seconds_total`: a
    // scrape right after `start` returned found no such series (a race the admin tests met
    // under load).
    let (registered_tx, registered_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("sagw-core".into())
        .spawn(move || {
            let _ = core_state
                .shared
                .metrics
                .core_thread
                .set(crate::thread_cpu::ThreadCpu::current());
            let _ = registered_tx.send(());
            // The pin (and its claim on the CPU) lives as long as this thread.
            if let Some(pin) = &pin {
                if core_affinity::set_for_current(pin.cpu) {
                    info!(cpu = pin.cpu.id, "core thread pinned (proxy.core_cpu)");
                } else {
                    warn!(
                        cpu = pin.cpu.id,
                        "cannot pin the core thread: running unpinned"
                    );
                }
            }
            let run = std::panic::AssertUnwindSafe(|| core_loop(core_state, poll, events_rx));
            if std::panic::catch_unwind(run).is_err() {
                // Nothing answers SIP any more (the UDP socket is gone with the core): say so
                // loudly and let `Running::stopped` end the process rather than leave a gateway
                // that accepts connections and serves metrics but drops every message.
                tracing::error!("the core thread panicked: the gateway stops");
                let _ = exit_tx.send(Some(CoreExit::Panicked));
                return;
            }
            let _ = exit_tx.send(Some(CoreExit::Stopped));
        })
        .map_err(StartError::Core)?;
    // Microseconds, once at start: the thread's first statement.
    let _ = registered_rx.recv();
    Ok(exit_rx)
}

/// Housekeeping, every 5 s until shutdown: expired SAs and handshakes leave memory even when
/// nobody asks for them, and users added with `sagw user add` take effect without a restart.
async fn housekeeping(
    core: Arc<sagw_auth::SecurityCore>,
    users: Arc<crate::users::ReloadingStore>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<CoreWake>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut audit_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = audit_tick.tick() => crate::audit::flush_suppressed(),
            _ = tick.tick() => {
                core.expire(SystemTime::now());
                // On the blocking pool: when the file's metadata moved (or its last change is
                // too recent to trust it) the whole file is read and hashed, which on a runtime
                // worker (one, on two CPUs) would hold up every connection task meanwhile, the
                // longer the larger the file.
                let file = users.clone();
                let check = move || file.reload_if_changed(crate::users::Check::Tick);
                let reloaded =
                    match tokio::task::spawn_blocking(check).await {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %e, "credentials file check did not finish");
                            None
                        }
                    };
                if let Some(r) = reloaded {
                    control::credentials_reloaded(&core, &r, &wake);
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// What the admin API reaches the gateway through. It asks the core thread without waiting for
/// room in the event channel: a core too busy to take the question is answered as such, and never
/// holds up the API's connections.
fn admin_state(
    token: crate::admin::AdminToken,
    shared: &Shared,
    settings: &Settings,
    seams: &Arc<crate::admin::ControlSeams>,
    core_exit: &watch::Receiver<Option<CoreExit>>,
) -> crate::admin::AdminState {
    let (events, wake) = (shared.events.clone(), shared.wake.clone());
    crate::admin::AdminState {
        token,
        allowed_hosts: Arc::new(settings.admin.allowed_hosts.clone()),
        metrics: shared.metrics.clone(),
        ask_core: Arc::new(move |q| {
            let sent = events.try_send(Event::Admin(q)).is_ok();
            wake.notify();
            sent
        }),
        seams: seams.clone(),
        core_exit: core_exit.clone(),
    }
}

fn advertised_host(s: &Settings, bound: &[Option<SocketAddr>]) -> (String, Vec<String>) {
    let ips: Vec<IpAddr> = bound.iter().flatten().map(SocketAddr::ip).collect();
    let host = if !s.advertise.is_empty() {
        s.advertise.clone()
    } else {
        match ips.iter().find(|ip| !ip.is_unspecified()) {
            Some(IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => {
                warn!(
                    "listening on a wildcard address and listen.advertise is empty: advertising 127.0.0.1; set listen.advertise to the address clients use"
                );
                "127.0.0.1".to_owned()
            }
        }
    };
    let mut aliases = s.aliases.clone();
    for ip in ips.iter().filter(|ip| !ip.is_unspecified()) {
        aliases.push(match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        });
    }
    if ips.iter().any(|ip| ip.is_unspecified() || ip.is_loopback()) {
        aliases.push("127.0.0.1".into());
        aliases.push("localhost".into());
    }
    aliases.retain(|a| !a.eq_ignore_ascii_case(&host));
    aliases.dedup();
    (host, aliases)
}

/// The CPU the core thread is pinned to, if any, with its claim against other instances on the
/// host ([`crate::cpu`]).
///
/// Why pin: the core thread sleeps and wakes once or more per message; left to the scheduler it
/// was woken on whichever CPU was free, so every wake-up found cold caches and often paid for a
/// migration. Pinned, the sipp call benchmark at 200 calls/s took ~40 % less CPU per call on a
/// 2-vCPU VM. `auto` never takes the first allowed CPU, leaving it to the rest of the system, and
/// tokio's workers stay free to run anywhere.
fn core_cpu(choice: crate::config::CoreCpu) -> Result<Option<crate::cpu::Pin>, StartError> {
    crate::cpu::choose(choice, &crate::cpu::lock_dir()).map_err(|e| StartError::CoreCpu {
        cpu: e.cpu,
        allowed: e.allowed,
    })
}

/// Connections at once on the metrics and on the admin listener.
const HTTP_CONNECTIONS: usize = 64;

/// The admin API's listener and token, when `[admin] listen` is set and the token file is
/// usable. A missing, empty or exposed token file leaves the API off (logged) rather than
/// stopping the gateway: SIP service does not depend on it, and the API never runs without a
/// token. A listen address that cannot be bound is an error, as for every other listener.
async fn admin_listener(
    admin: &crate::admin_config::AdminSettings,
) -> std::io::Result<Option<(TcpListener, crate::admin::Token)>> {
    let Some(addr) = admin.listen else {
        return Ok(None);
    };
    let token = match crate::admin::read_token(&admin.token_file) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "admin API off");
            return Ok(None);
        }
    };
    if !addr.ip().is_loopback() {
        warn!(%addr, "admin API on a non-loopback address: anyone who reaches it and has the token controls the gateway");
    }
    Ok(Some((TcpListener::bind(addr).await?, token)))
}

/// Resolve the configured next-hop names again whenever their records expire (bounded by the
/// resolver's minimum and maximum), and hand the core the new target list when it changed.
async fn watch_next_hops(
    shared: Arc<Shared>,
    first: Instant,
    initial: Vec<crate::hops::HopOrigin>,
) {
    let mut stop = shared.shutdown.clone();
    let mut at = first;
    let mut last = Some(initial);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
            // A reload: the names (or the entries) may have changed.
            () = shared.resolve_again.notified() => {}
            _ = stop.changed() => return,
        }
        let specs = shared.settings.load().hops.specs.clone();
        let (hops, next) = crate::hops::resolve_all(&specs, &shared.resolver).await;
        at = next.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(3600));
        if last.as_ref() != Some(&hops) {
            last = Some(hops.clone());
            if !shared.post(Event::NextHops(hops)).await {
                return;
            }
        }
    }
}

/// The UDP socket, with a 4 MiB receive buffer: the default (~208 KiB) overflows under a burst of
/// a few thousand datagrams per second, and every drop costs a client retransmission.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(4 << 20) {
        warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::first_connection_seq;

    /// Each run counts its connections from its own random place below 2^40, never 0 (a UDP
    /// socket's): two runs do not number their connections alike.
    #[test]
    fn each_run_numbers_its_connections_from_its_own_place() {
        let runs: Vec<u64> = (0..8).map(|_| first_connection_seq()).collect();
        assert!(runs.iter().all(|s| (1..1 << 40).contains(s)), "{runs:?}");
        let mut distinct = runs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), runs.len(), "{runs:?}");
    }
}
