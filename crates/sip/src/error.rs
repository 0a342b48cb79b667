//! Error types of the crate boundary.

/// Why a SIP message (or a header value inside one) was rejected.
///
/// Line numbers are 1-based and count physical lines of the message, the start line being line 1.
/// Every variant maps to a local decision: a datagram that fails to parse is dropped or answered
/// with 400 (505 for [`ParseError::UnsupportedVersion`]); a stream that fails to frame must be closed,
/// because message boundaries can no longer be trusted.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ends before the message does (no blank line after the headers yet, or, on a stream,
    /// fewer body bytes than Content-Length announces).
    #[error("incomplete message")]
    Incomplete,
    /// The start line is neither a well-formed Request-Line nor a well-formed Status-Line
    /// (single SP separators, method token, 3-digit status code, URI with a scheme, `SIP/x.y`).
    #[error("malformed start line")]
    BadStartLine,
    /// The start line is well formed but its SIP-Version is not `SIP/2.0` (answer 505).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A header line has no valid `token *WSP ":"` prefix, or a continuation line has no header to
    /// continue.
    #[error("malformed header on line {line}")]
    BadHeader {
        /// Physical line number (1-based).
        line: usize,
    },
    /// A CR or LF that is not part of a CRLF pair inside the start line or the headers. Such
    /// messages are rejected because peers disagree about where such a line ends.
    #[error("bare CR or LF on line {line}")]
    BareLineEnding {
        /// Physical line number (1-based).
        line: usize,
    },
    /// The start line or the headers are not valid UTF-8.
    #[error("invalid UTF-8 on line {line}")]
    NotUtf8 {
        /// Physical line number (1-based).
        line: usize,
    },
    /// A physical line is longer than [`crate::Limits::max_line_bytes`].
    #[error("line {line} exceeds the line length limit")]
    LineTooLong {
        /// Physical line number (1-based).
        line: usize,
    },
    /// Content-Length is not `1*DIGIT` or does not fit in memory.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// More than one Content-Length header: framing would be ambiguous (RFC 4475 §3.3.9).
    #[error("multiple Content-Length headers")]
    MultipleContentLength,
    /// A datagram holds fewer body bytes than Content-Length announces (RFC 3261 §18.3: discard).
    #[error("body shorter than Content-Length ({available} of {expected} bytes)")]
    BodyTooShort {
        /// Content-Length value.
        expected: usize,
        /// Body bytes actually present.
        available: usize,
    },
    /// More header fields than [`crate::Limits::max_headers`].
    #[error("too many headers")]
    TooManyHeaders,
    /// The message (headers and body) is larger than [`crate::Limits::max_message_bytes`].
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header the operation requires is absent (e.g. Content-Length on a stream, or a mandatory
    /// RFC 3261 §8.1.1 header in [`crate::Message::validate`]).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that must appear once appears several times (RFC 4475 §3.3.8).
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    /// A header value does not match its grammar (e.g. CSeq number above 2^31-1, unparsable From).
    #[error("malformed {0} header value")]
    BadHeaderValue(&'static str),
    /// A name-addr / addr-spec value is malformed (unterminated quote, whitespace inside the URI,
    /// non-token display name, trailing garbage, no URI scheme).
    #[error("malformed name-addr")]
    BadNameAddr,
    /// The CSeq method differs from the request method (RFC 4475 §3.1.2.17).
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
}

/// Why an authentication header value (challenge, credentials or Authentication-Info) was rejected.
/// `at` is the byte offset in the value where the problem was found.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthParseError {
    /// The value is empty or only whitespace.
    #[error("empty authentication header")]
    Empty,
    /// The value does not start with a scheme token.
    #[error("missing or malformed auth scheme at byte {at}")]
    BadScheme {
        /// Byte offset.
        at: usize,
    },
    /// A parameter name is missing or not a token.
    #[error("malformed parameter name at byte {at}")]
    BadParamName {
        /// Byte offset.
        at: usize,
    },
    /// A parameter has no value after `=`, or the value is neither a token nor a quoted-string.
    #[error("malformed parameter value at byte {at}")]
    BadParamValue {
        /// Byte offset.
        at: usize,
    },
    /// A quoted-string has no closing quote.
    #[error("unterminated quoted-string at byte {at}")]
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        at: usize,
    },
    /// The same parameter name (case-insensitively) appears twice in one challenge/credentials.
    #[error("duplicate parameter {name}")]
    DuplicateParam {
        /// The second occurrence's name as written.
        name: String,
    },
    /// Unexpected characters (e.g. a missing comma between parameters, an empty list element).
    #[error("unexpected input at byte {at}")]
    Garbage {
        /// Byte offset.
        at: usize,
    },
    /// [`crate::AuthHeader::parse`] found more than one challenge; use
    /// [`crate::auth::parse_challenges`] for such values.
    #[error("more than one challenge in one value")]
    MultipleChallenges,
    /// One challenge or credentials value has more parameters than [`crate::auth::MAX_PARAMS`].
    #[error("too many parameters (more than {max})")]
    TooManyParams {
        /// The limit.
        max: usize,
    },
    /// A value lists more challenges than [`crate::auth::MAX_CHALLENGES`].
    #[error("too many challenges (more than {max})")]
    TooManyChallenges {
        /// The limit.
        max: usize,
    },
}
