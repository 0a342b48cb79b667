//! `sagw`: the SIP security-association gateway binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sagw_gateway::config::{Config, LogFormat};
use sagw_gateway::{driver, logging};

/// mimalloc rather than glibc malloc: the proxy allocates and frees small buffers for every
/// message, and glibc kept returning the top of its heap to the kernel and faulting it back in
/// (about one page fault per REGISTER in the sipp benchmark, ~10 % of the gateway's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "sagw",
    version,
    about = "SIP edge proxy with MS-SIPAE / Digest security associations"
)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded default configuration is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Override log.level (e.g. warn, info, debug, trace, or a filter like "sagw=debug").
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Override log.format.
    #[arg(long, global = true, value_parser = ["human", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and exit (0 when valid).
    CheckConfig,
    /// Manage the credentials file of `[auth] credentials` (hashes only, mode 600).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Add or replace a user; the password is read from the first line of standard input.
    Add {
        /// Account name (as clients send it in NTLM and Digest).
        name: String,
        /// SIP identity, when it is not sip:<name>@<auth.sip_domain>.
        #[arg(long)]
        sip: Option<String>,
    },
    /// Remove a user.
    Remove {
        /// Account name.
        name: String,
    },
    /// List the users.
    List,
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

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
    .map_err(|e| e.to_string())?;
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
        for w in settings.address_trust_beside_names() {
            eprintln!("sagw: warning: {w}");
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
        println!("configuration OK ({source})");
        return ExitCode::SUCCESS;
    }
    logging::init(&settings.log_level, settings.log_format);
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
        let running = match driver::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start failed");
                return ExitCode::FAILURE;
            }
        };
        let exit = tokio::select! {
            () = wait_for_signal() => ExitCode::SUCCESS,
            _ = running.stopped() => ExitCode::FAILURE,
        };
        tracing::info!("shutting down");
        running.shutdown(Duration::from_secs(5)).await;
        tracing::info!("stopped");
        exit
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
