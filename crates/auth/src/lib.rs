//! MS-SIPAE security core: challenges, security associations (SAs), signing and verification, and
//! Digest, without I/O.
//!
//! The gateway hands every message from a client to [`SecurityCore::on_request`] or
//! [`SecurityCore::on_response`] and gets a [`Decision`]; every message it sends to an authenticated
//! client goes through [`SecurityCore::sign`]. Time (`SystemTime` values) and randomness ([`Rng`]) are
//! arguments, so a recorded flow replays byte for byte and an 8-hour expiry is a one-line test.
//!
//! Layers: `sagw-sip` parses messages; `sagw-ntlm` and `sagw-digest` do the mechanism maths; the
//! Kerberos acceptor plugs in through [`KerberosBackend`]. This crate builds the signature buffer
//! ([`SignatureBuffer`]), owns the SAs ([`SaManager`]) and decides.
#![warn(missing_docs)]

mod address;
pub mod buffer;
pub mod config;
pub mod counters;
pub mod credentials;
pub mod date;
pub mod decision;
pub mod directory;
pub mod domain;
pub mod handshake;
pub mod jobs;
pub mod kerberos;
#[cfg(feature = "kerberos-mit")]
pub mod kerberos_mit;
pub mod manager;
pub mod policy;
pub mod pool;
pub mod replay;
pub mod rng;
pub mod sa;
pub use sa::NewSa;
pub mod security;

pub use buffer::{BufferParams, SignatureBuffer};
pub use config::{
    ChallengeFamily, ChallengePolicy, CoreConfig, DEFAULT_MAX_EPID_LEN,
    DEFAULT_MAX_SAS_PER_IDENTITY, DigestSettings, HandshakeLimits, MAX_SA_LIFETIME, NtlmSettings,
    SignatureHeader,
};
pub use counters::{Counters, CountersSnapshot, Reason, Scheme};
pub use credentials::{
    ChangedUser, CredentialStore, CredentialsError, FileCredentialStore, NtlmUser,
    is_valid_sip_identity,
};
pub use decision::{
    Authenticated, Binding, Challenge, Decision, Forbidden, ResponseVerdict, Transport,
    TransportContext,
};
pub use directory::{AccountDirectory, DirectoryAnswer, DirectoryUnavailable, DomainAccount};
pub use domain::{
    DomainError, DomainNtlmJob, DomainNtlmOutcome, DomainNtlmRequest, DomainNtlmVerifier,
    DomainRefusal, DomainSettings, DomainVerified,
};
pub use handshake::{ChallengeKey, ChallengeSource, RecordedChallenges};
pub use jobs::{AuthJob, AuthOutcome, JobKind};
pub use kerberos::{
    KerberosAccepted, KerberosBackend, KerberosJob, KerberosOutcome, KerberosRejection,
    KerberosReplayRegistry, NoReplayRegistry, ReplayCheck,
};
pub use manager::{
    Established, FinalLegRefusal, OpaqueTaken, SaHandle, SaInfo, SaLookup, SaManager,
};
pub use policy::{AuthPolicy, DigestOffer, PolicyError, PolicyId, PolicyOffer, SchemeSet};
pub use pool::{PoolJournal, RecordError, SaProgress, SaRecord, SaResume, SaSecret};
pub use rng::{Rng, ScriptedRng, XorShiftRng};
pub use sa::{GssSession, Mechanism, Opaque, SaScheme, SecurityAssociation};
pub use security::{SecurityCore, SignError, uri_names_identity};
