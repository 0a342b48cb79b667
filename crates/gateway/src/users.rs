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

/// Loads the file, refusing one others can read, one with two records of a kind for one user,
/// and one in which two users sign in as one SIP identity (`sip_domain` makes the default ones,
/// `sip:<user>@<sip_domain>`).
pub fn load(path: &Path, sip_domain: &str) -> Result<FileCredentialStore, UsersError> {
    let store = FileCredentialStore::load(path)?;
    store.check_identities(sip_domain)?;
    Ok(store)
}

/// Refuses a store the gateway would refuse to load (two users with one identity), before it is
/// written: checked on its file form, as the gateway will read it.
fn check_before_save(store: &FileCredentialStore, sip_domain: &str) -> Result<(), UsersError> {
    FileCredentialStore::parse(&store.to_file_text())?.check_identities(sip_domain)?;
    Ok(())
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
    let mut store = load(&auth.credentials, &auth.sip_domain)?;
    let realms = auth.digest_realms();
    store.add_password(user, password, &realms);
    if let Some(uri) = sip {
        store
            .set_sip_identity(user, uri)
            .map_err(|_| UsersError::BadSipIdentity)?;
    }
    check_before_save(&store, &auth.sip_domain)?;
    save(&auth.credentials, &store)
}

/// Removes a user; false when there was none. Also from a file the gateway refuses because two
/// users sign in as one SIP identity: removing one of them is how the operator mends it.
pub fn remove(auth: &AuthSettings, user: &str) -> Result<bool, UsersError> {
    let mut store = FileCredentialStore::load_for_repair(&auth.credentials)?;
    let removed = store.remove(user);
    if removed {
        save(&auth.credentials, &store)?;
    }
    Ok(removed)
}

/// User names in the file, sorted; also of a file with two users of one SIP identity (which the
/// gateway refuses), for the operator to find them.
pub fn list(auth: &AuthSettings) -> Result<Vec<String>, UsersError> {
    let store = FileCredentialStore::load_for_repair(&auth.credentials)?;
    let mut v: Vec<String> = store.users().map(str::to_owned).collect();
    v.sort();
    Ok(v)
}

/// Warnings for the Digest realms and algorithms the policies offer that users have no HA1 for:
/// those users cannot sign in with Digest there. HA1 values are per realm, and the default realm
/// is `auth.sip_domain`: users added before the domain was set (the README's first steps) were
/// refused as unknown by every Digest client, with nothing said at start or by check-config.
pub fn digest_gaps(auth: &AuthSettings, store: &FileCredentialStore) -> Vec<String> {
    if !auth.digest {
        return Vec::new();
    }
    let total = store.users().count();
    auth.digest_realms()
        .into_iter()
        .filter_map(|(realm, algorithm)| {
            let n = store.users_without_ha1(realm, algorithm);
            (n > 0).then(|| {
                format!(
                    "{n} of {total} users have no Digest HA1 for realm \"{realm}\" ({}): they cannot sign in with Digest there (added under another realm, or before auth.sip_domain was set?); add them again with `sagw user add NAME` and their password",
                    algorithm.token()
                )
            })
        })
        .collect()
}

/// The credentials file as the running gateway sees it: reloaded when the file changes, so
/// `sagw user add` takes effect without a restart. A file that fails to load (half-written by hand,
/// made readable to others) keeps the previous users and is reported.
///
/// A change is recognised by the file's content (its SHA-256), not its modification time: an edit
/// within the time stamp's granularity, or one that puts the time back, changes nothing else the
/// metadata shows when the size stays the same (hashes are fixed-size, so a changed password does).
/// Reading and hashing the whole file at every housekeeping tick is what an idle gateway spent
/// its CPU on (about 3 ms a second for 10 000 users, growing with the file), so a tick reads it
/// only when its metadata moved, or when its last change is too recent for the metadata to be
/// trusted (see [`FileStamp`]).
pub struct ReloadingStore {
    path: std::path::PathBuf,
    /// `auth.sip_domain` (not reloadable): the users' default identities.
    sip_domain: String,
    current: parking_lot::RwLock<Loaded>,
}

