//! `[state]`: where the gateway keeps what must outlive a process or be shared by a pool
//! (docs/pools.md).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[state]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// `memory`: one gateway; its SAs and bindings are saved on SIGTERM and restored at start.
    /// (`redis`, a pool sharing them, is designed in docs/pools.md and not available yet.)
    pub backend: String,
    /// This gateway's name (unique per gateway of a future pool); empty: host name and SIP port.
    pub node_id: String,
    /// The pool key: 32 bytes (created at first start when missing). Flow tokens, NTLM
    /// challenges and sealed snapshots are keyed by it, so they outlive a restart.
    pub key_file: String,
    /// Where SIGTERM saves the SAs and bindings (empty: nothing saved).
    pub snapshot: String,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            backend: "memory".into(),
            node_id: String::new(),
            key_file: "sagw-data/pool.key".into(),
            // The embedded configuration sets one; a file that does not, saves nothing.
            snapshot: String::new(),
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
                return Err(invalid(
                    "backend",
                    "\"redis\" (a pool of gateways, docs/pools.md) is not available in this \
                     version: use \"memory\""
                        .into(),
                ));
            }
            other => {
                return Err(invalid(
                    "backend",
                    format!("`{other}`: expected \"memory\""),
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
    fn only_the_memory_backend_is_taken_and_node_ids_are_checked() {
        let e = StateSection {
            backend: "redis".into(),
            ..StateSection::default()
        }
        .validate()
        .expect_err("not available")
        .to_string();
        assert!(e.contains("not available"), "{e}");
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
