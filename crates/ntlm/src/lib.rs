//! Connectionless NTLMv2 server side for [MS-SIPAE] (SIP authentication as used by
//! Office Communicator / Lync / Skype for Business clients and pidgin-sipe).
//!
//! The crate is sans-IO: it has no sockets, no clock and no random number generator. Callers pass
//! `now: SystemTime`, the 8-byte server challenge and (for the [`initiator`]) every random value.
//!
//! # Flow ([MS-NLMP] 3.2.5.2, connectionless, no NEGOTIATE_MESSAGE)
//!
//! 1. [`NtlmAcceptor::challenge`] builds the CHALLENGE_MESSAGE (flags `0xE29882F3`, like OCS/Lync)
//!    as a small [`PendingHandshake`]. Everything in the message but the server challenge and the
//!    MsvAvTimestamp is constant per acceptor, so a caller need not keep it under the SIP `opaque`:
//!    one that can give the same two values again at the final leg (say, a keyed MAC of the
//!    `opaque` and a time window as the challenge, the window's start as the timestamp) rebuilds
//!    the same handshake then, byte for byte, and stores nothing in between.
//! 2. [`AuthenticateMessage::parse`] bounds-checks the client's AUTHENTICATE_MESSAGE; the caller
//!    looks up the user's [`NtHash`] by [`AuthenticateMessage::user`] / [`AuthenticateMessage::domain`].
//! 3. [`PendingHandshake::accept`] verifies the NTLMv2 proof (NTProofStr), the MIC when the client
//!    flags one, and the client timestamp, and derives an [`NtlmSession`]. A server that has the
//!    NTLMv2 response verified by the domain (winbind) splits this step:
//!    [`PendingHandshake::precheck`] (the checks needing no key; gives the NT response to send),
//!    then [`PendingHandshake::accept_with_session_base_key`] with the key the domain returned
//!    (KEY_EXCH, MIC, timestamp, the same session).
//! 4. [`NtlmSession`] signs and verifies [MS-SIPAE] message signatures (connectionless GSS_GetMIC
//!    with the constant sequence number 100).
//!
//! Only NTLMv2 with extended session security (ESS), SIGN and KEY_EXCH is accepted: LM, NTLMv1
//! and anonymous AUTHENTICATE messages are refused with [`NtlmError::NotNtlmV2`], and messages
//! without ESS with [`NtlmError::MissingFlags`]. Without ESS the MS-SIPAE signature is a
//! CRC32 masked by an RC4 keystream that is the same for every message (sequence number fixed at
//! 100), so one observed signature lets anyone forge all others; the non-ESS MAC is still
//! available for *verifying* old OCS 2007 peers through [`NtlmSession::non_ess_from_seal_key`].
//!
//! The user and domain of an accepted AUTHENTICATE are authenticated (they enter NTOWFv2; the
//! user name case-insensitively). The workstation name is not, unless the client sent a MIC.
//!
//! # Why not the `sspi` crate
//!
//! `sspi`'s NTLM server expects a NEGOTIATE_MESSAGE first (connection-oriented only), does not
//! verify NTProofStr itself, and keeps a running RC4 state per context, whereas MS-SIPAE needs
//! connectionless NTLM with a fresh RC4 key per message. This crate is a small hand-written
//! implementation on the RustCrypto primitives (`md4`, `md-5`, `rc4`) instead.
//!
//! # Performance notes
//!
//! With MS-SIPAE's constant sequence number the per-message RC4 key `MD5(SealKey || LE32(100))` is
//! constant per direction, so an [`NtlmSession`] stores the first 8 keystream bytes, and it keeps the
//! HMAC-MD5 inner/outer states of each signing key: a signature costs the MD5 blocks of the buffer
//! plus one block, no key schedule. The session is [`NtlmSession::SIZE`] bytes.
//!
//! [MS-SIPAE]: https://learn.microsoft.com/en-us/openspecs/office_protocols/ms-sipae/
//! [MS-NLMP]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authenticate;
mod challenge;
pub mod crypto;
mod error;
pub mod flags;
pub mod initiator;
mod session;
pub mod time;

pub use authenticate::AuthenticateMessage;
pub use challenge::{
    Accepted, AcceptorConfig, NtlmAcceptor, PendingHandshake, Prechecked, ServerIdentity,
};
pub use crypto::{Key16, NtHash};
pub use error::{LegacyAuth, NtlmError};
pub use session::{NtlmSession, SIPAE_SEQ_NUM, signature_from_hex, signature_to_hex};