/// The users in force and what is known of the file they came from.
struct Loaded {
    store: FileCredentialStore,
    /// SHA-256 of the content the users in force were loaded from.
    print: Option<[u8; 32]>,
    /// The file's metadata, taken before the last read, when its last change was already settled
    /// then: while the metadata still reads this, the file is what was read.
    quiet: Option<FileStamp>,
    /// The content (SHA-256) and the error of the last read that failed, until a read succeeds.
    /// Not folded into `print`: a file fixed without a change of content (a `chmod 600`) must be
    /// loaded at the next check, not taken for the users in force. The error is kept so that a
    /// tick warns once per broken state, not every 5 s.
    broken: Option<(Option<[u8; 32]>, String)>,
}

/// The credentials file read and parsed by [`ReloadingStore::read_now`], not yet in force.
pub struct Staged {
    store: FileCredentialStore,
    print: Option<[u8; 32]>,
    quiet: Option<FileStamp>,
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

/// Whether a check reads the content even when the metadata says nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The housekeeping tick: the content is read only when the metadata moved or may hide a
    /// change.
    Tick,
    /// An operator's reload: the content is read.
    Always,
}

/// How long after a file's last change its metadata is trusted to show the next one: longer than
/// any file system's timestamp granularity (ext4 and XFS: the kernel's coarse clock, a few ms;
/// FAT: 2 s). A write that lands in the same timestamp tick as the one before it, with the same
/// size, changes no field of the metadata; once that tick is this far in the past, every write
/// sets a later change time.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(10);

/// A tick that meets a file changed less than this ago leaves it to the next tick: it may be
/// being written in place (`cat > users`, an editor that truncates), and a file read between the
/// truncation and the end of the write holds no users, which is a valid file: every SA would end.
const WRITING: std::time::Duration = std::time::Duration::from_secs(2);

/// The metadata that any write, rename over, or `touch` of the file changes: the status-change
/// time (`ctime`, which nothing but the clock sets, unlike the modification time), size, and
/// which file the path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }

    /// The file's metadata when its last change is [`SETTLED`] at `now`; `None` when it is not (or
    /// the file cannot be read), so that the next check reads the content again.
    fn quiet(path: &Path, now: std::time::SystemTime) -> Option<FileStamp> {
        FileStamp::of(path).filter(|s| s.settled(now))
    }

    /// How long before `now` the file last changed; `None` for a change time ahead of `now` (a
    /// clock put back, a file server's clock) or before 1970.
    fn changed_since(&self, now: std::time::SystemTime) -> Option<std::time::Duration> {
        let (secs, nanos) = self.ctime;
        let secs = u64::try_from(secs).ok()?;
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(secs, u32::try_from(nanos).unwrap_or(0));
        now.duration_since(changed).ok()
    }

    /// Whether the last change was under `span` before `now` (a change time ahead of `now` is
    /// not: a clock put back must not keep the file from ever being read).
    fn changed_within(&self, now: std::time::SystemTime, span: std::time::Duration) -> bool {
        self.changed_since(now).is_some_and(|since| since < span)
    }

    /// Whether the last change is [`SETTLED`] at `now`. A change time ahead of `now` is not.
    fn settled(&self, now: std::time::SystemTime) -> bool {
        self.changed_since(now)
            .is_some_and(|since| since >= SETTLED)
    }
}

fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    Some(sha2::Sha256::digest(&bytes).into())
}

impl ReloadingStore {
    /// Loads `path` now; `sip_domain` gives the users without a `sip` record their identity.
    pub fn open(path: &Path, sip_domain: &str) -> Result<Self, UsersError> {
        let quiet = FileStamp::quiet(path, std::time::SystemTime::now());
        let print = fingerprint(path);
        let store = load(path, sip_domain)?;
        Ok(ReloadingStore {
            path: path.to_owned(),
            sip_domain: sip_domain.to_owned(),
            current: parking_lot::RwLock::new(Loaded {
                store,
                print,
                quiet,
                broken: None,
            }),
        })
    }

