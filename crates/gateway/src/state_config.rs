//! `[state]`: where the gateway keeps what must outlive a process or be shared by a pool
//! (docs/pools.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use sagw_state::redis_store::redact_url;

use crate::config::ConfigError;

/// `[state]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// `memory` (one gateway; saved on SIGTERM, restored at start) or `redis` (a pool,
    /// docs/pools.md).
    pub backend: String,
    /// Redis URLs (`redis://` or `rediss://` for TLS; `redis://:password@host:port` for AUTH).
    /// With `cluster = true`, any of the cluster's nodes.
    pub redis: Vec<String>,
    /// Redis Cluster instead of one server.
    pub cluster: bool,
    /// A file holding the Redis password (instead of the URL).
    pub password_file: String,
    /// This gateway's name in the pool (unique per gateway); empty: host name and SIP port.
    pub node_id: String,
    /// The pool key: 32 bytes that every gateway of a pool shares (created at first start when
    /// missing). Flow tokens, NTLM challenges, Digest nonces and sealed SAs are keyed by it.
    pub key_file: String,
    /// Memory backend: where SIGTERM saves the SAs and bindings (empty: nothing saved).
    pub snapshot: String,
    /// Redis: at most this many SAs fetched from the pool at once.
    pub max_claims_in_flight: usize,
    /// Redis: a command that takes longer fails (the store counts as down).
    pub command_timeout_ms: u64,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            backend: "memory".into(),
            redis: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            password_file: String::new(),
            node_id: String::new(),
            key_file: "sagw-data/pool.key".into(),
            // The embedded configuration sets one; a file that does not, saves nothing.
            snapshot: String::new(),
            max_claims_in_flight: 256,
            command_timeout_ms: 500,
        }
    }
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// One gateway; `snapshot` is written on SIGTERM and read at start.
    Memory {
        /// `state.snapshot`; `None`: nothing is saved.
        snapshot: Option<PathBuf>,
    },
    /// A pool sharing a Redis (or Valkey) server or cluster.
    Redis {
        /// `state.redis`.
        urls: Vec<String>,
        /// `state.cluster`.
        cluster: bool,
        /// `state.password_file`.
        password_file: Option<PathBuf>,
        /// `state.command_timeout_ms`.
        command_timeout: Duration,
        /// `state.max_claims_in_flight`.
        max_claims_in_flight: usize,
    },
}

/// `[state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// `state.backend` and what goes with it.
    pub backend: StateBackend,
    /// Empty: chosen at start (host name and SIP port).
    pub node_id: String,
    /// `state.key_file`.
    pub key_file: PathBuf,
}

impl StateSection {
    /// Checks the section.
    pub fn validate(&self) -> Result<StateSettings, ConfigError> {
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            key: format!("state.{field}"),
            message: why,
        };
        if self.key_file.trim().is_empty() {
            return Err(invalid("key_file", "must name a file".into()));
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(invalid(
                "node_id",
                "at most 64 letters, digits and - _ . :".into(),
            ));
        }
        let backend = match self.backend.as_str() {
            "memory" => StateBackend::Memory {
                snapshot: (!self.snapshot.trim().is_empty()).then(|| PathBuf::from(&self.snapshot)),
            },
            "redis" => {
                if self.redis.is_empty() {
                    return Err(invalid("redis", "needs at least one URL".into()));
                }
                for u in &self.redis {
                    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                        return Err(invalid(
                            "redis",
                            format!("`{}`: expected redis:// or rediss://", redact_url(u)),
                        ));
                    }
                }
                if self.max_claims_in_flight == 0 {
                    return Err(invalid("max_claims_in_flight", "must be at least 1".into()));
                }
                if self.command_timeout_ms == 0 {
                    return Err(invalid("command_timeout_ms", "must be at least 1".into()));
                }
                StateBackend::Redis {
                    urls: self.redis.clone(),
                    cluster: self.cluster,
                    password_file: (!self.password_file.trim().is_empty())
                        .then(|| PathBuf::from(&self.password_file)),
                    command_timeout: Duration::from_millis(self.command_timeout_ms),
                    max_claims_in_flight: self.max_claims_in_flight,
                }
            }
            other => {
                return Err(invalid(
                    "backend",
                    format!("`{other}`: expected \"memory\" or \"redis\""),
                ));
            }
        };
        Ok(StateSettings {
            backend,
            node_id: self.node_id.clone(),
            key_file: PathBuf::from(&self.key_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_one_gateway_and_the_embedded_file_saves_a_snapshot() {
        let s = StateSection::default().validate().expect("valid");
        assert_eq!(s.backend, StateBackend::Memory { snapshot: None });
        let embedded = crate::config::Config::embedded().expect("embedded");
        assert_eq!(
            embedded.state.validate().expect("valid").backend,
            StateBackend::Memory {
                snapshot: Some("sagw-data/state.snapshot".into())
            }
        );
    }

    #[test]
    fn redis_urls_are_checked_and_passwords_never_echoed() {
        let s = StateSection {
            backend: "redis".into(),
            redis: vec!["http://:hunter2@h:6379".into()],
            ..StateSection::default()
        };
        let e = s.validate().expect_err("not a redis url").to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            StateSection {
                backend: "etcd".into(),
                ..StateSection::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            StateSection {
                node_id: "a b".into(),
                ..StateSection::default()
            }
            .validate()
            .is_err()
        );
    }
}
