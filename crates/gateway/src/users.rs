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
    /// A `--sip` value that is not one SIP URI on one line.
    #[error(
        "--sip wants one sip:user@host (or sips:) URI without spaces, control characters, '#', '<', '>' or '\"'"
    )]
    BadSipIdentity,
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
    // Checked before the file is touched: a line break here would write records of the caller's
    // choice (another user's hash) into the file.
    if sip.is_some_and(|uri| !sagw_auth::is_valid_sip_identity(uri)) {
        return Err(UsersError::BadSipIdentity);
    }
    ensure_file(&auth.credentials)?;
    let mut store = load(&auth.credentials)?;
    let realms = auth.digest_realms();
    store.add_password(user, password, &realms);
    if let Some(uri) = sip {
        store
            .set_sip_identity(user, uri)
            .map_err(|_| UsersError::BadSipIdentity)?;
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
///
/// A change is recognised by the file's content (its SHA-256), not its modification time: an edit
/// within the time stamp's granularity, or one that puts the time back, changes nothing else the
/// metadata shows when the size stays the same (hashes are fixed-size, so a changed password does).
/// The file is small and read every few seconds.
pub struct ReloadingStore {
    path: std::path::PathBuf,
    current: parking_lot::RwLock<(FileCredentialStore, Option<[u8; 32]>)>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Users now loaded.
    pub users: usize,
    /// Users removed or changed (password, realm, SIP identity), with the identity they had: their
    /// SAs must end ([`sagw_auth::SecurityCore::revoke_user`]).
    pub changed: Vec<sagw_auth::ChangedUser>,
}

fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    Some(sha2::Sha256::digest(&bytes).into())
}

impl ReloadingStore {
    /// Loads `path` now.
    pub fn open(path: &Path) -> Result<Self, UsersError> {
        let print = fingerprint(path);
        let store = load(path)?;
        Ok(ReloadingStore {
            path: path.to_owned(),
            current: parking_lot::RwLock::new((store, print)),
        })
    }

    /// Number of users loaded.
    pub fn user_count(&self) -> usize {
        self.current.read().0.users().count()
    }

    /// Reloads when the file's content changed; `Some` when it did reload, with the users whose
    /// SAs must end.
    pub fn reload_if_changed(&self) -> Option<Reloaded> {
        // Taken before loading: a write racing this reload changes the content again, and the next
        // call loads it.
        let print = fingerprint(&self.path);
        if print == self.current.read().1 {
            return None;
        }
        match load(&self.path) {
            Ok(store) => {
                let users = store.users().count();
                let mut current = self.current.write();
                let changed = current.0.changed_in(&store);
                *current = (store, print);
                drop(current);
                tracing::info!(path = %self.path.display(), users, changed = changed.len(), "credentials reloaded");
                Some(Reloaded { users, changed })
            }
            Err(e) => {
                // Remember the content so a broken file is reported once, not every tick.
                self.current.write().1 = print;
                tracing::warn!(error = %e, "credentials file changed but cannot be loaded; keeping the previous users");
                None
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

    // One read lock and one lookup per NTLM final leg, not the trait's two of each.
    fn ntlm_user(&self, user: &str) -> Option<sagw_auth::NtlmUser> {
        self.current.read().0.ntlm_user(user)
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
        assert!(store.reload_if_changed().is_none(), "nothing changed yet");
        // File systems with coarse timestamps: make sure the mtime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        add(&auth, "bob", "pw-b", None).expect("add");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        let f = std::fs::File::options()
            .write(true)
            .open(&auth.credentials)
            .expect("open");
        f.set_modified(later).expect("touch");
        let r = store.reload_if_changed().expect("reloaded");
        assert_eq!(r.users, 2);
        assert!(r.changed.is_empty(), "only added: {r:?}");
        assert!(store.nt_hash("bob").is_some());
        // The NTLM final leg's one lookup sees the reloaded users too.
        let bob = store.ntlm_user("bob").expect("bob after the reload");
        assert_eq!(
            Some(bob.nt_hash.as_bytes()),
            store.nt_hash("bob").as_ref().map(|h| h.as_bytes())
        );
        assert!(store.ntlm_user("carol").is_none());
        assert_eq!(store.user_count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Same size, modification time put back, same inode: only the content tells, and the changed
    /// and removed users are reported.
    #[test]
    fn a_change_the_metadata_hides_is_still_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let section = crate::auth_config::AuthSection {
            credentials: dir.path().join("users").display().to_string(),
            ..Default::default()
        };
        let auth = section.validate().expect("valid").expect("enabled");
        add(&auth, "alice", "pw-a", None).expect("add");
        add(&auth, "bob", "pw-b", Some("sip:robert@example.com")).expect("add");
        let store = ReloadingStore::open(&auth.credentials).expect("open");
        let meta = std::fs::metadata(&auth.credentials).expect("meta");
        let old = std::fs::read_to_string(&auth.credentials).expect("read");
        let alice_nt = sagw_auth::FileCredentialStore::parse(&old)
            .expect("parse")
            .nt_hash("alice")
            .expect("alice");
        let new = old.replace(
            &sagw_hex::encode_upper(alice_nt.as_bytes()),
            &"0".repeat(32),
        );
        assert_eq!(new.len(), old.len());
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&auth.credentials)
                .expect("open");
            f.write_all(new.as_bytes()).expect("write");
            f.set_modified(meta.modified().expect("mtime"))
                .expect("mtime back");
        }
        let r = store.reload_if_changed().expect("reloaded");
        assert_eq!(
            r.changed,
            vec![sagw_auth::ChangedUser {
                user: "alice".into(),
                sip_identity: None
            }]
        );
        assert!(remove(&auth, "bob").expect("remove"));
        let r = store.reload_if_changed().expect("reloaded");
        assert_eq!(
            r.changed,
            vec![sagw_auth::ChangedUser {
                user: "bob".into(),
                sip_identity: Some("sip:robert@example.com".into())
            }]
        );
    }

    #[test]
    fn a_sip_identity_with_a_line_break_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let section = crate::auth_config::AuthSection {
            credentials: dir.path().join("users").display().to_string(),
            ..Default::default()
        };
        let auth = section.validate().expect("valid").expect("enabled");
        add(&auth, "bob", "pw-b", None).expect("add");
        let before = std::fs::read(&auth.credentials).expect("read");
        for bad in [
            "sip:m@example.com\nbob nt 8846F7EAEE8FB117AD06BDD830B7586C",
            "sip:m@example.com\r\nbob nt 8846F7EAEE8FB117AD06BDD830B7586C",
            "sip:m @example.com",
        ] {
            assert!(matches!(
                add(&auth, "mallory", "pw-m", Some(bad)),
                Err(UsersError::BadSipIdentity)
            ));
        }
        assert_eq!(std::fs::read(&auth.credentials).expect("read"), before);
    }
}
