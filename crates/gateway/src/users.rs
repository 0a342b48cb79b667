//! The credentials file behind `sagw user add|remove|list`: NT hashes and Digest HA1 values, never a
//! password (format in `sagw_auth::credentials`). Written atomically with mode 600; a file other users
//! can read is refused when loading.

use std::io::Write;
use std::path::Path;

use sagw_auth::{CredentialsError, FileCredentialStore};

use crate::auth_config::AuthSettings;

/// Errors of the user commands.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Load(#[from] CredentialsError),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A user name the file format cannot hold.
    #[error("user names must be non-empty and without spaces, '#' or ':'")]
    BadName,
}

/// Creates an empty credentials file (and its directory) when there is none.
pub fn ensure_file(path: &Path) -> Result<(), UsersError> {
    if path.exists() {
        return Ok(());
    }
    save(path, &FileCredentialStore::new())
}

/// Loads the file (refusing one others can read).
pub fn load(path: &Path) -> Result<FileCredentialStore, UsersError> {
    Ok(FileCredentialStore::load(path)?)
}

fn save(path: &Path, store: &FileCredentialStore) -> Result<(), UsersError> {
    let err = |source| UsersError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(store.to_file_text().as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn check_name(user: &str) -> Result<(), UsersError> {
    if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '#' || c == ':') {
        return Err(UsersError::BadName);
    }
    Ok(())
}

/// Adds (or replaces) a user: its NT hash, and a Digest HA1 for the configured realm and each
/// configured algorithm.
pub fn add(
    auth: &AuthSettings,
    user: &str,
    password: &str,
    sip: Option<&str>,
) -> Result<(), UsersError> {
    check_name(user)?;
    ensure_file(&auth.credentials)?;
    let mut store = load(&auth.credentials)?;
    let mut realms: Vec<(&str, sagw_digest::Algorithm)> = Vec::new();
    for a in &auth.digest_algorithms {
        let base = a.base();
        if !realms.iter().any(|(_, b)| *b == base) {
            realms.push((auth.digest_realm.as_str(), base));
        }
    }
    store.add_password(user, password, &realms);
    if let Some(uri) = sip {
        store.set_sip_identity(user, uri);
    }
    save(&auth.credentials, &store)
}

/// Removes a user; false when there was none.
pub fn remove(auth: &AuthSettings, user: &str) -> Result<bool, UsersError> {
    let mut store = load(&auth.credentials)?;
    let removed = store.remove(user);
    if removed {
        save(&auth.credentials, &store)?;
    }
    Ok(removed)
}

/// User names in the file, sorted.
pub fn list(auth: &AuthSettings) -> Result<Vec<String>, UsersError> {
    let store = load(&auth.credentials)?;
    let mut v: Vec<String> = store.users().map(str::to_owned).collect();
    v.sort();
    Ok(v)
}
