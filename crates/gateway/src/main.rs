//! `sagw`: the SIP security-association gateway binary.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sagw_gateway::cli::{Cli, Command, UserAction};
use sagw_gateway::config::{Config, LogFormat};
use sagw_gateway::{driver, logging, service};

/// mimalloc rather than glibc malloc: the proxy allocates and frees small buffers for every
/// message, and glibc kept returning the top of its heap to the kernel and faulting it back in
/// (about one page fault per REGISTER in the sipp benchmark, ~10 % of the gateway's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            sagw_gateway::users::add(&auth, name, password, sip.as_deref())
                .map(|()| format!("user {name} saved in {}", auth.credentials.display()))
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

/// check-config's look at the files the gateway reads at start: the Kerberos keytab, the keys
/// and snapshot of `[state]`, the Digest nonce key.
fn check_files(
    settings: &sagw_gateway::Settings,
) -> Result<Vec<String>, sagw_gateway::check::CheckError> {
    use sagw_gateway::check;
    let mut lines = check::state(&settings.state)?;
    if let Some(a) = &settings.auth {
        lines.extend(check::kerberos(a)?);
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

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
    .map_err(|e| e.to_string())?;
    // Under systemd (StateDirectory=) the working directory is `/`: relative data paths go under
    // the state directory instead (docs/deployment.md).
    if let Some(dir) = service::state_directory() {
        service::place_data_under(&mut cfg, &dir);
    }
    if let Some(l) = &cli.log_level {
        cfg.log.level = l.clone();
    }
    if let Some(f) = &cli.log_format {
        cfg.log.format = f.clone();
    }
    Ok(cfg)
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
    if let Some(Command::User { action }) = &cli.command {
        return match load(&cli) {
            Ok(cfg) => user_command(action, &cfg),
            Err(e) => {
                eprintln!("sagw: invalid configuration ({source}): {e}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match load(&cli).and_then(|c| c.validate().map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sagw: invalid configuration ({source}): {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        for w in settings.spoofable_trust() {
            eprintln!("sagw: warning: {w}");
        }
        if let Some(dir) = service::state_directory() {
            println!(
                "data: relative data paths under {} ($STATE_DIRECTORY)",
                dir.display()
            );
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
        let files = check_files(&settings);
        if let Err(e) = &files {
            eprintln!("sagw: invalid configuration ({source}): {e}");
            return ExitCode::from(2);
        }
        for l in files.unwrap_or_default() {
            println!("{l}");
        }
        println!("configuration OK ({source})");
        return ExitCode::SUCCESS;
    }
    logging::init(&settings.log_level, settings.log_format);
    if let Some(dir) = service::state_directory() {
        tracing::info!(dir = %dir.display(), "relative data paths under $STATE_DIRECTORY");
    }
    if settings.log_format == LogFormat::Json {
        tracing::debug!("json logs");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
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
        tracing::info!(config = %source, "starting");
        // Handlers first: a SIGTERM the moment READY=1 is out must stop the gateway cleanly,
        // not kill it with the default action.
        let stop_signal = wait_for_signal();
        let running = match driver::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start failed");
                return ExitCode::FAILURE;
            }
        };
        service::notify_ready("listening");
        let exit = tokio::select! {
            () = stop_signal => ExitCode::SUCCESS,
            _ = running.stopped() => ExitCode::FAILURE,
        };
        tracing::info!("shutting down");
        service::notify_stopping();
        running.shutdown(Duration::from_secs(5)).await;
        tracing::info!("stopped");
        exit
    })
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
