//! `sagw`: the SIP security-association gateway binary.

use std::process::ExitCode;

use clap::Parser;
use sagw_gateway::cli::{AdminAction, Cli, Command, UserAction};
use sagw_gateway::config::{Config, LogFormat};
use sagw_gateway::reload::ConfigSource;
use sagw_gateway::signals::{self, Ended};
use sagw_gateway::{driver, logging, service};

/// mimalloc rather than glibc malloc: the proxy allocates and frees small buffers for every
/// message, and glibc kept returning the top of its heap to the kernel and faulting it back in
/// (about one page fault per REGISTER in the sipp benchmark, ~10 % of the gateway's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The request an admin action makes: method, path, body, and whether it needs the token.
fn admin_request(action: &AdminAction) -> (&'static str, String, Option<String>, bool) {
    use sagw_gateway::admin_client::segment;
    match action {
        AdminAction::Sas => ("GET", "/admin/sas".into(), None, true),
        AdminAction::RevokeSa { opaque } => (
            "POST",
            format!("/admin/sas/{}/revoke", segment(opaque)),
            None,
            true,
        ),
        AdminAction::RevokeUser { user } => (
            "POST",
            format!("/admin/users/{}/revoke", segment(user)),
            None,
            true,
        ),
        AdminAction::Registrations { aor } => (
            "GET",
            format!("/admin/registrations/{}", segment(aor)),
            None,
            true,
        ),
        AdminAction::Hops => ("GET", "/admin/hops".into(), None, true),
        AdminAction::LogLevel { level: None } => ("GET", "/admin/log-level".into(), None, true),
        AdminAction::LogLevel { level: Some(l) } => {
            ("PUT", "/admin/log-level".into(), Some(l.clone()), true)
        }
        AdminAction::Reload => ("POST", "/admin/reload".into(), None, true),
        AdminAction::Drain => ("POST", "/admin/drain".into(), None, true),
        AdminAction::Health => ("GET", "/healthz".into(), None, false),
        AdminAction::Ready => ("GET", "/readyz".into(), None, false),
        // Handled locally.
        AdminAction::NewToken => ("", String::new(), None, false),
    }
}

