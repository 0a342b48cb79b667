//! Per-message protection shared by the acceptor and initiator sessions.

use std::fmt;

use parking_lot::Mutex;

use crate::error::{KerberosError, Op};
use crate::ffi::Context;

/// The Kerberos enctype of the key that protects per-message tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Enctype {
    /// aes128-cts-hmac-sha1-96 (17)
    Aes128CtsHmacSha1,
    /// aes256-cts-hmac-sha1-96 (18)
    Aes256CtsHmacSha1,
    /// aes128-cts-hmac-sha256-128 (19, RFC 8009)
    Aes128CtsHmacSha256,
    /// aes256-cts-hmac-sha384-192 (20, RFC 8009)
    Aes256CtsHmacSha384,
    /// rc4-hmac / arcfour-hmac (23, RFC 4757)
    Rc4Hmac,
    /// Anything else (des3, camellia, ...), by number.
    Other(i32),
}

impl Enctype {
    pub(crate) fn from_number(n: i32) -> Self {
        match n {
            17 => Enctype::Aes128CtsHmacSha1,
            18 => Enctype::Aes256CtsHmacSha1,
            19 => Enctype::Aes128CtsHmacSha256,
            20 => Enctype::Aes256CtsHmacSha384,
            23 => Enctype::Rc4Hmac,
            other => Enctype::Other(other),
        }
    }

    /// The token framing MIT uses for this enctype.
    pub fn mic_format(self) -> MicFormat {
        match self {
            Enctype::Rc4Hmac => MicFormat::Rfc4757,
            Enctype::Other(16) => MicFormat::Rfc1964Des3,
            _ => MicFormat::Rfc4121,
        }
    }

    /// Length of a MIC token in bytes, when fixed by the enctype.
    pub fn mic_len(self) -> Option<usize> {
        match self {
            // 16-byte RFC 4121 header + truncated HMAC.
            Enctype::Aes128CtsHmacSha1 | Enctype::Aes256CtsHmacSha1 => Some(28),
            Enctype::Aes128CtsHmacSha256 => Some(32),
            Enctype::Aes256CtsHmacSha384 => Some(40),
            // GSS framing + OID + 24-byte RFC 1964 token with 8-byte checksum.
            Enctype::Rc4Hmac => Some(37),
            Enctype::Other(_) => None,
        }
    }
}

/// MIC token framing ([MS-SIPAE] signatures are the hex of these tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MicFormat {
    /// RFC 4121 MIC token `04 04 ...` (AES and newer enctypes).
    Rfc4121,
    /// RFC 4757 / RFC 1964 framing with the krb5 OID (RC4-HMAC).
    Rfc4757,
    /// RFC 1964 framing with DES3 (legacy).
    Rfc1964Des3,
}

/// A GSS supplementary status reported with a *valid* MIC when the peer
/// asked for replay/sequence detection. Informational only: [MS-SIPAE]
/// replay protection is the cnum window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SequenceWarning {
    /// GSS_S_DUPLICATE_TOKEN: this token was verified before.
    Duplicate,
    /// GSS_S_OLD_TOKEN: too old to tell whether it is a duplicate.
    Old,
    /// GSS_S_UNSEQ_TOKEN: a later token was already verified.
    Unsequenced,
    /// GSS_S_GAP_TOKEN: an earlier expected token was skipped.
    Gap,
}

impl SequenceWarning {
    fn from_major(major: u32) -> Option<Self> {
        // RFC 2744 supplementary bits 1..4.
        if major & (1 << 1) != 0 {
            Some(SequenceWarning::Duplicate)
        } else if major & (1 << 2) != 0 {
            Some(SequenceWarning::Old)
        } else if major & (1 << 3) != 0 {
            Some(SequenceWarning::Unsequenced)
        } else if major & (1 << 4) != 0 {
            Some(SequenceWarning::Gap)
        } else {
            None
        }
    }
}

/// An established context behind a mutex: RFC 2744 forbids concurrent calls
/// on one context, and `gss_get_mic`/`gss_verify_mic` mutate its sequence
/// state.
pub(crate) struct SecContext {
    ctx: Mutex<Context>,
    enctype: Option<Enctype>,
}

impl SecContext {
    pub fn new(ctx: Context) -> Self {
        // The enctype is informative; a library that cannot report it still
        // yields a working context.
        let enctype = ctx
            .session_enctype()
            .ok()
            .flatten()
            .map(Enctype::from_number);
        SecContext {
            ctx: Mutex::new(ctx),
            enctype,
        }
    }

    /// A context still being established (initiator awaiting the AP-REP).
    pub fn new_pending(ctx: Context) -> Self {
        SecContext {
            ctx: Mutex::new(ctx),
            enctype: None,
        }
    }

    pub fn refresh_enctype(&mut self) {
        self.enctype = self
            .ctx
            .get_mut()
            .session_enctype()
            .ok()
            .flatten()
            .map(Enctype::from_number);
    }

    pub fn context_mut(&mut self) -> &mut Context {
        self.ctx.get_mut()
    }

    pub fn enctype(&self) -> Option<Enctype> {
        self.enctype
    }

    /// The context as a `gss_export_sec_context` token, the context staying
    /// usable here: MIT's export deactivates it, so it is imported back in
    /// place under the lock (no MIC can run in between).
    pub fn export(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, KerberosError> {
        let mut ctx = self.ctx.lock();
        let token = ctx
            .export()
            .map_err(|st| KerberosError::from_status(Op::Transfer, st))?;
        *ctx =
            Context::import(&token).map_err(|st| KerberosError::from_status(Op::Transfer, st))?;
        Ok(token)
    }

    /// A context from an exported token.
    pub fn import(token: &[u8]) -> Result<Self, KerberosError> {
        let ctx =
            Context::import(token).map_err(|st| KerberosError::from_status(Op::Transfer, st))?;
        Ok(SecContext::new(ctx))
    }

    pub fn get_mic(&self, buffer: &[u8]) -> Result<Vec<u8>, KerberosError> {
        self.ctx
            .lock()
            .get_mic(buffer)
            .map_err(|st| KerberosError::from_status(Op::GetMic, st))
    }

    /// Accepts the supplementary DUPLICATE/OLD/UNSEQ/GAP statuses: MS-SIPAE
    /// replay protection is the caller's cnum window, and MIT only reports
    /// these after the checksum has verified.
    pub fn verify_mic(
        &self,
        buffer: &[u8],
        token: &[u8],
    ) -> Result<Option<SequenceWarning>, KerberosError> {
        let st = self.ctx.lock().verify_mic(buffer, token);
        if st.is_error() {
            return Err(KerberosError::from_status(Op::VerifyMic, st));
        }
        Ok(SequenceWarning::from_major(st.major))
    }
}

impl fmt::Debug for SecContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material; the enctype is all that is useful.
        f.debug_struct("SecContext")
            .field("enctype", &self.enctype)
            .finish_non_exhaustive()
    }
}
