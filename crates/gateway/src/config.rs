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
    /// TOML syntax error, unknown key or wrong type (the message names the key and line).
    #[error("{0}")]
    Syntax(String),
    /// A value that parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `listen.tcp`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
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
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
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
}
