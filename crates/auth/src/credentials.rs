//! Where the gateway finds what proves a user: the NT hash (NTLM) and Digest HA1 values per realm and
//! algorithm. Clear-text passwords are never stored: the file holds hashes only, and the loader refuses
//! a file other users can read.
//!
//! File format (one record per line, `#` starts a comment, fields separated by spaces):
//!
//! ```text
//! # user  kind    fields
//! alice   nt      8846F7EAEE8FB117AD06BDD830B7586C
//! alice   ha1     SHA-256 3b1c...e9  SIP Communications Service
//! alice   sip     sip:alice@example.com
//! ```
//!
//! * `nt <32 hex>`: MD4 of the UTF-16LE password.
//! * `ha1 <algorithm> <hex> <realm>`: H(user:realm:password) for one Digest algorithm (`MD5`,
//!   `SHA-256`, `SHA-512-256`); the realm is the rest of the line and may contain spaces.
//! * `sip <uri>`: the SIP identity this user signs in as (default `sip:<user>@<sip_domain>`).
//!
//! User names compare without case, as Windows account names do. One user has at most one record
//! of each kind (`ha1`: one per realm and algorithm), and no two users one SIP identity: a file
//! that breaks either is refused ([`CredentialsError::Duplicate`],
//! [`CredentialsError::SharedSipIdentity`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use sagw_digest::{Algorithm, Ha1};
use sagw_ntlm::NtHash;

/// Looks up what proves a user. Implementations must be cheap: they run once per handshake.
pub trait CredentialStore: Send + Sync {
    /// The NT hash (MD4 of the UTF-16LE password) of `user`, the name as the AUTHENTICATE carries
    /// it; `None` when the store does not have the user (then domain NTLM, when on, is asked).
    fn nt_hash(&self, user: &str) -> Option<NtHash>;
    /// The Digest HA1 of `user` for `realm` and `algorithm` (the base algorithm of a `-sess` one);
    /// `None` when the store has none for that combination.
    fn digest_ha1(&self, user: &str, realm: &str, algorithm: Algorithm) -> Option<Ha1>;
    /// The SIP identity of the user, when it is not `sip:<user>@<sip_domain>`.
    fn sip_identity(&self, user: &str) -> Option<String>;
    /// What an NTLM final leg needs of `user`: [`nt_hash`](Self::nt_hash) and, for a user that has
    /// one, [`sip_identity`](Self::sip_identity). A store that finds both with one lookup should
    /// say so here: every NTLM sign-in asks this.
    fn ntlm_user(&self, user: &str) -> Option<NtlmUser> {
        let nt_hash = self.nt_hash(user)?;
        Some(NtlmUser {
            nt_hash,
            sip_identity: self.sip_identity(user),
        })
    }
    /// Whether some user of the store signs in as `identity` (ASCII case ignored): by its `sip`
    /// line, or by default as `sip:<user>@<sip_domain>` (any user the store has, whatever
    /// credentials it holds). A domain account mapped to such an identity is refused.
    fn owns_identity(&self, identity: &str, sip_domain: &str) -> bool;
    /// How many users' identities have `user` as their user part
    /// ([`canonical_user`](crate::address::canonical_user): lower case, unescaped, without a
    /// password, parameters or a number's visual separators), at whatever host: a user without
    /// a `sip` line by its name (`sip:<user>@<sip_domain>`), the others by their line's user
    /// part. A registrar that looks up the user part alone (a stock Kamailio, Asterisk) reaches
    /// each of them by it at any host of its own.
    fn user_part_owners(&self, user: &str, sip_domain: &str) -> usize;
}

/// Whether a file may give two users one `sip` identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SharedIdentities {
    /// As the gateway reads it: refused.
    Refused,
    /// For mending such a file (listing and removing users).
    Allowed,
}

/// A credentials-store user as NTLM needs it ([`CredentialStore::ntlm_user`]).
#[derive(Debug)]
pub struct NtlmUser {
    /// MD4 of the UTF-16LE password.
    pub nt_hash: NtHash,
    /// The SIP identity, when it is not `sip:<user>@<sip_domain>`.
    pub sip_identity: Option<String>,
}

#[derive(Default, Clone, PartialEq, Eq)]
struct UserRecord {
    nt: Option<[u8; 16]>,
    /// (realm, algorithm token, hex)
    ha1: Vec<(String, Algorithm, String)>,
    sip: Option<String>,
}

