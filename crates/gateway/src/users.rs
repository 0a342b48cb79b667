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

/// Adds (or replaces) a user: its NT hash, and a Digest HA1 for every realm and algorithm a
/// policy offers (and the top-level ones, offered or not).
pub fn add(
    auth: &AuthSettings,
    user: &str,
    password: &str,
    sip: Option<&str>,
) -> Result<(), UsersError> {
    check_name(user)?;
    ensure_file(&auth.credentials)?;
    let mut store = load(&auth.credentials)?;
    let realms = auth.digest_realms();
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

/// The credentials file as the running gateway sees it: reloaded when the file changes, so
/// `sagw user add` takes effect without a restart. A file that fails to load (half-written by hand,
/// made readable to others) keeps the previous users and is reported.
pub struct ReloadingStore {
    path: std::path::PathBuf,
    current: parking_lot::RwLock<(FileCredentialStore, Option<std::time::SystemTime>)>,
}

impl ReloadingStore {
    /// Loads `path` now.
    pub fn open(path: &Path) -> Result<Self, UsersError> {
        let store = load(path)?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(ReloadingStore {
            path: path.to_owned(),
            current: parking_lot::RwLock::new((store, mtime)),
        })
    }

    /// Number of users loaded.
    pub fn user_count(&self) -> usize {
        self.current.read().0.users().count()
    }

    /// Reloads when the file's modification time changed; true when it did reload.
    pub fn reload_if_changed(&self) -> bool {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.current.read().1 {
            return false;
        }
        match load(&self.path) {
            Ok(store) => {
                let n = store.users().count();
                *self.current.write() = (store, mtime);
                tracing::info!(path = %self.path.display(), users = n, "credentials reloaded");
                true
            }
            Err(e) => {
                // Remember the mtime so a broken file is reported once, not every tick.
                self.current.write().1 = mtime;
                tracing::warn!(error = %e, "credentials file changed but cannot be loaded; keeping the previous users");
                false
            }
        }
    }
}

impl sagw_auth::CredentialStore for ReloadingStore {
    fn nt_hash(&self, user: &str) -> Option<sagw_ntlm::NtHash> {
        self.current.read().0.nt_hash(user)
    }

    fn digest_ha1(
        &self,
        user: &str,
        realm: &str,
        algorithm: sagw_digest::Algorithm,
    ) -> Option<sagw_digest::Ha1> {
        self.current.read().0.digest_ha1(user, realm, algorithm)
    }

    fn sip_identity(&self, user: &str) -> Option<String> {
        self.current.read().0.sip_identity(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagw_auth::CredentialStore;

    #[test]
    fn a_user_added_while_running_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("sagw-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let section = crate::auth_config::AuthSection {
            credentials: dir.join("users").display().to_string(),
            ..Default::default()
        };
        let auth = section.validate().expect("valid").expect("enabled");
        add(&auth, "alice", "pw-a", None).expect("add");
        let store = ReloadingStore::open(&auth.credentials).expect("open");
        assert!(store.nt_hash("alice").is_some());
        assert!(store.nt_hash("bob").is_none());
        assert!(!store.reload_if_changed(), "nothing changed yet");
        // File systems with coarse timestamps: make sure the mtime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        add(&auth, "bob", "pw-b", None).expect("add");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        let f = std::fs::File::options()
            .write(true)
            .open(&auth.credentials)
            .expect("open");
        f.set_modified(later).expect("touch");
        assert!(store.reload_if_changed());
        assert!(store.nt_hash("bob").is_some());
        assert_eq!(store.user_count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
