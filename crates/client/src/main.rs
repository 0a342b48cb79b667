//! `sagw-client`: probe an MS-SIPAE / Digest edge step by step, or put load on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sagw_client::endpoint::Event;
use sagw_client::kinit::CcacheDir;
use sagw_client::load::{self, LoadConfig, Population};
use sagw_client::session::{self, Timers};
use sagw_client::transport::{Connection, TlsOptions, TlsTrust, TransportKind, tls_connector};
use sagw_client::util::OsRng;
use sagw_client::{AuthScheme, Endpoint, EndpointConfig, Failure, LocalAddr, Password};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "sagw-client",
    version,
    about = "MS-SIPAE (NTLM, Kerberos) and Digest SIP client: probe an edge, generate load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One sign-in with a step-by-step report; exits 1 with the reason on failure.
    Probe(ProbeArgs),
    /// N endpoints, C at a time: sign-ins, then signed MESSAGEs per SA; a summary at the end.
    /// Exits 1 when any sign-in or MESSAGE failed (or none succeeded), 2 on a usage error.
    Load(LoadArgs),
    /// Write the man pages or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand)]
enum Generate {
    /// One man page per command (sagw-client.1, sagw-client-probe.1, …) into DIR.
    Man {
        /// Output directory (created when missing).
        dir: PathBuf,
    },
    /// The completion script for SHELL on standard output, or into --dir.
    Completions {
        shell: clap_complete::Shell,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `generate`: the same pages and scripts `sagw generate` writes for the gateway, from this
/// binary's own clap definition.
fn generate(what: &Generate) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let written = match what {
        Generate::Man { dir } => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cmd, dir))
            .map(|()| Some(dir.clone())),
        Generate::Completions {
            shell,
            dir: Some(dir),
        } => std::fs::create_dir_all(dir)
            .and_then(|()| clap_complete::generate_to(*shell, &mut cmd, "sagw-client", dir))
            .map(Some),
        Generate::Completions { shell, dir: None } => {
            clap_complete::generate(*shell, &mut cmd, "sagw-client", &mut std::io::stdout());
            Ok(None)
        }
    };
    match written {
        Ok(path) => {
            if let Some(p) = path {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sagw-client generate: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SchemeArg {
    Ntlm,
    Kerberos,
    Digest,
}

#[derive(Args)]
struct Common {
    /// The edge: host:port.
    #[arg(long, default_value = "127.0.0.1:5060")]
    server: String,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// PEM file with the CA (or the gateway's own certificate) to trust for TLS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any TLS certificate (lab gateways with a self-signed certificate only).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Name the TLS certificate must carry (default: the host part of --server).
    #[arg(long)]
    server_name: Option<String>,
    /// SIP domain of the AORs (sip:<user>@<domain>) and of REGISTER's Request-URI.
    #[arg(long, default_value = "example.com")]
    sip_domain: String,
    /// NTLM domain.
    #[arg(long, default_value = "")]
    domain: String,
    /// Schemes allowed, in order of preference.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ntlm,kerberos,digest"
    )]
    scheme: Vec<SchemeArg>,
    /// MS-SIPAE version to speak (3 or 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=4))]
    protocol_version: u8,
    /// Seconds to wait for a final response.
    #[arg(long, default_value_t = 32)]
    timeout: u64,
    /// Kerberos realm for kinit with a password (principal <user>@<realm>).
    #[arg(long)]
    krb_realm: Option<String>,
    /// Ask for Kerberos mutual authentication.
    #[arg(long)]
    mutual: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    common: Common,
    /// Account name (NTLM/Digest user; Kerberos principal name with --krb-realm).
    #[arg(long)]
    user: String,
    /// The sign-in address to register as, when it is not sip:<user>@<sip-domain>: a domain
    /// account whose SIP address comes from the directory (sip:alice.sip@example.com for the
    /// account EXAMPLE\alice), as a Lync client's sign-in address differs from its account.
    #[arg(long, value_parser = parse_sip_uri)]
    sip_uri: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, conflicts_with_all = ["password_file", "password"])]
    password_env: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, conflicts_with = "password")]
    password_file: Option<PathBuf>,
    /// The password on the command line (visible to other local users: prefer --password-env).
    #[arg(long)]
    password: Option<String>,
    /// Kerberos credential cache (default: KRB5CCNAME / the default cache).
    #[arg(long)]
    ccache: Option<String>,
    /// epid (10 hex digits), as MS-SIPAE clients send in From; `none`: no epid, as a standard
    /// SIP client (to see the policy such clients meet).
    #[arg(long, default_value = "0123456789")]
    epid: String,
    /// User-Agent to send (default: sagw-client/<version>); the gateway may pick its challenge
    /// policy by it (`[[auth.client]] user_agent`).
    #[arg(long)]
    user_agent: Option<String>,
    /// After signing in, send a signed MESSAGE to this URI.
    #[arg(long)]
    message: Option<String>,
    /// After signing in, send a signed OPTIONS to the registrar.
    #[arg(long)]
    options: bool,
    /// After that, answer (and verify) requests from the server for this many seconds.
    #[arg(long, default_value_t = 0)]
    listen: u64,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Endpoints in total (N).
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Endpoints at a time (C); each worker keeps one connection unless --connection-per-endpoint.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Signed MESSAGEs per SA after its sign-in.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// Target of the MESSAGEs.
    #[arg(long, default_value = "sip:echo@example.com")]
    message_target: String,
    /// Stop starting work after this many seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Offered sign-ins per second (paced); default: as fast as the edge answers. A paced
    /// operation's latency runs from its scheduled start, so queueing at saturation counts.
    #[arg(long)]
    rate: Option<f64>,
    /// Offered MESSAGEs per second (paced, latency as for --rate); default: as fast as answered.
    #[arg(long)]
    message_rate: Option<f64>,
    /// User name pattern; `{n}` is the user index.
    #[arg(long, default_value = "load{n}")]
    user_pattern: String,
    /// Password pattern; `{n}` is the user index. Read from this environment variable if set.
    #[arg(long, default_value = "load{n}-pw")]
    password_pattern: String,
    /// Distinct users (endpoint i is user i % users, each endpoint with its own epid); 0 = N.
    #[arg(long, default_value_t = 0)]
    users: usize,
    #[arg(long, default_value_t = 0)]
    first_user: usize,
    /// Kerberos credential cache shared by all endpoints (instead of kinit per user).
    #[arg(long)]
    ccache: Option<String>,
    /// Connect anew for every endpoint.
    #[arg(long)]
    connection_per_endpoint: bool,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

