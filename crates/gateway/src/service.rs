//! Running under a service manager (packaging/systemd/sagw.service): the readiness notification,
//! and where relative data paths go.
//!
//! systemd starts a service in `/`, where `sagw-data/…` (the defaults of config/default.toml) is
//! neither writable nor the place an operator looks. With `StateDirectory=sagw` it creates
//! `/var/lib/sagw` for the service user and says so in `$STATE_DIRECTORY`: every relative data path
//! is then taken under it (see [`place_data_under`]). Without that variable nothing changes.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The variable systemd sets for `StateDirectory=` (colon-separated when several are listed).
pub const STATE_DIRECTORY: &str = "STATE_DIRECTORY";

/// The first directory of `$STATE_DIRECTORY`, when it is set and absolute.
pub fn state_directory() -> Option<PathBuf> {
    state_directory_from(std::env::var_os(STATE_DIRECTORY)?.to_str()?)
}

fn state_directory_from(value: &str) -> Option<PathBuf> {
    let first = PathBuf::from(value.split(':').next()?);
    first.is_absolute().then_some(first)
}

/// The configuration keys that name files the gateway writes or keeps (its data), as opposed to
/// files the operator provides (certificates, keytab, CA): those stay as written.
pub const DATA_PATH_KEYS: [&str; 6] = [
    "tls.generated_dir",
    "auth.credentials",
    "auth.nonce_key",
    "state.key_file",
    "state.snapshot",
    "admin.token_file",
];

/// Takes every relative data path of `cfg` ([`DATA_PATH_KEYS`]) under `dir`; absolute and empty
/// ones (an empty `state.snapshot` saves nothing) are left alone. Returns what moved, as
/// (key, new path), for the log.
pub fn place_data_under(cfg: &mut Config, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut moved = Vec::new();
    // The admin token among them: `sagw admin new-token` writes it. Left out, the CLI wrote it
    // under the operator's working directory while the service read it from its own.
    let fields: [(&'static str, &mut String); 6] = [
        (DATA_PATH_KEYS[0], &mut cfg.tls.generated_dir),
        (DATA_PATH_KEYS[1], &mut cfg.auth.credentials),
        (DATA_PATH_KEYS[2], &mut cfg.auth.nonce_key),
        (DATA_PATH_KEYS[3], &mut cfg.state.key_file),
        (DATA_PATH_KEYS[4], &mut cfg.state.snapshot),
        (DATA_PATH_KEYS[5], &mut cfg.admin.token_file),
    ];
    for (key, value) in fields {
        let trimmed = value.trim();
        if trimmed.is_empty() || Path::new(trimmed).is_absolute() {
            continue;
        }
        let placed = dir.join(trimmed);
        *value = placed.to_string_lossy().into_owned();
        moved.push((key, placed));
    }
    moved
}

/// Tells the service manager that every listener is bound (`READY=1`); a no-op outside systemd
/// (no `$NOTIFY_SOCKET`). A failure is logged and otherwise ignored: systemd then times the start
/// out, which says more than a gateway that refuses to run.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager that the gateway is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_state_directories_count() {
        assert_eq!(
            state_directory_from("/var/lib/sagw"),
            Some(PathBuf::from("/var/lib/sagw"))
        );
        assert_eq!(
            state_directory_from("/var/lib/sagw:/var/lib/other"),
            Some(PathBuf::from("/var/lib/sagw"))
        );
        assert_eq!(state_directory_from("relative"), None);
        assert_eq!(state_directory_from(""), None);
    }

    #[test]
    fn relative_data_paths_of_the_embedded_default_go_under_the_state_directory() {
        let mut cfg = Config::embedded().expect("embedded");
        cfg.tls.cert = "cert.pem".into();
        cfg.tls.key = "key.pem".into();
        cfg.auth.kerberos_keytab = "sagw.keytab".into();
        let moved = place_data_under(&mut cfg, Path::new("/var/lib/sagw"));
        let keys: Vec<&str> = moved.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, DATA_PATH_KEYS);
        assert_eq!(cfg.tls.generated_dir, "/var/lib/sagw/sagw-data");
        assert_eq!(cfg.auth.credentials, "/var/lib/sagw/sagw-data/users");
        assert_eq!(cfg.auth.nonce_key, "/var/lib/sagw/sagw-data/nonce.key");
        assert_eq!(cfg.state.key_file, "/var/lib/sagw/sagw-data/pool.key");
        assert_eq!(cfg.state.snapshot, "/var/lib/sagw/sagw-data/state.snapshot");
        assert_eq!(cfg.admin.token_file, "/var/lib/sagw/sagw-data/admin.token");
        // Files the operator provides stay where the file says.
        assert_eq!(cfg.tls.cert, "cert.pem");
        assert_eq!(cfg.tls.key, "key.pem");
        assert_eq!(cfg.auth.kerberos_keytab, "sagw.keytab");
        // The settings carry the placed paths.
        let s = cfg.validate().expect("valid");
        let a = s.auth.expect("auth on");
        assert_eq!(
            a.credentials,
            PathBuf::from("/var/lib/sagw/sagw-data/users")
        );
        assert_eq!(
            s.state.key_file,
            PathBuf::from("/var/lib/sagw/sagw-data/pool.key")
        );
    }

    #[test]
    fn absolute_and_empty_data_paths_stay() {
        let mut cfg =
            Config::parse("[auth]\ncredentials = \"/etc/sagw/users\"\n[state]\nsnapshot = \"\"\n")
                .expect("parse");
        let moved = place_data_under(&mut cfg, Path::new("/var/lib/sagw"));
        assert!(!moved.iter().any(|(k, _)| *k == "auth.credentials"));
        assert!(!moved.iter().any(|(k, _)| *k == "state.snapshot"));
        assert_eq!(cfg.auth.credentials, "/etc/sagw/users");
        assert_eq!(cfg.state.snapshot, "");
    }
}
