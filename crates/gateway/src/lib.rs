//! The sagw gateway: the tokio driver around the sans-IO crates.
//!
//! * [`config`]: the TOML file (embedded default in config/default.toml) and its validation;
//! * [`driver`]: listeners (TCP, TLS) and connection tasks, the flow table, and the core thread
//!   that owns [`sagw_proxy::Edge`] and the UDP socket;
//! * [`tls`]: certificates (configured or generated) and rustls set-up;
//! * [`metrics`]: Prometheus text endpoint; [`per_ip`]: the per-source connection cap;
//! * [`lifecycle`]: the seams between reload, drain, next-hop state and the control surfaces;
//! * [`logging`]: tracing set-up and redaction of SIP messages;
//! * [`auth_config`] and [`auth`]: the `[auth]` section and the stage that puts `sagw-auth`'s
//!   security core on every message to and from clients; [`users`]: the credentials file.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
#[allow(missing_docs)]
pub mod auth_config;
pub mod config;
pub mod driver;
pub mod hop_config;
pub mod hops;
pub mod kerberos_jobs;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod per_ip;
mod pool;
pub mod resolver;
pub mod snapshot;
pub mod state;
pub mod state_config;
mod store_task;
pub mod tls;
pub mod tls_client;
pub mod users;

pub use config::{Config, ConfigError, Settings};
pub use driver::{
    CoreExit, Running, StartError, start, start_with_auth, start_with_kerberos_backend,
};