/// `--sip-uri`: one SIP URI as the gateway accepts it for an identity (the same rule as
/// `sagw user add --sip`), so a typo fails here and not as a 403 from the server.
fn parse_sip_uri(s: &str) -> Result<String, String> {
    if sagw_auth::is_valid_sip_identity(s) {
        Ok(s.to_owned())
    } else {
        Err("want one sip:user@host (or sips:) URI".to_owned())
    }
}

fn schemes(v: &[SchemeArg]) -> Vec<AuthScheme> {
    v.iter()
        .map(|s| match s {
            SchemeArg::Ntlm => AuthScheme::Ntlm,
            SchemeArg::Kerberos => AuthScheme::Kerberos,
            SchemeArg::Digest => AuthScheme::Digest,
        })
        .collect()
}

fn kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
        Transport::Tls => TransportKind::Tls,
    }
}

async fn resolve(c: &Common) -> Result<(SocketAddr, Option<TlsOptions>), String> {
    let addr = tokio::net::lookup_host(&c.server)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", c.server))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", c.server))?;
    let tls = match c.transport {
        Transport::Tls => {
            let host = c
                .server
                .rsplit_once(':')
                .map_or(c.server.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let trust = match (&c.ca, c.insecure) {
                (Some(p), _) => TlsTrust::Pem(p.clone()),
                (None, true) => TlsTrust::Insecure,
                (None, false) => {
                    return Err(
                        "TLS needs --ca <pem> (the CA or the gateway's certificate) or --insecure"
                            .into(),
                    );
                }
            };
            Some(TlsOptions {
                trust,
                server_name: c.server_name.clone().unwrap_or_else(|| host.to_owned()),
            })
        }
        _ => None,
    };
    Ok((addr, tls))
}

fn timers(c: &Common) -> Timers {
    Timers {
        transaction: Duration::from_secs(c.timeout.max(1)),
        ..Timers::default()
    }
}

/// The challenge policy the probe's first request met, as its challenge shows it: what the edge
/// offers a client of this kind (epid or not, this User-Agent) on this listener.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct PolicyMet {
    /// 401 or 407.
    status: u16,
    /// Schemes in the order offered.
    schemes: Vec<String>,
    /// Digest algorithms in the order offered.
    digest_algorithms: Vec<String>,
    /// The Digest realm, when Digest is offered.
    digest_realm: Option<String>,
}

impl PolicyMet {
    /// From the events of a sign-in: the first challenge.
    fn from_events(events: &[Event]) -> Option<PolicyMet> {
        let i = events
            .iter()
            .position(|e| matches!(e, Event::Offered { .. }))?;
        let Event::Offered { offers } = events.get(i)? else {
            return None;
        };
        let status = events
            .get(..i)?
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Received { status, .. } => Some(*status),
                _ => None,
            })
            .unwrap_or(0);
        let mut schemes: Vec<String> = Vec::new();
        for o in offers {
            if !schemes.iter().any(|s| s.eq_ignore_ascii_case(&o.scheme)) {
                schemes.push(o.scheme.clone());
            }
        }
        let digest: Vec<_> = offers
            .iter()
            .filter(|o| o.scheme.eq_ignore_ascii_case("Digest"))
            .collect();
        Some(PolicyMet {
            status,
            schemes,
            // RFC 7616: no algorithm parameter means MD5.
            digest_algorithms: digest
                .iter()
                .map(|o| o.algorithm.clone().unwrap_or_else(|| "MD5".into()))
                .collect(),
            digest_realm: digest.first().and_then(|o| o.realm.clone()),
        })
    }
}