/// Errors loading a credentials file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read (missing, permissions of the gateway's user...).
    #[error("cannot read credentials file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's group or others have some permission on it: it holds password equivalents.
    #[error(
        "credentials file {path} is readable by other users (mode {mode:o}); run chmod 600 on it"
    )]
    WorldReadable {
        /// The file.
        path: String,
        /// Its permission bits (octal in the message).
        mode: u32,
    },
    /// A line of the file is not a valid record.
    #[error("credentials file line {line}: {what}")]
    Syntax {
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        what: String,
    },
    /// A user has a second record of one kind: two `nt` lines, two `sip` lines, or two `ha1` lines
    /// for one realm and algorithm, under names that are the same once case is ignored (as
    /// lookups ignore it). Which one would count is not for the loader to guess.
    #[error(
        "credentials file line {line}: user {user:?} already has {record} on line {first} (user names compare without case: one record of each kind per user)"
    )]
    Duplicate {
        /// The line of the second record, from 1.
        line: usize,
        /// The line of the first.
        first: usize,
        /// The user name as the second line writes it.
        user: String,
        /// Which record: `an nt record`, `a sip record`, `an ha1 record for MD5 in realm …`.
        record: String,
    },
    /// Two users sign in as one SIP identity (ASCII case ignored, as identities compare): by
    /// their `sip` lines, or one's `sip` line names the other's default identity
    /// (`sip:<user>@<sip_domain>`; `first` is then 0: that identity has no line).
    #[error(
        "credentials file line {line}: SIP identity {identity} of user {user:?} is already {}",
        owner(*.first, .other)
    )]
    SharedSipIdentity {
        /// The line of the second user's `sip` record, from 1.
        line: usize,
        /// The line of the first user's, or 0 when it is the first user's default identity.
        first: usize,
        /// The user of `line`.
        user: String,
        /// The user that has the identity already.
        other: String,
        /// The identity.
        identity: String,
    },
    /// A SIP identity given to [`FileCredentialStore::set_sip_identity`] is not one
    /// ([`is_valid_sip_identity`]).
    #[error(
        "not a SIP identity: want sip:user@host (or sips:) without spaces, control characters, '#', '<', '>', '\"' or a ':' in the user"
    )]
    BadSipIdentity,
}

/// Who has an identity already, for [`CredentialsError::SharedSipIdentity`].
fn owner(first: usize, other: &str) -> String {
    match first {
        0 => format!(
            "the default identity of user {other:?} (sip:<user>@auth.sip_domain): one identity per user"
        ),
        n => format!(
            "user {other:?}'s (line {n}): one identity per user, compared without ASCII case"
        ),
    }
}

/// Whether `uri` can be a user's SIP identity: `sip:` or `sips:`, a user and a host around one
/// `@`, and only printable ASCII without `#` (the file's comment mark), angle brackets or quotes
/// (the gateway writes the identity inside `<...>` in P-Asserted-Identity). Above all no line
/// break: the file holds one record per line, and a value with one would add records of the
/// writer's choice. No `:` in the user part: SIP reads `alice:x` as user `alice` with a
/// password, so the registrar would bind `sip:alice@…` for the identity `sip:alice:x@…`.
pub fn is_valid_sip_identity(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
    else {
        return false;
    };
    let Some((user, host)) = rest.split_once('@') else {
        return false;
    };
    uri.len() <= 256
        && !user.is_empty()
        && !user.contains(':')
        && !host.is_empty()
        && !host.contains('@')
        && uri
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'#' | b'<' | b'>' | b'"'))
}

/// The kinds of record a user has at most one of (`ha1`: one per realm and algorithm).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RecordKind {
    Nt,
    Sip,
    Ha1(String, Algorithm),
}

impl RecordKind {
    fn describe(&self) -> String {
        match self {
            RecordKind::Nt => "an nt record".to_owned(),
            RecordKind::Sip => "a sip record".to_owned(),
            RecordKind::Ha1(realm, alg) => {
                format!("an ha1 record for {} in realm {realm:?}", alg.token())
            }
        }
    }
}

/// A user a credentials reload removed or changed ([`FileCredentialStore::changed_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedUser {
    /// The user name (lower case).
    pub user: String,
    /// The SIP identity the store gave it before (`None`: the default, `sip:<user>@<sip_domain>`).
    pub sip_identity: Option<String>,
}

/// In-memory store, loaded from the file format above or filled by code.
#[derive(Default, Clone)]
pub struct FileCredentialStore {
    /// By user name. foldhash, seeded at random, rather than std's SipHash: the names are the
    /// operator's, so no client can place keys in the table, only look names up (every sign-in
    /// does, and a short name cost about 150 instructions under SipHash).
    users: HashMap<String, UserRecord, foldhash::fast::RandomState>,
    /// The `sip` identities users have, lower-cased, with how many users have each.
    sip_identities: HashMap<String, u32, foldhash::fast::RandomState>,
    /// The user parts of those identities ([`crate::address::canonical_user`]), with how many
    /// identities have each.
    sip_user_parts: HashMap<String, u32, foldhash::fast::RandomState>,
    /// The user names that a registrar reads otherwise than they are filed (`555-1234` is
    /// `5551234`), by that reading: the user part of their default identity.
    spelt_names: HashMap<String, Vec<String>, foldhash::fast::RandomState>,
    /// The line of each user's `sip` record, for a store [`parse`](Self::parse)d from a file
    /// (errors of [`check_identities`](Self::check_identities) name it).
    sip_lines: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for FileCredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are secrets: show only how many users there are.
        f.debug_struct("FileCredentialStore")
            .field("users", &self.users.len())
            .finish()
    }
}