    /// Number of users loaded.
    pub fn user_count(&self) -> usize {
        self.current.read().store.users().count()
    }

    /// [`digest_gaps`] of the users in force.
    pub fn digest_gaps(&self, auth: &AuthSettings) -> Vec<String> {
        digest_gaps(auth, &self.current.read().store)
    }

    /// The periodic check: reloads when the file changed; `Some` when it did reload, with the
    /// users whose SAs must end. A file that cannot be loaded keeps the previous users and is
    /// reported once (a warning); it is read again whenever its metadata moves.
    pub fn reload_if_changed(&self, check: Check) -> Option<Reloaded> {
        self.reload_at(check, std::time::SystemTime::now())
    }

    fn reload_at(&self, check: Check, now: std::time::SystemTime) -> Option<Reloaded> {
        // The metadata, then the content: a write racing this check moves the metadata after
        // what is recorded here, and the next tick reads the file again.
        let quiet = FileStamp::quiet(&self.path, now);
        if !must_read(check, self.current.read().quiet, quiet) {
            return None;
        }
        if check == Check::Tick
            && FileStamp::of(&self.path).is_some_and(|s| s.changed_within(now, WRITING))
        {
            // Read at the next tick, whole (nothing is recorded: it reads the file again).
            return None;
        }
        let print = fingerprint(&self.path);
        {
            let current = self.current.read();
            // The users in force came from this content and nothing failed since.
            if print == current.print && current.broken.is_none() {
                drop(current);
                self.current.write().quiet = quiet;
                return None;
            }
        }
        match self.stage(print, quiet) {
            Ok(staged) => Some(self.apply(staged)),
            Err((e, repeated)) => {
                if !repeated {
                    tracing::warn!(error = %e, "credentials file changed but cannot be loaded; keeping the previous users");
                }
                None
            }
        }
    }

    /// An operator's reload, first half: reads and parses the file now, whatever its metadata
    /// says, and puts nothing in force (that is [`apply`](Self::apply), once everything else the
    /// reload needs has loaded too). An error here must fail the reload: answering "ok" while a
    /// removed user keeps signing in is what the operator cannot see.
    pub fn read_now(&self) -> Result<Staged, UsersError> {
        let quiet = FileStamp::quiet(&self.path, std::time::SystemTime::now());
        let print = fingerprint(&self.path);
        self.stage(print, quiet).map_err(|(e, _)| e)
    }

    /// Loads the file whose content had `print` and metadata `quiet`. On an error, records the
    /// broken state (so a tick neither skips the file once fixed nor warns again) and says
    /// whether it is the one recorded already.
    fn stage(
        &self,
        print: Option<[u8; 32]>,
        quiet: Option<FileStamp>,
    ) -> Result<Staged, (UsersError, bool)> {
        match load(&self.path, &self.sip_domain) {
            Ok(store) => Ok(Staged {
                store,
                print,
                quiet,
            }),
            Err(e) => {
                let seen = (print, e.to_string());
                let mut current = self.current.write();
                // Read again at the next tick only when the metadata moves.
                current.quiet = quiet;
                let repeated = current.broken.as_ref() == Some(&seen);
                current.broken = Some(seen);
                Err((e, repeated))
            }
        }
    }

    /// Puts a file read by [`read_now`](Self::read_now) in force: the users removed or changed
    /// since the ones in force are returned, their SAs must end.
    pub fn apply(&self, staged: Staged) -> Reloaded {
        let Staged {
            store,
            print,
            quiet,
        } = staged;
        let users = store.users().count();
        let mut current = self.current.write();
        let changed = current.store.changed_in(&store);
        *current = Loaded {
            store,
            print,
            quiet,
            broken: None,
        };
        drop(current);
        tracing::info!(path = %self.path.display(), users, changed = changed.len(), "credentials reloaded");
        Reloaded { users, changed }
    }
}

/// Whether a check must read the content: always for an operator's reload, and at a tick unless
/// the file's settled metadata (`now`, `None` when not settled or unreadable) is what it was when
/// the content was last read (`seen`).
fn must_read(check: Check, seen: Option<FileStamp>, now: Option<FileStamp>) -> bool {
    check == Check::Always || now.is_none() || now != seen
}