impl std::fmt::Display for PolicyMet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with {}", self.status, self.schemes.join(", "))?;
        if !self.digest_algorithms.is_empty() {
            write!(
                f,
                "; Digest {} (realm {})",
                self.digest_algorithms.join(", "),
                self.digest_realm.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ProbeReport {
    ok: bool,
    server: String,
    local: Option<String>,
    /// What the first challenge offered: the policy a request of this kind meets.
    policy_met: Option<PolicyMet>,
    events: Vec<Event>,
    failure: Option<Failure>,
    failure_label: Option<&'static str>,
}

fn read_password(a: &ProbeArgs) -> Result<Option<Password>, String> {
    if let Some(var) = &a.password_env {
        return std::env::var(var)
            .map(|p| Some(Password::new(p)))
            .map_err(|_| format!("environment variable {var} is not set"));
    }
    if let Some(path) = &a.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return Ok(Some(Password::new(text.lines().next().unwrap_or(""))));
    }
    Ok(a.password.clone().map(Password::new))
}

async fn probe(a: ProbeArgs) -> ExitCode {
    let c = &a.common;
    let print_fail = |msg: String| {
        eprintln!("sagw-client probe: {msg}");
        ExitCode::from(2)
    };
    let (addr, tls) = match resolve(c).await {
        Ok(x) => x,
        Err(e) => return print_fail(e),
    };
    let password = match read_password(&a) {
        Ok(p) => p,
        Err(e) => return print_fail(e),
    };
    let allowed = schemes(&c.scheme);
    // Kerberos with a password: kinit into a private cache first.
    let mut _ccache_dir = None;
    let mut ccache = a.ccache.clone();
    if ccache.is_none()
        && allowed.contains(&AuthScheme::Kerberos)
        && let (Some(realm), Some(pw)) = (&c.krb_realm, &password)
    {
        let dir = match CcacheDir::new() {
            Ok(d) => d,
            Err(e) => return print_fail(e.to_string()),
        };
        match dir.kinit(&format!("{}@{realm}", a.user), pw) {
            Ok(cc) => ccache = Some(cc),
            Err(e) => {
                // Say it, and go on: the server may offer another scheme we allow.
                if !c.json {
                    println!("kinit failed, Kerberos will use the default cache: {e}");
                }
            }
        }
        _ccache_dir = Some(dir);
    }
    let epid = if a.epid == "none" {
        ""
    } else {
        a.epid.as_str()
    };
    let mut cfg = EndpointConfig::new(&a.user, &c.sip_domain, epid);
    if let Some(uri) = &a.sip_uri {
        cfg.aor = uri.clone();
    }
    if let Some(ua) = &a.user_agent {
        cfg.user_agent = ua.clone();
    }
    cfg.domain = c.domain.clone();
    cfg.password = password;
    cfg.ccache = ccache;
    cfg.schemes = allowed;
    cfg.version = c.protocol_version;
    cfg.mutual = c.mutual;

    let mut report = ProbeReport {
        ok: false,
        server: addr.to_string(),
        local: None,
        policy_met: None,
        events: Vec::new(),
        failure: None,
        failure_label: None,
    };
    let kind_shown = format!(
        "{}, User-Agent {}",
        if epid.is_empty() {
            "no epid".to_owned()
        } else {
            format!("epid {epid}")
        },
        cfg.user_agent
    );
    let result = run_probe(&a, cfg, addr, tls, &mut report).await;
    report.policy_met = PolicyMet::from_events(&report.events);
    if let Err(f) = result {
        report.failure_label = Some(f.label());
        report.failure = Some(f);
    } else {
        report.ok = true;
    }
    if c.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
    } else {
        println!(
            "probe {} over {} from {}",
            report.server,
            kind(c.transport).via(),
            report.local.as_deref().unwrap_or("-")
        );
        for e in &report.events {
            println!("{e}");
        }
        match &report.policy_met {
            Some(p) => println!("POLICY MET ({kind_shown}): {p}"),
            None => println!("POLICY MET ({kind_shown}): no challenge seen"),
        }
        match &report.failure {
            None => println!("RESULT: OK"),
            Some(f) => println!("RESULT: FAILED ({}): {f}", f.label()),
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run_probe(
    a: &ProbeArgs,
    cfg: EndpointConfig,
    addr: SocketAddr,
    tls: Option<TlsOptions>,
    report: &mut ProbeReport,
) -> Result<(), Failure> {
    let c = &a.common;
    let t = timers(c);
    let connector = match &tls {
        Some(o) => Some(tls_connector(o).map_err(|e| Failure::Transport(e.to_string()))?),
        None => None,
    };
    let name = tls
        .as_ref()
        .map(|o| o.server_name.clone())
        .unwrap_or_default();
    let mut conn = Connection::connect(
        addr,
        kind(c.transport),
        connector.as_ref().map(|k| (k, name.as_str())),
    )
    .await
    .map_err(|e| Failure::Transport(e.to_string()))?;
    report.local = Some(conn.local_addr().to_string());
    let mut ep = Endpoint::new(
        cfg,
        LocalAddr {
            transport: conn.kind().via(),
            addr: conn.local_addr().to_string(),
        },
    )
    .with_trace();
    let mut rng = OsRng::new().map_err(|e| Failure::Build(format!("no OS randomness: {e}")))?;
    let res = session::sign_in(&mut conn, &mut ep, &mut rng, &t).await;
    report.events.extend(ep.take_events());
    res?;
    let registrar = ep.config().registrar.clone();
    let mut follow = Vec::new();
    if let Some(target) = &a.message {
        follow.push((
            "MESSAGE",
            target.clone(),
            Some(("text/plain".to_owned(), b"sagw-client probe".to_vec())),
        ));
    }
    if a.options {
        follow.push(("OPTIONS", registrar, None));
    }
    for (method, target, body) in follow {
        let res = session::request(&mut conn, &mut ep, method, &target, body, &mut rng, &t).await;
        report.events.extend(ep.take_events());
        let done = res?;
        if !(200..300).contains(&done.status) {
            return Err(Failure::Status {
                status: done.status,
                reason: done.reason,
            });
        }
    }
    if a.listen > 0 {
        let res = session::serve(&mut conn, &mut ep, &mut rng, Duration::from_secs(a.listen)).await;
        report.events.extend(ep.take_events());
        res?;
    }
    Ok(())
}

async fn load_cmd(a: LoadArgs) -> ExitCode {
    let c = &a.common;
    let fail = |msg: String| {
        eprintln!("sagw-client load: {msg}");
        ExitCode::from(2)
    };
    let (addr, tls) = match resolve(c).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let allowed = schemes(&c.scheme);
    let password_pattern =
        std::env::var("SAGW_LOAD_PASSWORD_PATTERN").unwrap_or_else(|_| a.password_pattern.clone());
    let mut population = Population {
        user_pattern: a.user_pattern.clone(),
        password_pattern: Some(password_pattern),
        users: a.users,
        first_user: a.first_user,
        domain: c.domain.clone(),
        sip_domain: c.sip_domain.clone(),
        schemes: allowed.clone(),
        version: c.protocol_version,
        ccaches: a.ccache.iter().cloned().collect(),
    };
    // Kerberos with passwords: one kinit per distinct user before the clock starts.
    let _dir = if allowed.first() == Some(&AuthScheme::Kerberos)
        && population.ccaches.is_empty()
        && let Some(realm) = &c.krb_realm
    {
        let dir = match CcacheDir::new() {
            Ok(d) => d,
            Err(e) => return fail(e.to_string()),
        };
        let distinct = if a.users == 0 { a.endpoints } else { a.users };
        for i in 0..distinct.min(a.endpoints) {
            let cfg = population.config(i);
            let Some(pw) = &cfg.password else { continue };
            match dir.kinit(&format!("{}@{realm}", cfg.user), pw) {
                Ok(cc) => population.ccaches.push(cc),
                Err(e) => return fail(e.to_string()),
            }
        }
        Some(dir)
    } else {
        None
    };
    let cfg = LoadConfig {
        server: addr,
        transport: kind(c.transport),
        tls,
        population,
        endpoints: a.endpoints,
        concurrency: a.concurrency.max(1),
        messages: a.messages,
        message_target: a.message_target.clone(),
        duration: Duration::from_secs(a.duration.max(1)),
        rate: a.rate,
        message_rate: a.message_rate,
        connection_per_endpoint: a.connection_per_endpoint,
        timers: timers(c),
        progress: !a.no_progress && !c.json,
    };
    let summary = match load::run(cfg).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if c.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot encode the summary: {e}")),
        }
    } else {
        print!("{}", summary.render());
    }
    // A run with failures is a failed run, whatever succeeded beside them: scripts and CI read
    // the exit code, not the summary.
    if summary.failed() > 0 || summary.sign_ins.ok == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate { what } = &cli.command {
        return generate(what);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sagw-client: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Probe(a) => probe(a).await,
            Command::Load(a) => load_cmd(a).await,
            Command::Generate { what } => generate(&what),
        }
    })
}