impl FileCredentialStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        Self::load_as(path, SharedIdentities::Refused)
    }

    /// [`load`](Self::load), but two users with one `sip` identity are taken as written: for
    /// listing and removing users, which is how an operator mends such a file (the gateway
    /// refuses it).
    pub fn load_for_repair(path: &Path) -> Result<Self, CredentialsError> {
        Self::load_as(path, SharedIdentities::Allowed)
    }

    fn load_as(path: &Path, shared: SharedIdentities) -> Result<Self, CredentialsError> {
        let p = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|source| CredentialsError::Io {
                path: p.clone(),
                source,
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CredentialsError::WorldReadable { path: p, mode });
            }
        }
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse_as(&text, shared)
    }

    /// Parses the file format above (no permission check: that is [`load`](Self::load)'s).
    ///
    /// Refused as well: a second record of one kind for one user, names compared as lookups
    /// compare them (without case), and two users with one `sip` identity (ASCII case ignored)
    /// ([`CredentialsError::Duplicate`], [`CredentialsError::SharedSipIdentity`]). Whether a `sip`
    /// line takes another user's default identity depends on the SIP domain: that is
    /// [`check_identities`](Self::check_identities).
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        Self::parse_as(text, SharedIdentities::Refused)
    }

    fn parse_as(text: &str, shared: SharedIdentities) -> Result<Self, CredentialsError> {
        let mut store = FileCredentialStore::new();
        // Where each record was first seen: (user key, kind) -> line.
        let mut seen: HashMap<(String, RecordKind), usize> = HashMap::new();
        // The `sip` identities (ASCII lower case) -> (line, user as written).
        let mut owners: HashMap<String, (usize, String)> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let syntax = |what: &str| CredentialsError::Syntax {
                line,
                what: what.to_owned(),
            };
            let mut fields = content.splitn(3, char::is_whitespace);
            let user = fields.next().ok_or_else(|| syntax("missing user"))?;
            let kind = fields
                .next()
                .ok_or_else(|| syntax("missing record kind (nt, ha1, sip)"))?;
            let rest = fields.next().unwrap_or("").trim();
            let mut once = |kind: RecordKind| match seen.entry((user.to_lowercase(), kind)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    Err(CredentialsError::Duplicate {
                        line,
                        first: *first.get(),
                        user: user.to_owned(),
                        record: first.key().1.describe(),
                    })
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(line);
                    Ok(())
                }
            };
            match kind {
                "nt" => {
                    once(RecordKind::Nt)?;
                    let mut bytes = [0u8; 16];
                    sagw_hex::decode_to_slice(rest, &mut bytes)
                        .map_err(|_| syntax("nt wants 32 hex digits (the NT hash)"))?;
                    // `sagw user add` refuses an empty password; a line written by hand must not
                    // bring one back (anyone who knows the user name would sign in).
                    if bytes == *NtHash::from_password("").as_bytes() {
                        return Err(syntax("nt is the hash of an empty password"));
                    }
                    store.record(user).nt = Some(bytes);
                }
                "ha1" => {
                    let mut f = rest.splitn(3, char::is_whitespace);
                    let alg_token = f.next().unwrap_or("");
                    let algorithm = Algorithm::from_token(alg_token).ok_or_else(|| {
                        syntax("ha1 wants an algorithm: MD5, SHA-256 or SHA-512-256")
                    })?;
                    let hex = f.next().unwrap_or("");
                    Ha1::from_hex(algorithm, hex)
                        .map_err(|_| syntax("ha1 value is not a hash of that algorithm in hex"))?;
                    let realm = f.next().unwrap_or("").trim();
                    if realm.is_empty() {
                        return Err(syntax("ha1 wants a realm after the hash"));
                    }
                    once(RecordKind::Ha1(realm.to_owned(), algorithm))?;
                    store
                        .record(user)
                        .ha1
                        .push((realm.to_owned(), algorithm, hex.to_owned()));
                }
                "sip" => {
                    if !is_valid_sip_identity(rest) {
                        return Err(syntax(
                            "sip wants one sip:user@host URI without spaces or control characters",
                        ));
                    }
                    once(RecordKind::Sip)?;
                    match owners.entry(rest.to_ascii_lowercase()) {
                        std::collections::hash_map::Entry::Occupied(o)
                            if shared == SharedIdentities::Refused =>
                        {
                            let (first, other) = o.get().clone();
                            return Err(CredentialsError::SharedSipIdentity {
                                line,
                                first,
                                user: user.to_owned(),
                                other,
                                identity: rest.to_owned(),
                            });
                        }
                        std::collections::hash_map::Entry::Occupied(_) => {}
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert((line, user.to_owned()));
                        }
                    }
                    store.set_sip(user, rest);
                    store.sip_lines.insert(user.to_lowercase(), line);
                }
                _ => return Err(syntax("unknown record kind (nt, ha1, sip)")),
            }
        }
        Ok(store)
    }

    /// Refuses a store in which one user's `sip` identity is another user's default one,
    /// `sip:<user>@<sip_domain>` (ASCII case ignored, as [`CredentialStore::owns_identity`]
    /// compares): both would sign in as it. Two `sip` lines with one identity are refused by
    /// [`parse`](Self::parse) already; this needs the SIP domain, which the file does not say.
    pub fn check_identities(&self, sip_domain: &str) -> Result<(), CredentialsError> {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        for name in names {
            let Some(identity) = self.users[name].sip.as_deref() else {
                continue;
            };
            let lower = identity.to_ascii_lowercase();
            let Some((user, host)) = lower
                .strip_prefix("sip:")
                .and_then(|rest| rest.rsplit_once('@'))
            else {
                continue;
            };
            let other = key_of(user);
            if host.eq_ignore_ascii_case(sip_domain)
                && other.as_ref() != name.as_str()
                && self
                    .users
                    .get(other.as_ref())
                    .is_some_and(|r| r.sip.is_none())
            {
                return Err(CredentialsError::SharedSipIdentity {
                    line: self.sip_lines.get(name).copied().unwrap_or(0),
                    first: 0,
                    user: name.clone(),
                    other: other.into_owned(),
                    identity: identity.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn record(&mut self, user: &str) -> &mut UserRecord {
        let key = user.to_lowercase();
        if !self.users.contains_key(&key) {
            let read = crate::address::canonical_user(&key);
            if read != key {
                self.spelt_names.entry(read).or_default().push(key.clone());
            }
        }
        self.users.entry(key).or_default()
    }

    /// Adds a user from a password, keeping only its hashes. The user is filed lower case, as
    /// every lookup folds the name; its Digest HA1 is made over that name too (a Digest response
    /// is computed over the name the client sends, so clients must send it lower case; NTLM
    /// ignores the name's case).
    pub fn add_password(
        &mut self,
        user: &str,
        password: &str,
        digest_realms: &[(&str, Algorithm)],
    ) {
        let nt = *NtHash::from_password(password).as_bytes();
        let filed = key_of(user);
        let ha1: Vec<_> = digest_realms
            .iter()
            .map(|(realm, alg)| {
                let h = Ha1::compute(*alg, &filed, realm, password);
                ((*realm).to_owned(), *alg, h.to_hex())
            })
            .collect();
        let rec = self.record(user);
        rec.nt = Some(nt);
        rec.ha1
            .retain(|(r, a, _)| !ha1.iter().any(|(r2, a2, _)| r == r2 && a == a2));
        rec.ha1.extend(ha1);
    }

    /// Sets the SIP identity of `user`; refused unless [`is_valid_sip_identity`].
    pub fn set_sip_identity(&mut self, user: &str, uri: &str) -> Result<(), CredentialsError> {
        if !is_valid_sip_identity(uri) {
            return Err(CredentialsError::BadSipIdentity);
        }
        self.set_sip(user, uri);
        self.sip_lines.remove(&user.to_lowercase());
        Ok(())
    }

    /// `user`'s identity is `uri` from now on, in the record and in the reverse index.
    fn set_sip(&mut self, user: &str, uri: &str) {
        let before = self.record(user).sip.replace(uri.to_owned());
        if let Some(before) = before {
            self.forget_sip(&before);
        }
        *self
            .sip_identities
            .entry(uri.to_ascii_lowercase())
            .or_default() += 1;
        if let Some(user) = identity_user_part(uri) {
            *self.sip_user_parts.entry(user).or_default() += 1;
        }
    }

    fn forget_sip(&mut self, uri: &str) {
        fn forget(map: &mut HashMap<String, u32, foldhash::fast::RandomState>, key: String) {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        forget(&mut self.sip_identities, uri.to_ascii_lowercase());
        if let Some(user) = identity_user_part(uri) {
            forget(&mut self.sip_user_parts, user);
        }
    }

    /// Removes `user` (any case) and all its records; false if it was not there. The SAs it
    /// signed in to stay until revoked ([`crate::SecurityCore::revoke_user`]).
    pub fn remove(&mut self, user: &str) -> bool {
        let key = user.to_lowercase();
        self.sip_lines.remove(&key);
        let read = crate::address::canonical_user(&key);
        if let Some(names) = self.spelt_names.get_mut(&read) {
            names.retain(|n| *n != key);
            if names.is_empty() {
                self.spelt_names.remove(&read);
            }
        }
        match self.users.remove(&key) {
            Some(r) => {
                if let Some(sip) = r.sip {
                    self.forget_sip(&sip);
                }
                true
            }
            None => false,
        }
    }

    /// How many users have no HA1 for `realm` and `algorithm`: they cannot sign in with Digest
    /// there.
    pub fn users_without_ha1(&self, realm: &str, algorithm: Algorithm) -> usize {
        self.users
            .values()
            .filter(|r| {
                !r.ha1
                    .iter()
                    .any(|(rr, a, _)| rr == realm && *a == algorithm)
            })
            .count()
    }

    /// The user names, lower case, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Users of this store that `newer` removed or changed (any hash, realm or SIP identity), each
    /// with the SIP identity this store gave it: what they proved before no longer holds, so the
    /// SAs made from it must end.
    pub fn changed_in(&self, newer: &FileCredentialStore) -> Vec<ChangedUser> {
        let mut out: Vec<ChangedUser> = self
            .users
            .iter()
            .filter(|(name, rec)| newer.users.get(*name) != Some(*rec))
            .map(|(name, rec)| ChangedUser {
                user: name.clone(),
                sip_identity: rec.sip.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        out
    }

    /// The file form of this store.
    pub fn to_file_text(&self) -> String {
        let mut names: Vec<_> = self.users.keys().collect();
        names.sort();
        let mut out = String::from("# sagw credentials: hashes only (see docs). Keep mode 600.\n");
        for name in names {
            let rec = &self.users[name];
            if let Some(nt) = rec.nt {
                out.push_str(&format!("{name} nt {}\n", sagw_hex::encode_upper(nt)));
            }
            for (realm, alg, hex) in &rec.ha1 {
                out.push_str(&format!("{name} ha1 {} {hex} {realm}\n", alg.token()));
            }
            if let Some(sip) = &rec.sip {
                out.push_str(&format!("{name} sip {sip}\n"));
            }
        }
        out
    }
}

/// The user part of a `sip` line's identity, as a registrar looks it up.
fn identity_user_part(identity: &str) -> Option<String> {
    let canonical = crate::address::canonical_address(identity);
    crate::address::address_user(&canonical).map(str::to_owned)
}

/// `user` as the store keys it, lower case: borrowed when it is that already, as the names
/// clients send mostly are, so that a lookup copies nothing.
fn key_of(user: &str) -> Cow<'_, str> {
    if user
        .bytes()
        .any(|b| !b.is_ascii() || b.is_ascii_uppercase())
    {
        Cow::Owned(user.to_lowercase())
    } else {
        Cow::Borrowed(user)
    }
}

impl CredentialStore for FileCredentialStore {
    fn nt_hash(&self, user: &str) -> Option<NtHash> {
        self.users
            .get(key_of(user).as_ref())
            .and_then(|r| r.nt)
            .map(NtHash::from_bytes)
    }

    fn digest_ha1(&self, user: &str, realm: &str, algorithm: Algorithm) -> Option<Ha1> {
        let rec = self.users.get(key_of(user).as_ref())?;
        rec.ha1
            .iter()
            .find(|(r, a, _)| r == realm && *a == algorithm)
            .and_then(|(_, a, hex)| Ha1::from_hex(*a, hex).ok())
    }

    fn sip_identity(&self, user: &str) -> Option<String> {
        self.users
            .get(key_of(user).as_ref())
            .and_then(|r| r.sip.clone())
    }

    fn ntlm_user(&self, user: &str) -> Option<NtlmUser> {
        let r = self.users.get(key_of(user).as_ref())?;
        Some(NtlmUser {
            nt_hash: NtHash::from_bytes(r.nt?),
            sip_identity: r.sip.clone(),
        })
    }

    fn user_part_owners(&self, user: &str, _sip_domain: &str) -> usize {
        let by_default = |name: &str| self.users.get(name).is_some_and(|r| r.sip.is_none());
        let by_line = self.sip_user_parts.get(user).map_or(0, |n| *n as usize);
        let by_name = usize::from(by_default(key_of(user).as_ref()));
        let by_spelt_name = self
            .spelt_names
            .get(user)
            .map_or(0, |names| names.iter().filter(|n| by_default(n)).count());
        by_line + by_name + by_spelt_name
    }

    fn owns_identity(&self, identity: &str, sip_domain: &str) -> bool {
        let identity = identity.to_ascii_lowercase();
        if self.sip_identities.contains_key(&identity) {
            return true;
        }
        identity
            .strip_prefix("sip:")
            .and_then(|rest| rest.rsplit_once('@'))
            .is_some_and(|(user, host)| {
                host.eq_ignore_ascii_case(sip_domain)
                    && self
                        .users
                        .get(key_of(user).as_ref())
                        .is_some_and(|r| r.sip.is_none())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let text = "# comment\nalice nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
                    alice sip sip:alice@example.com  # trailing comment\n\
                    Bob nt 8846f7eaee8fb117ad06bdd830b7586c\n";
        let s = FileCredentialStore::parse(text).expect("parses");
        // MD4("password") in UTF-16LE.
        assert_eq!(
            s.nt_hash("ALICE").map(|h| *h.as_bytes()),
            Some(*NtHash::from_password("password").as_bytes())
        );
        assert_eq!(
            s.sip_identity("alice").as_deref(),
            Some("sip:alice@example.com")
        );
        assert!(s.nt_hash("bob").is_some());
        assert!(s.nt_hash("carol").is_none());
    }

    #[test]
    fn nt_wants_exactly_32_hex_digits_and_is_written_upper_case() {
        let good = "8846f7eaee8fb117ad06bdd830b7586c";
        let s = FileCredentialStore::parse(&format!("alice nt {good}\n")).expect("parses");
        assert!(
            s.to_file_text()
                .contains("alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n")
        );
        for bad in [
            &good[..30],
            &good[..31],
            &format!("{good}0")[..],
            &format!("{good}00")[..],
            "8846f7eaee8fb117ad06bdd830b7586g",
            "+846f7eaee8fb117ad06bdd830b7586c",
        ] {
            let err = FileCredentialStore::parse(&format!("alice nt {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("32 hex digits"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_hash_of_an_empty_password_is_refused() {
        let err = FileCredentialStore::parse(
            "alice nt 8846f7eaee8fb117ad06bdd830b7586c\nbob nt 31D6CFE0D16AE931B73C59D7E0C089C0\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CredentialsError::Syntax { line: 2, what } if what.contains("empty password")),
            "{err}"
        );
    }

    #[test]
    fn reports_line_numbers() {
        let err = FileCredentialStore::parse("alice nt 1234\n").unwrap_err();
        assert!(
            matches!(err, CredentialsError::Syntax { line: 1, .. }),
            "{err}"
        );
        let err = FileCredentialStore::parse("\n\nalice password secret\n").unwrap_err();
        assert!(
            matches!(err, CredentialsError::Syntax { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn add_password_round_trips_through_the_file_format_without_the_password() {
        let mut s = FileCredentialStore::new();
        s.add_password("carol", "S3cret!", &[("example.com", Algorithm::Sha256)]);
        let text = s.to_file_text();
        assert!(!text.contains("S3cret!"));
        let back = FileCredentialStore::parse(&text).expect("parses");
        let expect = Ha1::compute(Algorithm::Sha256, "carol", "example.com", "S3cret!").to_hex();
        assert_eq!(
            back.digest_ha1("carol", "example.com", Algorithm::Sha256)
                .map(|h| h.to_hex()),
            Some(expect)
        );
        assert!(
            back.digest_ha1("carol", "other", Algorithm::Sha256)
                .is_none()
        );
        assert!(format!("{back:?}").contains("users: 1"));
    }

    /// A user added as `Bob` is filed and listed as `bob`, so its Digest HA1 is `bob`'s: a client
    /// computes its response over the name it sends, and the name the operator sees is `bob`.
    /// Before, the HA1 was `Bob`'s and a client that wrote `bob` was refused a wrong password.
    #[test]
    fn the_digest_ha1_is_the_one_of_the_name_as_filed() {
        let mut s = FileCredentialStore::new();
        s.add_password("Bob", "pw", &[("r", Algorithm::Md5)]);
        assert_eq!(s.users().collect::<Vec<_>>(), ["bob"]);
        assert_eq!(
            s.digest_ha1("bob", "r", Algorithm::Md5).map(|h| h.to_hex()),
            Some(Ha1::compute(Algorithm::Md5, "bob", "r", "pw").to_hex())
        );
    }

    /// Names are looked up in any case: borrowed as they are when already lower case, lower-cased
    /// (Unicode rules) otherwise.
    #[test]
    fn lookups_ignore_the_case_of_the_name() {
        let mut s = FileCredentialStore::new();
        s.add_password("Bob", "pw", &[("r", Algorithm::Md5)]);
        s.add_password("J\u{c4}s\u{d8}n", "pw", &[("r", Algorithm::Md5)]);
        s.set_sip_identity("bob", "sip:robert@example.com")
            .expect("valid");
        for user in ["bob", "BOB", "bOb", "j\u{e4}s\u{f8}n", "J\u{c4}S\u{d8}N"] {
            assert!(s.nt_hash(user).is_some(), "{user}");
            assert!(s.digest_ha1(user, "r", Algorithm::Md5).is_some(), "{user}");
        }
        for user in ["bob", "BOB"] {
            assert_eq!(
                s.sip_identity(user).as_deref(),
                Some("sip:robert@example.com")
            );
        }
        for user in ["bo", "bobb", "b\u{f6}b", "j\u{e4}s\u{f8}"] {
            assert!(s.nt_hash(user).is_none(), "{user}");
            assert!(s.digest_ha1(user, "r", Algorithm::Md5).is_none(), "{user}");
            assert!(s.sip_identity(user).is_none(), "{user}");
        }
    }

    #[test]
    fn a_sip_identity_is_one_uri_on_one_line() {
        for ok in [
            "sip:alice@example.com",
            "sips:a.b+c@example.com;transport=tls",
        ] {
            assert!(is_valid_sip_identity(ok), "{ok}");
        }
        for bad in [
            "sip:alice@example.com\nbob nt 8846F7EAEE8FB117AD06BDD830B7586C",
            "sip:alice@example.com\r",
            "sip:alice@exa mple.com",
            "sip:alice@example.com\t",
            "sip:alice@example.com#x",
            "sip:alice@example.com>",
            "sip:alice:phone@example.com",
            "tel:+15551234",
            "sip:example.com",
            "sip:@example.com",
            "sip:alice@",
            "alice@example.com",
        ] {
            assert!(!is_valid_sip_identity(bad), "{bad:?}");
        }
        let mut s = FileCredentialStore::new();
        assert!(matches!(
            s.set_sip_identity("alice", "sip:a@example.com\nbob nt 00"),
            Err(CredentialsError::BadSipIdentity)
        ));
        assert!(s.sip_identity("alice").is_none());
        let err = FileCredentialStore::parse("alice sip sip:a@b c\n").unwrap_err();
        assert!(
            matches!(err, CredentialsError::Syntax { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn lists_the_users_a_newer_store_removed_or_changed() {
        let old = FileCredentialStore::parse(
            "alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
             bob nt 8846F7EAEE8FB117AD06BDD830B7586C\nbob sip sip:robert@example.com\n\
             carol nt 8846F7EAEE8FB117AD06BDD830B7586C\n",
        )
        .expect("old");
        let new = FileCredentialStore::parse(
            "alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
             carol nt 00000000000000000000000000000000\ndave nt 8846F7EAEE8FB117AD06BDD830B7586C\n",
        )
        .expect("new");
        assert_eq!(
            old.changed_in(&new),
            vec![
                ChangedUser {
                    user: "bob".into(),
                    sip_identity: Some("sip:robert@example.com".into())
                },
                ChangedUser {
                    user: "carol".into(),
                    sip_identity: None
                },
            ]
        );
        assert!(old.changed_in(&old.clone()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sagw-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("users");
        std::fs::write(&path, "alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            FileCredentialStore::load(&path),
            Err(CredentialsError::WorldReadable { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(FileCredentialStore::load(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn identities_the_store_owns() {
        let mut s = FileCredentialStore::parse(
            "alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
             bob nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
             bob sip sip:Carol@example.com\n",
        )
        .expect("parses");
        let owns = |s: &FileCredentialStore, id: &str| s.owns_identity(id, "example.com");
        assert!(owns(&s, "sip:alice@example.com"));
        assert!(owns(&s, "sip:ALICE@Example.COM"));
        assert!(owns(&s, "sip:carol@example.com"), "bob's sip line");
        assert!(!owns(&s, "sip:bob@example.com"), "bob signs in as carol");
        assert!(!owns(&s, "sip:alice@other.example"));
        assert!(!owns(&s, "sip:dave@example.com"));
        s.set_sip_identity("bob", "sip:robert@example.com")
            .expect("identity");
        assert!(!owns(&s, "sip:carol@example.com"), "replaced");
        assert!(owns(&s, "sip:robert@example.com"));
        assert!(s.remove("bob"));
        assert!(!owns(&s, "sip:robert@example.com"), "removed");
    }

    /// A second record of one kind for one user, with the name in any case (Unicode lower case,
    /// as lookups fold it), and a second user with one `sip` identity (ASCII case ignored) are
    /// refused with the line, the first line and the user; never a hash.
    #[test]
    fn a_user_or_an_identity_twice_is_refused_with_its_lines() {
        const NT: &str = "8846F7EAEE8FB117AD06BDD830B7586C";
        const HA1: &str = "939e7578ed9e3c518a452acee763bce9";
        let refused = |text: String| match FileCredentialStore::parse(&text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => {
                let shown = e.to_string();
                assert!(
                    !shown.contains("8846") && !shown.contains("939e"),
                    "{shown}"
                );
                e
            }
        };
        for (text, user) in [
            (format!("alice nt {NT}\n# x\nALICE nt {NT}\n"), "ALICE"),
            (
                format!("J\u{c4}s nt {NT}\n\nj\u{e4}s nt {NT}\n"),
                "j\u{e4}s",
            ),
            (
                "alice sip sip:a@example.com\n\nAlice sip sip:b@example.com\n".to_owned(),
                "Alice",
            ),
            (
                format!("alice ha1 MD5 {HA1} Realm One\n\naLice ha1 MD5 {HA1} Realm One\n"),
                "aLice",
            ),
        ] {
            match refused(text) {
                CredentialsError::Duplicate {
                    line: 3,
                    first: 1,
                    user: u,
                    ..
                } => assert_eq!(u, user),
                e => panic!("{e:?}"),
            }
        }
        // Other realms and algorithms are other records.
        let s = FileCredentialStore::parse(&format!(
            "alice ha1 MD5 {HA1} Realm One\nalice ha1 MD5 {HA1} Realm Two\n"
        ))
        .expect("two realms");
        assert!(s.digest_ha1("alice", "Realm Two", Algorithm::Md5).is_some());
        match refused(format!(
            "alice nt {NT}\nalice sip sip:Boss@example.com\nbob sip sip:boss@EXAMPLE.com\n"
        )) {
            CredentialsError::SharedSipIdentity {
                line: 3,
                first: 2,
                user,
                other,
                ..
            } => assert_eq!((user.as_str(), other.as_str()), ("bob", "alice")),
            e => panic!("{e:?}"),
        }
        // A `sip` line naming another user's default identity, once the domain is known.
        let s = FileCredentialStore::parse(&format!(
            "alice nt {NT}\nbob nt {NT}\nbob sip sip:ALICE@example.com\n"
        ))
        .expect("parses");
        assert!(s.check_identities("other.example").is_ok());
        match s.check_identities("Example.com") {
            Err(CredentialsError::SharedSipIdentity {
                line: 3,
                first: 0,
                user,
                other,
                ..
            }) => assert_eq!((user.as_str(), other.as_str()), ("bob", "alice")),
            e => panic!("{e:?}"),
        }
        // Its own default identity, or one of a user with a `sip` line of its own, is no clash.
        let s = FileCredentialStore::parse(&format!(
            "alice nt {NT}\nalice sip sip:a2@example.com\nbob nt {NT}\n\
             bob sip sip:alice@example.com\ncarol sip sip:carol@example.com\n"
        ))
        .expect("parses");
        assert!(s.check_identities("example.com").is_ok());
    }

    #[test]
    fn one_lookup_for_ntlm_answers_as_the_two_do() {
        // Only the required methods: the trait's default `ntlm_user`.
        struct TwoLookups(FileCredentialStore);
        impl CredentialStore for TwoLookups {
            fn nt_hash(&self, user: &str) -> Option<NtHash> {
                self.0.nt_hash(user)
            }
            fn digest_ha1(&self, user: &str, realm: &str, algorithm: Algorithm) -> Option<Ha1> {
                self.0.digest_ha1(user, realm, algorithm)
            }
            fn sip_identity(&self, user: &str) -> Option<String> {
                self.0.sip_identity(user)
            }
            fn owns_identity(&self, identity: &str, sip_domain: &str) -> bool {
                self.0.owns_identity(identity, sip_domain)
            }
            fn user_part_owners(&self, user: &str, sip_domain: &str) -> usize {
                self.0.user_part_owners(user, sip_domain)
            }
        }
        let text = "alice nt 8846F7EAEE8FB117AD06BDD830B7586C\n\
                    alice sip sip:a@example.com\n\
                    bob nt 8846F7EAEE8FB117AD06BDD830B7586D\n\
                    carol sip sip:c@example.com\n";
        let store = FileCredentialStore::parse(text).expect("parses");
        let two = TwoLookups(store.clone());
        let seen = |u: Option<NtlmUser>| u.map(|u| (*u.nt_hash.as_bytes(), u.sip_identity));
        for user in ["alice", "ALICE", "bob", "carol", "dave", ""] {
            assert_eq!(
                seen(store.ntlm_user(user)),
                seen(two.ntlm_user(user)),
                "{user}"
            );
        }
        assert_eq!(
            seen(store.ntlm_user("Alice"))
                .and_then(|(_, sip)| sip)
                .as_deref(),
            Some("sip:a@example.com")
        );
        assert!(store.ntlm_user("carol").is_none(), "no NT hash");
    }
}