impl ReloadingStore {
    /// SHA-256 of the content the users in force were loaded from (`None`: no file).
    pub fn print(&self) -> Option<[u8; 32]> {
        self.current.read().print
    }
}

impl sagw_auth::CredentialStore for ReloadingStore {
    fn nt_hash(&self, user: &str) -> Option<sagw_ntlm::NtHash> {
        self.current.read().store.nt_hash(user)
    }

    fn digest_ha1(
        &self,
        user: &str,
        realm: &str,
        algorithm: sagw_digest::Algorithm,
    ) -> Option<sagw_digest::Ha1> {
        self.current.read().store.digest_ha1(user, realm, algorithm)
    }

    fn sip_identity(&self, user: &str) -> Option<String> {
        self.current.read().store.sip_identity(user)
    }

    // One read lock and one lookup per NTLM final leg, not the trait's two of each.
    fn ntlm_user(&self, user: &str) -> Option<sagw_auth::NtlmUser> {
        self.current.read().store.ntlm_user(user)
    }

    fn owns_identity(&self, identity: &str, sip_domain: &str) -> bool {
        self.current
            .read()
            .store
            .owns_identity(identity, sip_domain)
    }

    fn user_part_owners(&self, user: &str, sip_domain: &str) -> usize {
        self.current.read().store.user_part_owners(user, sip_domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagw_auth::CredentialStore;

    /// The time of the next tick after a write made just now: the write is over.
    fn after_writing() -> std::time::SystemTime {
        std::time::SystemTime::now() + WRITING
    }

    /// A file read between its truncation and the end of its write holds no users, a valid file:
    /// before, a tick that met it took it, and every SA ended (a reload test met it once). A tick
    /// now leaves a file changed under two seconds ago to the next one.
    #[test]
    fn a_file_being_written_in_place_is_read_at_the_next_tick() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        let store = ReloadingStore::open(&auth.credentials, &auth.sip_domain).expect("open");
        // Truncated in place, the rest not written yet.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&auth.credentials)
            .expect("truncate");
        assert!(
            store
                .reload_at(Check::Tick, std::time::SystemTime::now())
                .is_none()
        );
        assert!(store.nt_hash("alice").is_some(), "alice is kept");
        // Still empty two seconds on: it is what the operator wrote.
        let r = store
            .reload_at(Check::Tick, after_writing())
            .expect("the empty file, once written");
        assert_eq!(r.users, 0);
        assert!(store.nt_hash("alice").is_none());
    }

    /// Two users signing in as one SIP identity: the gateway refuses the file, and `sagw user
    /// list` and `remove` still work on it, so the CLI can mend it. Before, both refused too.
    #[test]
    fn list_and_remove_mend_a_file_with_one_identity_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        add(&auth, "bob", "pw-b", None).expect("add");
        // Edited by hand: bob made to sign in as alice.
        let text = std::fs::read_to_string(&auth.credentials).expect("read");
        std::fs::write(
            &auth.credentials,
            format!("{text}bob sip sip:alice@{}\n", auth.sip_domain),
        )
        .expect("write");
        assert!(load(&auth.credentials, &auth.sip_domain).is_err());
        assert_eq!(list(&auth).expect("list"), ["alice", "bob"]);
        assert!(remove(&auth, "bob").expect("remove"));
        assert!(load(&auth.credentials, &auth.sip_domain).is_ok());
        assert_eq!(list(&auth).expect("list"), ["alice"]);
        // Two `sip` lines naming one identity (refused by the parser itself) too.
        add(&auth, "carol", "pw-c", Some("sip:desk@example.com")).expect("add");
        let text = std::fs::read_to_string(&auth.credentials).expect("read");
        std::fs::write(
            &auth.credentials,
            format!("{text}alice sip sip:desk@example.com\n"),
        )
        .expect("write");
        assert!(load(&auth.credentials, &auth.sip_domain).is_err());
        assert_eq!(list(&auth).expect("list"), ["alice", "carol"]);
        assert!(remove(&auth, "carol").expect("remove"));
        assert!(load(&auth.credentials, &auth.sip_domain).is_ok());
    }

