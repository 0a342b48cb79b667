//! The command line of `sagw`. It lives in the library, not in main.rs, so that the man pages and
//! shell completions (`sagw generate …`, packaging/) are generated from the very definition the
//! binary parses: a subcommand added here appears in both without a second list to keep.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

/// `sagw [--config FILE] [COMMAND]`.
#[derive(Parser, Debug)]
#[command(
    name = "sagw",
    version,
    about = "SIP edge proxy with MS-SIPAE / Digest security associations"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it the embedded default configuration is used.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Override log.level and RUST_LOG (e.g. warn, info, debug, trace, or a filter like
    /// "sagw=debug"). Precedence: --log-level, then RUST_LOG, then log.level.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Override log.format.
    #[arg(long, global = true, value_parser = ["human", "json"])]
    pub log_format: Option<String>,
    /// What to do; `run` when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and exit (0 when valid).
    CheckConfig {
        /// Leave out what asks another service (the domain through winbind, the directory over
        /// LDAP): what a reload does not depend on. The service's `systemctl reload` uses it, so
        /// that a domain controller's hiccup does not keep a renewed certificate out.
        #[arg(long)]
        offline: bool,
    },
    /// Manage the credentials file of `[auth] credentials` (hashes only, mode 600).
    User {
        /// What to do with the file.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Call the admin API of a running gateway (`[admin]` of the configuration: its listen
    /// address and token file).
    Admin {
        /// The API's address, instead of `admin.listen`.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// The token's file, instead of `admin.token_file`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// What to ask.
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Reload the running gateway's configuration (`sagw admin reload`).
    Reload {
        /// The API's address, instead of `admin.listen`.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// The token's file, instead of `admin.token_file`.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Write the man pages or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[command(subcommand)]
        what: Generate,
    },
}

/// `sagw user …`.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add or replace a user; the password is read from the first line of standard input.
    Add {
        /// Account name (as clients send it in NTLM and Digest).
        name: String,
        /// SIP identity, when it is not sip:NAME@DOMAIN (DOMAIN: auth.sip_domain).
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

/// `sagw admin …`.
#[derive(Subcommand, Debug, Clone)]
pub enum AdminAction {
    /// List the security associations.
    Sas,
    /// End one security association now (its opaque, 8 hex digits, from `sas`).
    RevokeSa {
        /// The SA's opaque.
        opaque: String,
    },
    /// End every security association of a user (account name, or SIP identity `sip:…`).
    RevokeUser {
        /// Account name or SIP identity.
        user: String,
    },
    /// The registrar's bindings of an address-of-record.
    Registrations {
        /// e.g. sip:alice@example.com
        aor: String,
    },
    /// The next hops' state.
    Hops,
    /// Show the log filter, or set it (a level or a filter such as "sagw=debug,info").
    LogLevel {
        /// The new level or filter.
        level: Option<String>,
    },
    /// Re-read the configuration file.
    Reload,
    /// Stop taking new work (readiness turns false; transactions in progress finish).
    Drain,
    /// Liveness (`/healthz`, no token needed).
    Health,
    /// Readiness (`/readyz`, no token needed).
    Ready,
    /// Write a new random token to `admin.token_file` (mode 0600; an existing file is kept).
    NewToken,
}

/// `sagw generate …`.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// One man page per command (sagw.1, sagw-user.1, sagw-user-add.1, …) into DIR.
    Man {
        /// Output directory (created when missing).
        dir: PathBuf,
    },
    /// The completion script for SHELL, on standard output or into --dir.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// Write the file into this directory instead of standard output.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The whole `sagw` command, as parsed by the binary.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Carries out `generate` for `cmd` (named `bin`): the written files, or nothing when the
/// completion script went to `out`.
pub fn generate(
    what: &Generate,
    cmd: clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<Vec<PathBuf>> {
    match what {
        Generate::Man { dir } => man_pages(cmd, dir),
        Generate::Completions { shell, dir } => {
            let mut cmd = cmd;
            let bin = cmd.get_name().to_owned();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    Ok(vec![clap_complete::generate_to(
                        *shell, &mut cmd, bin, dir,
                    )?])
                }
                None => {
                    clap_complete::generate(*shell, &mut cmd, bin, out);
                    Ok(Vec::new())
                }
            }
        }
    }
}

/// One page per visible command; `generate` itself is hidden and gets none.
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = generate(
            &Generate::Man {
                dir: dir.path().join("man1"),
            },
            command(),
            &mut std::io::sink(),
        )
        .expect("man pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "sagw.1",
            "sagw-run.1",
            "sagw-check-config.1",
            "sagw-user.1",
            "sagw-user-add.1",
            "sagw-user-remove.1",
            "sagw-user-list.1",
        ] {
            assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "the hidden generator has no page: {names:?}"
        );
        let main = std::fs::read_to_string(dir.path().join("man1/sagw.1")).expect("sagw.1");
        assert!(
            main.starts_with(".ie") || main.contains(".TH sagw 1"),
            "{main}"
        );
        for needle in ["check\\-config", "user", "\\-\\-config"] {
            assert!(main.contains(needle), "sagw.1 lacks {needle}:\n{main}");
        }
        let add = std::fs::read_to_string(dir.path().join("man1/sagw-user-add.1")).expect("page");
        assert!(add.contains("standard input"), "{add}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            let files = generate(
                &Generate::Completions { shell, dir: None },
                command(),
                &mut out,
            )
            .expect("completions");
            assert!(files.is_empty());
            let text = String::from_utf8(out).expect("utf-8");
            // fish names long options `-l config`, bash and zsh `--config`.
            for needle in ["check-config", "user", "config", "add", "remove"] {
                assert!(text.contains(needle), "{shell} script lacks {needle}");
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(
            &Generate::Completions {
                shell: clap_complete::Shell::Bash,
                dir: Some(dir.path().to_owned()),
            },
            command(),
            &mut std::io::sink(),
        )
        .expect("completion file");
        assert_eq!(files, vec![dir.path().join("sagw.bash")]);
    }
}
