//! The TOML configuration: schema (serde, unknown keys rejected), defaults (config/default.toml,
//! embedded) and validation into typed [`Settings`] with errors that name the key.
//!
//! Here: [`Config`], the file section by section, how it is read, and [`ConfigError`]. `sections`
//! holds the sections no other module owns, as written and with the defaults of the keys a file
//! leaves out; `settings` the [`Settings`] validation yields; `validate` the checks from the one
//! to the other. The other sections, and some keys of these, live beside what they configure
//! (`auth_config`, `state_config`, `admin_config`, `hop_config`, `inbound_config`). The items are
//! re-exported here, where the rest of the gateway names them.

mod sections;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::cpu::{CoreCpu, Workers};
pub use sections::{
    ExtraListener, LimitsSection, ListenSection, LogSection, MetricsSection, ProxySection,
    RegistrarSection, TimersSection, TlsSection,
};
pub use settings::{CertSource, LogFormat, Settings, SpoofableTrust};

/// The embedded default configuration (config/default.toml).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type: where, and what, never the text of the file
    /// (this error is logged, answered by the admin API and printed at start, and the line may
    /// hold a secret such as a Redis URL with its password).
    #[error("TOML error{}: {message}", at_line(*.at))]
    Syntax {
        /// Line and column (from 1) of the offending text, when the parser knows it.
        at: Option<(usize, usize)>,
        /// What is wrong, with any value quoted from the file left out.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `listen.tcp`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn at_line(at: Option<(usize, usize)>) -> String {
    at.map(|(line, column)| format!(" at line {line}, column {column}"))
        .unwrap_or_default()
}

impl ConfigError {
    /// From toml's error, keeping only its message (its `Display` quotes the source line).
    fn syntax(e: &toml::de::Error, text: &str) -> ConfigError {
        ConfigError::Syntax {
            at: e.span().map(|span| line_and_column(text, span.start)),
            message: without_values(e.message()),
        }
    }
}

/// Line and column (from 1, the column in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// serde's messages quote the value they could not take (`invalid type: string "redis://:pw@h",
/// expected a sequence`; `unknown variant `x``): the kind stays, the value goes.
fn without_values(message: &str) -> String {
    // (what precedes the value, the quote that closes it, whether `\` escapes inside it).
    const QUOTED: [(&str, char, bool); 2] = [("string \"", '"', true), ("variant `", '`', false)];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, prefix, close, escapes)) = QUOTED
        .iter()
        .filter_map(|&(p, c, e)| rest.find(p).map(|at| (at, p, c, e)))
        .min_by_key(|&(at, ..)| at)
    {
        // The word before the quote ("string", "variant") stays.
        out.push_str(&rest[..at + prefix.len() - 2]);
        let value = &rest[at + prefix.len()..];
        let mut chars = value.char_indices();
        let mut end = value.len();
        while let Some((i, c)) = chars.next() {
            if escapes && c == '\\' {
                chars.next();
            } else if c == close {
                end = i + c.len_utf8();
                break;
            }
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `log.level`: a level or a tracing filter. Checked by [`Config::validate`], and by a
/// configuration source before it overrides the level (`--log-level`, `RUST_LOG`).
pub(crate) fn check_log_level(level: &str) -> Result<(), ConfigError> {
    match tracing_subscriber::EnvFilter::try_new(level) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(
            "log.level",
            format!("`{level}` is not a level (trace, debug, info, warn, error) or filter"),
        )),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[log]`
    pub log: LogSection,
    /// `[listen]`
    pub listen: ListenSection,
    /// `[tls]`
    pub tls: TlsSection,
    /// `[proxy]`
    pub proxy: ProxySection,
    /// `[registrar]`
    pub registrar: RegistrarSection,
    /// `[timers]`
    pub timers: TimersSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
    /// `[auth]`
    pub auth: crate::auth_config::AuthSection,
    /// `[state]`
    pub state: crate::state_config::StateSection,
    /// `[admin]`
    pub admin: crate::admin_config::AdminSection,
    /// `[dns]`
    pub dns: crate::hop_config::DnsSection,
}

impl Config {
    /// Parse TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::syntax(&e, text))
    }

    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use sagw_proxy::Mode;

    use super::*;

    #[test]
    fn embedded_default_equals_the_built_in_defaults() {
        let c = Config::embedded().unwrap();
        // Except for the challenge policies (docs/configuration.md): a file gets the policies and
        // client rules it writes, and the top-level set that was the default before there were
        // policies, so nobody's file starts offering a scheme its operator did not write.
        let mut d = Config::default();
        assert_eq!(d.auth.schemes, ["ntlm", "digest"]);
        assert_eq!(d.auth.kerberos_without_keytab, "refuse");
        assert!(d.auth.policy.is_empty() && d.auth.client.is_empty());
        d.auth.schemes = vec!["digest".into()];
        d.auth.kerberos_without_keytab = "skip".into();
        d.auth.policy = c.auth.policy.clone();
        d.auth.client = c.auth.client.clone();
        // And the snapshot: a file that names none saves nothing (tests, and operators who
        // want restarts to sign everyone out); the embedded configuration saves one.
        assert!(d.state.snapshot.is_empty());
        d.state.snapshot = "sagw-data/state.snapshot".into();
        assert_eq!(c, d);
        assert_eq!(c.auth.client.len(), 2);
        let s = c.validate().unwrap();
        let a = s.auth.as_ref().expect("auth on");
        let names: Vec<&str> = a.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "md5-only", "mssipae"]);
        assert!(
            a.ntlm && a.kerberos && a.digest,
            "the union of the policies"
        );
        let listeners: Vec<&str> = s.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(listeners, ["udp", "tcp", "tls"]);
        assert_eq!(s.tcp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.tls, Some("0.0.0.0:5061".parse().unwrap()));
        assert_eq!(s.udp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(s.mode, Mode::Registrar);
        assert_eq!(s.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    /// A file's errors are logged, answered by the admin API and printed at start: they name the
    /// line and column, never the text on it (a Redis URL carries its password).
    #[test]
    fn a_file_error_names_the_line_and_never_shows_its_text() {
        for (text, line) in [
            // A string where a list belongs (a type error, with the value in serde's message).
            (
                "[state]\nbackend = \"redis\"\nredis = \"redis://:hunter2@h:6379\"\n",
                3,
            ),
            // Not TOML on the line of the secret.
            ("[state]\nredis = [\"redis://:hunter2@h:6379\" x]\n", 2),
            // A string where a number belongs.
            ("[limits]\n\nmax_message_bytes = \"hunter2\"\n", 3),
        ] {
            let e = Config::parse(text).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
            assert!(shown.contains(&format!("line {line}")), "{shown}");
        }
        assert_eq!(
            without_values(r#"invalid type: string "a\"b", expected a sequence"#),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            without_values("unknown variant `x`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
        assert_eq!(line_and_column("a\nbé = 1", 6), (2, 4));
    }
}
