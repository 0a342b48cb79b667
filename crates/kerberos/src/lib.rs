//! Kerberos for [MS-SIPAE] security associations: MIT krb5 through GSS-API.
//!
//! A Lync/OC client sends `gssapi-data=<base64 AP-REQ>` for the service
//! principal `sip/<fqdn>@REALM`. [`KerberosAcceptor::accept`] verifies it in
//! one leg and returns the client principal, the ticket end and, when the
//! client asked for mutual authentication, the AP-REP to send back. From then
//! on signatures are GSS MIC tokens over the signature buffer (hex on the
//! wire): 28-byte RFC 4121 tokens for AES session keys, 37-byte RFC 4757
//! tokens for RC4-HMAC ([`Enctype::mic_len`]).
//!
//! # Why MIT krb5 through GSS-API
//!
//! * The acceptor needs a keytab reader, a replay cache, clock-skew and
//!   ticket-time checks, PAC-tolerant ticket decoding, and RC4-HMAC plus the
//!   AES enctypes. MIT implements all of it and is the implementation the
//!   KDCs and Linux clients we interoperate with use, so behaviour (and its
//!   error texts) match what operators already know.
//! * The bindings are `libgssapi-sys` (the raw layer of `libgssapi` 0.11).
//!   The safe `libgssapi` API turns supplementary statuses into errors in
//!   `verify_mic`, hides the context handle, and lacks
//!   `gss_acquire_cred_from`, which gives this crate a per-acceptor keytab
//!   and replay cache without touching process environment variables.
//! * Pure-Rust alternatives were rejected: `kerberos_asn1`/`kerberos_crypto`
//!   are AGPL (incompatible with this MIT/Apache project), and picky-krb has
//!   messages and crypto but no acceptor, keytab or replay cache.
//!
//! # Replay protection
//!
//! * AP-REQs: MIT's replay cache. By default (`replay_cache: None`) it is
//!   `dfl:`, a file `krb5_<euid>.rcache2` in `$KRB5RCACHEDIR` or `/var/tmp`;
//!   set [`KerberosConfig::replay_cache`] (e.g. `file2:/var/lib/sagw/rc`) to
//!   give the gateway its own file on a local disk. Each accept opens the
//!   file, takes an exclusive lock, reads one or two 16-byte records of a
//!   hash table, writes one and closes it (no `fsync`). `benches/kerberos.rs`
//!   measures a whole accept at roughly 0.1 ms on a loaded 2-core VM, about
//!   a third less with the cache on tmpfs: the cost is file I/O (keytab,
//!   replay cache, profile checks), not cryptography. Gateways behind one load balancer do
//!   not share it: the security core adds a cross-node check keyed by
//!   [`authenticator_ciphertext`] (sagw-auth's `KerberosReplayRegistry`).
//! * Signatures: the caller's `cnum` window. GSS sequencing statuses
//!   (duplicate/old/unsequenced/gap) are therefore *not* errors in
//!   [`KerberosSession::verify_mic`]; a bad checksum is.
//!
//! # Clock skew
//!
//! MIT checks the authenticator time and the ticket times against the
//! krb5.conf `[libdefaults] clockskew` (default 300 s); the GSS API offers no
//! per-call knob and the authenticator is only visible to MIT. So
//! [`KerberosAcceptor::new`] reads the effective value through libkrb5 and
//! refuses to start when it exceeds [`KerberosConfig::max_clock_skew`].
//!
//! # Lifetime
//!
//! [`Accepted::ticket_end`] is the service ticket's end time. MIT 1.20 keeps
//! `get_mic`/`verify_mic` working after it (it only reports
//! `GSS_S_CONTEXT_EXPIRED`, mapped to [`KerberosError::ContextExpired`], in
//! older releases), so the caller must expire the SA at
//! `min(ticket_end, 8 h)`; `tests/expiry.rs` pins this behaviour down.
//!
//! # Threads
//!
//! [`KerberosAcceptor`] and [`KerberosSession`] are `Send + Sync`. MIT holds
//! the credential lock for a whole accept, so one acceptor accepts one
//! AP-REQ at a time; sessions serialise their own calls with a mutex.
//!
//! # Clock and I/O
//!
//! Unlike the protocol crates this one is not sans-IO: MIT reads the system
//! clock, the keytab and the replay cache. It is kept behind this small API
//! so the security core can substitute a fake in its own tests.

mod acceptor;
mod context;
mod error;
mod ffi;
pub mod initiator;
mod profile;
mod token;

pub use acceptor::{Accepted, ClientRealms, KerberosAcceptor, KerberosConfig, KerberosSession};
pub use context::{Enctype, MicFormat, SequenceWarning};
pub use error::{Fault, KerberosError};
pub use token::authenticator_ciphertext;
