//! SIP Digest authentication.