fn admin_command(
    action: &AdminAction,
    cfg: &Config,
    addr: Option<std::net::SocketAddr>,
    token_file: Option<&std::path::Path>,
) -> ExitCode {
    let admin = match cfg.admin.validate() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sagw: invalid [admin] configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let token_path = token_file.map_or_else(|| admin.token_file.clone(), ToOwned::to_owned);
    if matches!(action, AdminAction::NewToken) {
        return match sagw_gateway::admin::new_token(&token_path) {
            Ok(()) => {
                println!(
                    "admin token written to {} (mode 0600)",
                    token_path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sagw: cannot write the admin token: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(listen) = addr.or(admin.listen) else {
        eprintln!("sagw: the admin API is off (admin.listen is empty); give --addr to reach one");
        return ExitCode::from(2);
    };
    let (method, path, body, needs_token) = admin_request(action);
    let token = if needs_token {
        match sagw_gateway::admin::read_token_text(&token_path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("sagw: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let target = sagw_gateway::admin_client::connect_addr(listen);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sagw: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = rt.block_on(sagw_gateway::admin_client::call(
        target,
        token.as_deref(),
        method,
        &path,
        body,
    ));
    match answer {
        Ok((status, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            if (200..300).contains(&status) {
                println!("{pretty}");
                ExitCode::SUCCESS
            } else {
                eprintln!("sagw: {method} {path}: HTTP {status}\n{pretty}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sagw: {e}");
            ExitCode::FAILURE
        }
    }
}

fn user_command(action: &UserAction, cfg: &Config) -> ExitCode {
    let mut section = cfg.auth.clone();
    // The file is managed even while authentication is switched off.
    section.enabled = true;
    let auth = match section.validate() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::from(2),
        Err(e) => {
            eprintln!("sagw: invalid [auth] configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        UserAction::Add { name, sip } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("sagw: cannot read the password from standard input");
                return ExitCode::from(2);
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("sagw: empty password (give it on the first line of standard input)");
                return ExitCode::from(2);
            }
            sagw_gateway::users::add(&auth, name, password, sip.as_deref()).map(|()| {
                let filed = name.to_lowercase();
                let mut text = format!("user {filed} saved in {}", auth.credentials.display());
                if filed != *name {
                    text.push_str(&format!(
                        " (names are filed lower case: Digest clients sign in as {filed})"
                    ));
                }
                text
            })
        }
        UserAction::Remove { name } => sagw_gateway::users::remove(&auth, name).map(|found| {
            if found {
                format!(
                    "user {name} removed (a running gateway ends its security associations at its next reload, within 5 s)"
                )
            } else {
                format!("no user {name}")
            }
        }),
        UserAction::List => sagw_gateway::users::list(&auth).map(|v| v.join("\n")),
    };
    match result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sagw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// check-config's look at the files the gateway reads at start: the TLS private keys, the
/// credentials file, the Kerberos keytab, the keys and snapshot of `[state]`, the Digest nonce
/// key; and winbind for `[auth.domain]`.
fn check_files(
    settings: &sagw_gateway::Settings,
    offline: bool,
) -> Result<Vec<String>, sagw_gateway::check::CheckError> {
    use sagw_gateway::check;
    let mut lines = check::state(&settings.state)?;
    lines.extend(check::tls_keys(
        &settings.cert,
        &settings.hops.outbound_tls,
    )?);
    lines.extend(check::tls_files(settings)?);
    if let Some(a) = &settings.auth {
        lines.push(check::credentials(a)?);
        lines.extend(check::kerberos(a)?);
        if !offline {
            lines.extend(check::directory(a)?);
            lines.extend(check::domain(a)?);
        }
        // A pool derives its nonce key from the pool key; only a gateway alone has the file.
        if matches!(
            settings.state.backend,
            sagw_gateway::state_config::StateBackend::Memory { .. }
        ) && a.digest
        {
            lines.push(check::nonce_key(a)?);
        }
    }
    Ok(lines)
}

/// The file and the overrides, as a reload reads them again.
fn config_source(cli: &Cli) -> ConfigSource {
    ConfigSource {
        path: cli.config.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format.clone(),
    }
}

/// [`config_source`] for the reloads of a running gateway: a filter that came from `RUST_LOG` at
/// start keeps applying, as `--log-level` does (the documented order: `--log-level`, `RUST_LOG`,
/// `log.level`). Before, the first reload put the file's `log.level` in its place.
fn reload_source(cli: &Cli, level: &str, from: logging::LevelSource) -> ConfigSource {
    let mut source = config_source(cli);
    if from == logging::LevelSource::Environment {
        source.log_level = Some(logging::installed_filter(level));
    }
    source
}

fn load(cli: &Cli) -> Result<Config, String> {
    config_source(cli).load_config().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Generate { what }) = &cli.command {
        return match sagw_gateway::cli::generate(
            what,
            sagw_gateway::cli::command(),
            &mut std::io::stdout(),
        ) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sagw generate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let source = cli.config.as_ref().map_or_else(
        || "embedded default".to_owned(),
        |p| p.display().to_string(),
    );
    let admin = match &cli.command {
        Some(Command::Admin {
            addr,
            token_file,
            action,
        }) => Some((action.clone(), *addr, token_file.clone())),
        Some(Command::Reload { addr, token_file }) => {
            Some((AdminAction::Reload, *addr, token_file.clone()))
        }
        _ => None,
    };
    if let Some((action, addr, token_file)) = admin {
        return match load(&cli) {
            Ok(cfg) => admin_command(&action, &cfg, addr, token_file.as_deref()),
            Err(e) => {
                eprintln!("sagw: invalid configuration ({source}): {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::User { action }) = &cli.command {
        return match load(&cli) {
            Ok(cfg) => user_command(action, &cfg),
            Err(e) => {
                eprintln!("sagw: invalid configuration ({source}): {e}");
                ExitCode::from(2)
            }
        };
    }
    let mut settings = match load(&cli).and_then(|c| c.validate().map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sagw: invalid configuration ({source}): {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig { offline }) = cli.command {
        for w in settings.warnings() {
            eprintln!("sagw: warning: {w}");
        }
        if settings.admin.listen.is_some()
            && let Err(e) = sagw_gateway::admin::read_token(&settings.admin.token_file)
        {
            eprintln!("sagw: note: the admin API will stay off: {e}");
        }
        if let Some(dir) = service::state_directory() {
            println!(
                "data: relative data paths under {} ($STATE_DIRECTORY)",
                dir.display()
            );
        }
        if let Some(p) = &settings.peer_trust
            && let Err(e) = sagw_gateway::peer_trust::PeerTrust::load(&p.ca, &p.names)
        {
            eprintln!("sagw: invalid configuration ({source}): tls.peer_ca: {e}");
            return ExitCode::from(2);
        }
        if let Some(a) = &settings.auth {
            for d in &a.deprecated {
                eprintln!("sagw: warning ({source}): {d}");
            }
            match sagw_gateway::auth::check_policies(a, &settings.listeners) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                }
                Err(e) => {
                    eprintln!("sagw: invalid configuration ({source}): {e}");
                    return ExitCode::from(2);
                }
            }
        }
        // After the policies: under kerberos_without_keytab = "refuse" they already named the
        // policy that cannot be served.
        let files = check_files(&settings, offline);
        if let Err(e) = &files {
            eprintln!("sagw: invalid configuration ({source}): {e}");
            return ExitCode::from(2);
        }
        for l in files.unwrap_or_default() {
            println!("{l}");
        }
        if let Some(a) = &settings.auth {
            for w in sagw_gateway::check::digest_gaps(a) {
                eprintln!("sagw: warning: {w}");
            }
        }
        println!("configuration OK ({source})");
        return ExitCode::SUCCESS;
    }
    // The file's log.level, unless RUST_LOG or --log-level says otherwise.
    let env = std::env::var("RUST_LOG").ok();
    let (level, from) = logging::effective_level(
        cli.log_level.as_deref(),
        env.as_deref(),
        &settings.log_level,
    );
    logging::init(&level, settings.log_format);
    if from == logging::LevelSource::Environment {
        // What is in force, as a reload (and the admin API) compares against: `--log-level` is
        // in the settings already, through the configuration source.
        settings.log_level = logging::installed_filter(&level);
    }
    tracing::debug!(filter = %level, source = ?from, json = settings.log_format == LogFormat::Json, "logging");
    if let Some(dir) = service::state_directory() {
        tracing::info!(dir = %dir.display(), "relative data paths under $STATE_DIRECTORY");
    }
    let cpus = sagw_gateway::cpu::usable_cpus();
    let workers = settings.workers.threads(cpus);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sagw: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        tracing::info!(config = %source, workers, cpus, "starting");
        let handlers = signals::Signals::install();
        let running = match driver::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start failed");
                return ExitCode::FAILURE;
            }
        };
        // SIGHUP reloads from here (one sent while it started waits until now); SIGTERM drains,
        // saves the state and stops. READY=1 goes out from signals::run.
        running.set_config_source(reload_source(&cli, &level, from));
        match signals::run(running, handlers).await {
            Ended::Signalled => ExitCode::SUCCESS,
            Ended::CoreFailed => ExitCode::FAILURE,
        }
    })
}
