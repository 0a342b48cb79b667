//! Wire-exact SIP messages: parse, inspect, edit and serialise without I/O.
//!
//! Built for a signing edge proxy ([MS-SIPAE] and Digest): a signature covers header values
//! byte for byte, so this crate never normalises what it did not change.
//!
//! * [`Message::parse`] takes one whole message (a UDP datagram); [`StreamFramer`] cuts a TCP/TLS
//!   byte stream into messages and RFC 5626 keep-alives.
//! * The message keeps its received bytes and an index of offsets found with a memchr scan; every
//!   accessor returns slices of those bytes (header names in their wire case, values trimmed of
//!   surrounding whitespace but otherwise raw: a folded header's value keeps its inner CRLF and
//!   leading whitespace).
//! * Edits ([`Message::push_header`], [`Message::set_header`], ...) are recorded beside the
//!   original; serialisation copies every untouched header line verbatim.
//! * [`parse_name_addr`] gives the From/To URI and tag exactly as the MS-SIPAE signature buffer
//!   needs them; [`auth`] parses and builds authentication header values.
//!
//! What is checked where:
//! * [`Message::parse`] enforces the message syntax a proxy needs to forward safely: start line
//!   grammar (SIP/2.0 only by default, 3-digit status code, single-SP separators, Request-URI with
//!   a scheme and no `<>`/spaces), CRLF line ends (bare CR or LF rejected), header name tokens,
//!   folding, UTF-8 in the head, one well-formed Content-Length, and the [`Limits`].
//! * [`Message::validate`] adds the RFC 3261 §8.1.1 whole-message rules (mandatory headers once,
//!   CSeq range and method, Max-Forwards range, parsable From/To).
//! * Semantics (URI schemes, Via branch, Date format, Require, ...) belong to higher layers.
//!
//! No function in this crate panics on any input; errors are [`ParseError`] and
//! [`AuthParseError`].
//!
//! Conformance: `tests/rfc4475.rs` states, for each of the 49 RFC 4475 messages, which layer
//! accepts or rejects it (and which higher layer must act on the semantically bad ones);
//! `tests/flows.rs` rebuilds the MS-SIPAE signature buffers of the recorded OC 2007 R2 sign-in
//! from this crate's accessors. Lines must end with CRLF: bare LF is rejected rather than
//! guessed at, because a proxy that splits lines differently from its next hop can be made to
//! forward headers it never inspected.
//!
//! ```
//! use sagw_sip::Message;
//! let raw = b"REGISTER sip:cosmo.local SIP/2.0\r\n\
//!             From: <sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15\r\n\
//!             To: <sip:user@cosmo.local>\r\n\
//!             i: 4037df9284354df39065195bd57a4b14\r\n\
//!             CSeq: 3 REGISTER\r\n\
//!             Content-Length: 0\r\n\r\n";
//! let mut m = Message::parse(raw).unwrap();
//! assert_eq!(m.method(), Some("REGISTER"));
//! assert_eq!(m.call_id(), Some("4037df9284354df39065195bd57a4b14"));
//! assert_eq!(m.from().unwrap().tag(), Some("3e49177a52"));
//! assert_eq!(m.cseq().unwrap().number, "3");
//! assert_eq!(m.to_bytes(), raw);
//! m.push_header("Authentication-Info", "NTLM rspauth=\"01\"");
//! assert!(m.to_bytes().ends_with(b"Content-Length: 0\r\nAuthentication-Info: NTLM rspauth=\"01\"\r\n\r\n"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
mod error;
mod framer;
mod message;
mod name;
mod name_addr;
mod parse;
mod scan;
mod writer;

pub use auth::{AuthHeader, AuthHeaderBuilder, AuthParam, mentions_gssapi_data, parse_challenges};
pub use error::{AuthParseError, ParseError};
pub use framer::{Frame, KeepAliveKind, StreamFramer};
pub use message::{CSeq, CoreHeaders, Header, HeaderNames, Kind, Message};
pub use name_addr::{
    NameAddr, ParamPairs, TagAndEpid, parse_name_addr, parse_name_addr_tagged, uri_without_params,
};
pub use parse::{Limits, VersionPolicy};
pub use writer::ResponseWriter;
