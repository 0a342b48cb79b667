//! The sagw gateway: the tokio driver around the sans-IO crates.
//!
//! * [`check`]: what `sagw check-config` checks beyond the file (keytab, state keys);
//! * [`cli`]: the command line (also the source of the man pages and completions);
//! * [`config`]: the TOML file (embedded default in config/default.toml) and its validation;
//! * [`driver`]: listeners (TCP, TLS) and connection tasks, the flow table, and the core thread
//!   that owns [`sagw_proxy::Edge`] and the UDP socket;
//! * [`tls`]: certificates (configured or generated) and rustls set-up;
//! * [`cpu`]: the core thread's CPU, claimed against other instances on the host;
//! * [`service`]: systemd readiness and the state directory;
//! * [`metrics`]: the Prometheus registry; [`admin`] (and [`admin_config`]): the admin HTTP API,
//!   `/healthz`, `/readyz` and the metrics page, served by [`http`]; [`per_ip`]: the per-source
//!   connection cap;
//! * [`proxy_protocol`]: the PROXY protocol header behind load balancers; [`peer_trust`]: servers
//!   trusted by their TLS certificate; [`inbound_config`]: their configuration;
//! * [`lifecycle`]: the seams between reload, drain, next-hop state and the control surfaces;
//!   [`reload`]: what a configuration reload changes live; [`signals`]: SIGHUP, SIGTERM, drain;
//! * [`logging`]: tracing set-up and redaction of SIP messages;
//! * [`auth_config`] and [`auth`]: the `[auth]` section and the stage that puts `sagw-auth`'s
//!   security core on every message to and from clients; [`users`]: the credentials file;
//!   [`directory_config`] and [`directory`]: SIP identities of domain accounts from LDAP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod admin_client;
pub mod admin_config;
mod audit;
pub mod auth;
#[allow(missing_docs)]
pub mod auth_config;
pub mod auth_jobs;
pub mod check;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod directory;
#[allow(missing_docs)]
pub mod directory_config;
pub mod domain;
pub mod domain_config;
pub mod driver;
mod file_mode;
pub mod hop_config;
pub mod hops;
pub mod http;
pub mod inbound_config;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod peer_trust;
pub mod per_ip;
mod pool;
pub mod proxy_protocol;
pub mod reload;
pub mod resolver;
pub mod service;
pub mod signals;
pub mod snapshot;
pub mod state;
pub mod state_config;
mod store_task;
pub mod thread_cpu;
pub mod tls;
pub mod tls_client;
pub mod users;

pub use config::{Config, ConfigError, Settings};
pub use driver::{
    AuthSeams, CoreExit, Running, StartError, start, start_with_auth, start_with_kerberos_backend,
    start_with_seams,
};