    #[test]
    fn a_user_added_while_running_is_picked_up() {
        let dir = std::env::temp_dir().join(format!("sagw-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let auth = settings_in(&dir);
        add(&auth, "alice", "pw-a", None).expect("add");
        let store = ReloadingStore::open(&auth.credentials, &auth.sip_domain).expect("open");
        assert!(store.nt_hash("alice").is_some());
        assert!(store.nt_hash("bob").is_none());
        assert!(
            store.reload_at(Check::Tick, after_writing()).is_none(),
            "nothing changed yet"
        );
        // File systems with coarse timestamps: make sure the mtime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        add(&auth, "bob", "pw-b", None).expect("add");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        let f = std::fs::File::options()
            .write(true)
            .open(&auth.credentials)
            .expect("open");
        f.set_modified(later).expect("touch");
        let r = store
            .reload_at(Check::Tick, after_writing())
            .expect("reloaded");
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

    /// Authentication on, its credentials file `users` in `dir`.
    fn settings_in(dir: &Path) -> AuthSettings {
        let section = crate::auth_config::AuthSection {
            credentials: dir.join("users").display().to_string(),
            ..Default::default()
        };
        section.validate().expect("valid").expect("enabled")
    }

    /// Zeroes alice's NT hash in the file without changing its size, inode or modification time:
    /// only the content and the change time tell.
    fn change_alice_in_place(path: &Path) {
        use std::io::Write;
        let meta = std::fs::metadata(path).expect("meta");
        let old = std::fs::read_to_string(path).expect("read");
        let alice_nt = sagw_auth::FileCredentialStore::parse(&old)
            .expect("parse")
            .nt_hash("alice")
            .expect("alice");
        let new = old.replace(
            &sagw_hex::encode_upper(alice_nt.as_bytes()),
            &"0".repeat(32),
        );
        assert_eq!(new.len(), old.len());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        f.write_all(new.as_bytes()).expect("write");
        f.set_modified(meta.modified().expect("mtime"))
            .expect("mtime back");
    }

    /// Same size, modification time put back, same inode: only the content tells, and the changed
    /// and removed users are reported.
    #[test]
    fn a_change_the_metadata_hides_is_still_reloaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        add(&auth, "bob", "pw-b", Some("sip:robert@example.com")).expect("add");
        let store = ReloadingStore::open(&auth.credentials, &auth.sip_domain).expect("open");
        change_alice_in_place(&auth.credentials);
        let r = store
            .reload_at(Check::Tick, after_writing())
            .expect("reloaded");
        assert_eq!(
            r.changed,
            vec![sagw_auth::ChangedUser {
                user: "alice".into(),
                sip_identity: None
            }]
        );
        assert!(remove(&auth, "bob").expect("remove"));
        let r = store
            .reload_at(Check::Tick, after_writing())
            .expect("reloaded");
        assert_eq!(
            r.changed,
            vec![sagw_auth::ChangedUser {
                user: "bob".into(),
                sip_identity: Some("sip:robert@example.com".into())
            }]
        );
    }

    fn stamp(ctime: (i64, i64), len: u64) -> FileStamp {
        FileStamp {
            dev: 1,
            ino: 2,
            len,
            ctime,
            mtime: ctime,
        }
    }

    #[test]
    fn a_change_is_settled_only_once_well_past_any_timestamp_tick() {
        let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let s = stamp((1_000_000, 500), 10);
        assert!(!s.settled(at(1_000_000)), "changed just now");
        assert!(!s.settled(at(1_000_009)), "9 s ago");
        assert!(s.settled(at(1_000_011)), "11 s ago");
        assert!(!s.settled(at(999_000)), "a change time ahead of the clock");
        assert!(!stamp((-5, 0), 10).settled(at(1_000_000)), "before 1970");
    }

    /// The tick skips the content only when the settled metadata is the one recorded with the last
    /// read; a hidden same-tick write cannot be behind a stamp that was not settled when recorded
    /// (it is recorded as `None`, so the next tick reads).
    #[test]
    fn the_content_is_read_unless_settled_metadata_stands_still() {
        let seen = stamp((1_000_000, 500), 10);
        assert!(!must_read(Check::Tick, Some(seen), Some(seen)));
        assert!(must_read(Check::Always, Some(seen), Some(seen)));
        assert!(must_read(Check::Tick, None, None), "never settled");
        assert!(must_read(Check::Tick, None, Some(seen)), "settled since");
        assert!(must_read(Check::Tick, Some(seen), None), "changed recently");
        for moved in [
            stamp((1_000_030, 0), 10),
            stamp((1_000_000, 501), 10),
            stamp((1_000_000, 500), 11),
            FileStamp { ino: 3, ..seen },
            FileStamp { dev: 9, ..seen },
        ] {
            assert!(must_read(Check::Tick, Some(seen), Some(moved)), "{moved:?}");
        }
    }

    /// Once a tick has recorded the file as settled, a same-size write that puts the modification
    /// time back is still seen at the next tick: it moved the change time.
    #[test]
    fn a_settled_file_changed_later_is_reloaded_at_the_next_tick() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        let store = ReloadingStore::open(&auth.credentials, &auth.sip_domain).expect("open");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(20);
        assert!(store.reload_at(Check::Tick, later).is_none());
        assert!(
            store.current.read().quiet.is_some(),
            "settled 20 s on: recorded"
        );
        assert!(store.reload_at(Check::Tick, later).is_none());
        change_alice_in_place(&auth.credentials);
        let r = store
            .reload_at(Check::Tick, later + std::time::Duration::from_secs(5))
            .expect("reloaded");
        assert_eq!(r.changed.len(), 1);
    }

    /// A user removed in a file that cannot be loaded (readable by others) stays until the file is
    /// fixed; a fix that changes only the mode is loaded at the next tick.
    #[test]
    fn a_broken_file_keeps_the_users_until_it_is_fixed_even_by_chmod_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        add(&auth, "mallory", "pw-m", None).expect("add");
        let store = ReloadingStore::open(&auth.credentials, &auth.sip_domain).expect("open");
        assert!(remove(&auth, "mallory").expect("remove"));
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(&auth.credentials, mode(0o644)).expect("chmod");
        assert!(store.reload_at(Check::Tick, after_writing()).is_none());
        assert!(
            store.nt_hash("mallory").is_some(),
            "the previous users stay"
        );
        std::fs::set_permissions(&auth.credentials, mode(0o600)).expect("chmod");
        let r = store
            .reload_at(Check::Tick, after_writing())
            .expect("the fixed file is loaded");
        assert_eq!(r.changed.len(), 1, "{r:?}");
        assert!(store.nt_hash("mallory").is_none());
    }

    /// `sagw user add --sip` that would give two users one identity writes nothing: the gateway
    /// would refuse the file it wrote.
    #[test]
    fn an_identity_another_user_has_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
        add(&auth, "alice", "pw-a", None).expect("add");
        add(&auth, "bob", "pw-b", Some("sip:boss@example.com")).expect("add");
        let before = std::fs::read(&auth.credentials).expect("read");
        for (user, sip) in [
            ("carol", Some("sip:Boss@example.com")),
            ("carol", Some("sip:alice@example.com")),
            ("boss", None),
        ] {
            match add(&auth, user, "pw-c", sip) {
                Err(UsersError::Load(CredentialsError::SharedSipIdentity { .. })) => {}
                other => panic!("{user} {sip:?}: {other:?}"),
            }
        }
        assert_eq!(std::fs::read(&auth.credentials).expect("read"), before);
        // bob takes a new identity of his own, alice hers explicitly: fine.
        add(&auth, "bob", "pw-b", Some("sip:robert@example.com")).expect("add");
        add(&auth, "alice", "pw-a", Some("sip:alice@example.com")).expect("add");
    }

    #[test]
    fn a_sip_identity_with_a_line_break_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let auth = settings_in(dir.path());
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
