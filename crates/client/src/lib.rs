//! The operator client for sagw: the client side of [MS-SIPAE] (NTLM connectionless, Kerberos) and
//! SIP Digest, as a library and as the `sagw-client` tool (`probe`, `load`).
//!
//! * [`endpoint::Endpoint`] is sans-IO: it builds requests, reads responses and says what to do next
//!   ([`endpoint::Step`]); time and randomness come in, so recorded flows replay exactly.
//! * [`sa::ClientSa`] signs what the client sends and verifies every server signature.
//! * [`transport`] and [`session`] drive endpoints over UDP, TCP and TLS with tokio.
//! * [`load`] runs many endpoints and summarises throughput, latency and failures.

pub mod endpoint;
pub mod kinit;
pub mod load;
pub mod sa;
pub mod session;
pub mod transport;
pub mod util;

pub use endpoint::{
    Answer, AuthScheme, Completed, Endpoint, EndpointConfig, Event, Failure, LocalAddr, Password,
    Registration, Step,
};
pub use sa::{BadSignature, ClientMechanism, ClientSa, Family, SaScheme, SaTerms, SignatureCheck};
