//! Thin owned wrappers over the raw GSS-API handles of `libgssapi-sys`.
//!
//! The safe `libgssapi` crate cannot be used for the context itself: its
//! `verify_mic` reports any major status other than `GSS_S_COMPLETE` as an
//! error (so MIT's supplementary sequencing bits would reject valid
//! signatures), its context handle is private, and it has no
//! `gss_acquire_cred_from` (keytab / replay cache / ccache per credential).
//! Everything here is a small RAII layer; all `unsafe` of the crate lives in
//! this file and in `profile.rs`.

use std::ffi::{CString, c_int, c_void};
use std::ptr;

use libgssapi_sys as sys;
use zeroize::Zeroize;

/// DER body of the Kerberos V5 GSS mechanism OID 1.2.840.113554.1.2.2.
pub(crate) const OID_MECH_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
/// GSS_KRB5_NT_PRINCIPAL_NAME 1.2.840.113554.1.2.2.1: a `krb5_parse_name` string.
pub(crate) const OID_NT_KRB5_PRINCIPAL: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01];
/// GSS_C_NT_HOSTBASED_SERVICE 1.2.840.113554.1.2.1.4: `service@host`.
pub(crate) const OID_NT_HOSTBASED: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04];
/// GSS_C_INQ_SSPI_SESSION_KEY 1.2.840.113554.1.2.2.5.5.
const OID_INQ_SESSION_KEY: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x05, 0x05,
];
/// GSS_KRB5_SESSION_KEY_ENCTYPE_OID 1.2.840.113554.1.2.2.4; MIT appends the
/// enctype number as one more arc.
const OID_SESSION_KEY_ENCTYPE_PREFIX: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x04];

const GSS_C_INDEFINITE: u32 = 0xffff_ffff;
const GSS_C_GSS_CODE: c_int = 1;
const GSS_C_MECH_CODE: c_int = 2;

/// Major status routine-error numbers (RFC 2744 §3.9.1), shifted down.
pub(crate) mod routine {
    pub const BAD_MECH: u32 = 1;
    pub const BAD_NAME: u32 = 2;
    pub const BAD_NAMETYPE: u32 = 3;
    pub const BAD_BINDINGS: u32 = 4;
    pub const BAD_SIG: u32 = 6;
    pub const NO_CRED: u32 = 7;
    pub const NO_CONTEXT: u32 = 8;
    pub const DEFECTIVE_TOKEN: u32 = 9;
    pub const DEFECTIVE_CREDENTIAL: u32 = 10;
    pub const CREDENTIALS_EXPIRED: u32 = 11;
    pub const CONTEXT_EXPIRED: u32 = 12;
    pub const FAILURE: u32 = 13;
}

const CONTINUE_NEEDED: u32 = 1;

/// A (major, minor) pair as returned by every GSS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub major: u32,
    pub minor: u32,
}

impl Status {
    /// GSS_ERROR(): calling or routine error bits. Supplementary bits
    /// (DUPLICATE/OLD/UNSEQ/GAP, CONTINUE_NEEDED) are deliberately excluded.
    pub fn is_error(self) -> bool {
        self.major & 0xffff_0000 != 0
    }

    pub fn routine_error(self) -> u32 {
        (self.major >> 16) & 0xff
    }

    pub fn continue_needed(self) -> bool {
        self.major & CONTINUE_NEEDED != 0
    }

    /// The minor status as the signed `krb5_error_code` MIT put there.
    pub fn krb5_code(self) -> i32 {
        self.minor as i32
    }

    /// MIT's own text for both codes, e.g. "Unspecified GSS failure.  Minor
    /// code may provide more information (Request is a replay)".
    pub fn message(self) -> String {
        let mut text = display_status(self.major, GSS_C_GSS_CODE);
        if self.minor != 0 {
            text.push_str(" (");
            text.push_str(&display_status(self.minor, GSS_C_MECH_CODE));
            text.push(')');
        }
        text
    }
}

fn display_status(code: u32, kind: c_int) -> String {
    let mut out = String::new();
    let mut message_context: u32 = 0;
    // MIT returns one line per call; bound the loop in case a mechanism
    // never clears message_context.
    for _ in 0..8 {
        let mut minor = 0u32;
        let mut buf = Buffer::empty();
        // SAFETY: all pointers are valid for the call; `buf` is released by
        // its Drop with gss_release_buffer.
        let major = unsafe {
            sys::gss_display_status(
                &mut minor,
                code,
                kind,
                ptr::null_mut(),
                &mut message_context,
                buf.as_out(),
            )
        };
        if major & 0xffff_0000 != 0 {
            if out.is_empty() {
                out = format!("unknown status code {code:#x}");
            }
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&String::from_utf8_lossy(buf.as_slice()));
        if message_context == 0 {
            break;
        }
    }
    out
}

/// An output buffer allocated by the GSS library.
pub(crate) struct Buffer(sys::gss_buffer_desc);

impl Buffer {
    pub fn empty() -> Self {
        Buffer(sys::gss_buffer_desc {
            length: 0,
            value: ptr::null_mut(),
        })
    }

    pub fn as_out(&mut self) -> sys::gss_buffer_t {
        &mut self.0
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.0.value.is_null() || self.0.length == 0 {
            &[]
        } else {
            // SAFETY: the library hands out `length` readable bytes at `value`.
            unsafe { std::slice::from_raw_parts(self.0.value.cast::<u8>(), self.0.length) }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// Overwrites the library's copy (e.g. of an exported context, which
    /// holds keys) before it is released.
    pub fn wipe(&mut self) {
        if !self.0.value.is_null() && self.0.length > 0 {
            // SAFETY: `length` writable bytes owned by this buffer.
            unsafe { std::slice::from_raw_parts_mut(self.0.value.cast::<u8>(), self.0.length) }
                .zeroize();
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if !self.0.value.is_null() {
            let mut minor = 0;
            // SAFETY: the buffer was filled by a GSS call.
            unsafe { sys::gss_release_buffer(&mut minor, &mut self.0) };
        }
    }
}

/// An input buffer borrowing Rust memory. GSS never writes through input
/// buffers; the `*mut` is only what the C prototypes ask for.
pub(crate) fn input(bytes: &[u8]) -> sys::gss_buffer_desc {
    sys::gss_buffer_desc {
        length: bytes.len(),
        value: bytes.as_ptr().cast_mut().cast::<c_void>(),
    }
}

fn oid(bytes: &'static [u8]) -> sys::gss_OID_desc {
    sys::gss_OID_desc {
        // The OID constants above are a dozen bytes long.
        length: bytes.len() as u32,
        elements: bytes.as_ptr().cast_mut().cast::<c_void>(),
    }
}

/// An imported GSS name.
pub(crate) struct Name(sys::gss_name_t);

// SAFETY: a GSS name is an immutable heap object once imported; moving the
// owning handle to another thread is fine (it is never shared).
unsafe impl Send for Name {}

impl Name {
    pub fn import(text: &str, name_type: &'static [u8]) -> Result<Self, Status> {
        let mut buf = input(text.as_bytes());
        let mut nt = oid(name_type);
        let mut name: sys::gss_name_t = ptr::null_mut();
        let mut minor = 0;
        // SAFETY: `buf` and `nt` outlive the call; MIT copies both.
        let major = unsafe { sys::gss_import_name(&mut minor, &mut buf, &mut nt, &mut name) };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        Ok(Name(name))
    }

    pub fn display(&self) -> Result<String, Status> {
        let mut out = Buffer::empty();
        let mut minor = 0;
        // SAFETY: self.0 is a valid name; the name type is not requested.
        let major =
            unsafe { sys::gss_display_name(&mut minor, self.0, out.as_out(), ptr::null_mut()) };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        Ok(String::from_utf8_lossy(out.as_slice()).into_owned())
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: the name came from gss_import_name / accept.
            unsafe { sys::gss_release_name(&mut minor, &mut self.0) };
        }
    }
}

/// Which way a credential is used.
#[derive(Clone, Copy)]
pub(crate) enum Usage {
    Accept,
    Initiate,
}

/// A GSS credential handle.
pub(crate) struct Cred(sys::gss_cred_id_t);

// SAFETY: MIT credentials carry their own mutex (k5_mutex in
// krb5_gss_cred_id_rec): gss_accept_sec_context locks it for the whole call,
// so concurrent use of one acceptor credential from several threads is
// serialised inside the library. Release happens once, in Drop.
unsafe impl Send for Cred {}
// SAFETY: see above.
unsafe impl Sync for Cred {}

impl Cred {
    /// `gss_acquire_cred_from` restricted to the krb5 mechanism, with a cred
    /// store of `(key, value)` pairs ("keytab", "rcache", "ccache").
    pub fn acquire_from(
        name: Option<&Name>,
        usage: Usage,
        store: &[(&str, &str)],
    ) -> Result<Self, CredError> {
        let pairs: Vec<(CString, CString)> = store
            .iter()
            .map(|(k, v)| Ok((CString::new(*k)?, CString::new(*v)?)))
            .collect::<Result<_, std::ffi::NulError>>()
            .map_err(|_| CredError::Nul)?;
        let mut elements: Vec<sys::gss_key_value_element_desc> = pairs
            .iter()
            .map(|(k, v)| sys::gss_key_value_element_desc {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let set = sys::gss_key_value_set_desc {
            count: elements.len() as u32,
            elements: elements.as_mut_ptr(),
        };
        let mut mech = oid(OID_MECH_KRB5);
        let mut mechs = sys::gss_OID_set_desc {
            count: 1,
            elements: &mut mech,
        };
        let mut cred: sys::gss_cred_id_t = ptr::null_mut();
        let mut minor = 0;
        let usage = match usage {
            Usage::Accept => sys::GSS_C_ACCEPT,
            Usage::Initiate => sys::GSS_C_INITIATE,
        } as sys::gss_cred_usage_t;
        // SAFETY: every pointer refers to locals that outlive the call; MIT
        // copies the store values it keeps.
        let major = unsafe {
            sys::gss_acquire_cred_from(
                &mut minor,
                name.map_or(ptr::null_mut(), |n| n.0),
                GSS_C_INDEFINITE,
                &mut mechs,
                usage,
                if elements.is_empty() {
                    ptr::null()
                } else {
                    &set
                },
                &mut cred,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(CredError::Gss(st));
        }
        Ok(Cred(cred))
    }
}

impl Drop for Cred {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: the handle came from gss_acquire_cred_from.
            unsafe { sys::gss_release_cred(&mut minor, &mut self.0) };
        }
    }
}

pub(crate) enum CredError {
    /// A store value contained a NUL byte.
    Nul,
    Gss(Status),
}

/// What a completed `gss_accept_sec_context` returned.
pub(crate) struct AcceptOutcome {
    pub ctx: Context,
    pub source: Name,
    pub output: Buffer,
    pub time_rec: u32,
}

/// What `gss_accept_sec_context` returned besides success.
pub(crate) enum AcceptFailure {
    /// The mechanism wants another leg (DCE style or IAKERB).
    ContinueNeeded,
    Gss(Status),
}

/// A security context handle (acceptor or initiator).
pub(crate) struct Context(sys::gss_ctx_id_t);

// SAFETY: a GSS context may move between threads; what RFC 2744 forbids is
// concurrent calls on one context, which `SecContext` prevents with a mutex.
unsafe impl Send for Context {}

impl Context {
    pub fn accept(cred: &Cred, token: &[u8]) -> Result<AcceptOutcome, AcceptFailure> {
        let mut minor = 0;
        let mut ctx: sys::gss_ctx_id_t = ptr::null_mut();
        let mut tok = input(token);
        let mut source: sys::gss_name_t = ptr::null_mut();
        let mut output = Buffer::empty();
        let mut time_rec = 0u32;
        // SAFETY: pointers are valid for the call. Delegated credentials are
        // declined by passing NULL, channel bindings are not used.
        let major = unsafe {
            sys::gss_accept_sec_context(
                &mut minor,
                &mut ctx,
                cred.0,
                &mut tok,
                ptr::null_mut(),
                &mut source,
                ptr::null_mut(),
                output.as_out(),
                ptr::null_mut(),
                &mut time_rec,
                ptr::null_mut(),
            )
        };
        // Own everything at once so every exit path releases it.
        let ctx = Context(ctx);
        let source = Name(source);
        let st = Status { major, minor };
        if st.is_error() {
            return Err(AcceptFailure::Gss(st));
        }
        if st.continue_needed() {
            return Err(AcceptFailure::ContinueNeeded);
        }
        Ok(AcceptOutcome {
            ctx,
            source,
            output,
            time_rec,
        })
    }

    /// A fresh, not yet started initiator context.
    pub fn new_initiator() -> Self {
        Context(ptr::null_mut())
    }

    /// One `gss_init_sec_context` step. Returns the output token and whether
    /// the context is complete.
    pub fn init_step(
        &mut self,
        cred: &Cred,
        target: &Name,
        req_flags: u32,
        input_token: Option<&[u8]>,
    ) -> Result<(Buffer, bool), Status> {
        let mut minor = 0;
        let mut mech = oid(OID_MECH_KRB5);
        let mut tok = input_token.map(input);
        let mut output = Buffer::empty();
        // SAFETY: pointers are valid for the call; self.0 is null (first
        // call) or the handle from a previous step.
        let major = unsafe {
            sys::gss_init_sec_context(
                &mut minor,
                cred.0,
                &mut self.0,
                target.0,
                &mut mech,
                req_flags,
                0,
                ptr::null_mut(),
                tok.as_mut()
                    .map_or(ptr::null_mut(), |t| t as sys::gss_buffer_t),
                ptr::null_mut(),
                output.as_out(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        Ok((output, !st.continue_needed()))
    }

    pub fn get_mic(&mut self, message: &[u8]) -> Result<Vec<u8>, Status> {
        let mut minor = 0;
        let mut msg = input(message);
        let mut token = Buffer::empty();
        // SAFETY: self.0 is an established context.
        let major = unsafe { sys::gss_get_mic(&mut minor, self.0, 0, &mut msg, token.as_out()) };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        Ok(token.to_vec())
    }

    /// `gss_verify_mic`, returning the full status: callers decide which
    /// supplementary bits matter.
    pub fn verify_mic(&mut self, message: &[u8], token: &[u8]) -> Status {
        let mut minor = 0;
        let mut msg = input(message);
        let mut tok = input(token);
        let mut qop: sys::gss_qop_t = 0;
        // SAFETY: self.0 is an established context; inputs outlive the call.
        let major =
            unsafe { sys::gss_verify_mic(&mut minor, self.0, &mut msg, &mut tok, &mut qop) };
        Status { major, minor }
    }

    /// `gss_export_sec_context`: the context as an interprocess token (key
    /// material: the caller wipes it). MIT deactivates the context on
    /// success, so `self` holds no context afterwards (re-import the token to
    /// keep using it); on failure the context is left as it was.
    pub fn export(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, Status> {
        let mut minor = 0;
        let mut token = Buffer::empty();
        // SAFETY: self.0 is an established context; MIT sets it to
        // GSS_C_NO_CONTEXT when the export succeeds.
        let major = unsafe { sys::gss_export_sec_context(&mut minor, &mut self.0, token.as_out()) };
        let st = Status { major, minor };
        let bytes = zeroize::Zeroizing::new(token.to_vec());
        token.wipe();
        if st.is_error() {
            return Err(st);
        }
        Ok(bytes)
    }

    /// `gss_import_sec_context`: a context from a token [`Context::export`]
    /// made (in this process or another one linked to the same library).
    pub fn import(token: &[u8]) -> Result<Self, Status> {
        let mut minor = 0;
        let mut tok = input(token);
        let mut ctx: sys::gss_ctx_id_t = ptr::null_mut();
        // SAFETY: `tok` borrows `token` for the call; MIT copies what it keeps.
        let major = unsafe { sys::gss_import_sec_context(&mut minor, &mut tok, &mut ctx) };
        let ctx = Context(ctx);
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        Ok(ctx)
    }

    /// The enctype of the key protecting per-message tokens (the subkey if
    /// one was negotiated), read through GSS_C_INQ_SSPI_SESSION_KEY. The key
    /// bytes MIT returns alongside are wiped before release.
    pub fn session_enctype(&self) -> Result<Option<i32>, Status> {
        let mut minor = 0;
        let mut inq = oid(OID_INQ_SESSION_KEY);
        let mut set: sys::gss_buffer_set_t = ptr::null_mut();
        // SAFETY: self.0 is an established context.
        let major =
            unsafe { sys::gss_inquire_sec_context_by_oid(&mut minor, self.0, &mut inq, &mut set) };
        let st = Status { major, minor };
        if st.is_error() {
            return Err(st);
        }
        let mut enctype = None;
        if !set.is_null() {
            // SAFETY: MIT returned a set of `count` buffers.
            let buffers: &mut [sys::gss_buffer_desc] = unsafe {
                let s = &mut *set;
                if s.elements.is_null() {
                    &mut []
                } else {
                    std::slice::from_raw_parts_mut(s.elements, s.count)
                }
            };
            if let Some(key) = buffers.first_mut()
                && !key.value.is_null()
            {
                // SAFETY: `length` writable bytes owned by the set.
                unsafe { std::slice::from_raw_parts_mut(key.value.cast::<u8>(), key.length) }
                    .zeroize();
            }
            if let Some(oid_buf) = buffers.get(1)
                && !oid_buf.value.is_null()
            {
                // SAFETY: `length` readable bytes owned by the set.
                let bytes = unsafe {
                    std::slice::from_raw_parts(oid_buf.value.cast::<u8>(), oid_buf.length)
                };
                enctype = parse_enctype_oid(bytes);
            }
            let mut minor2 = 0;
            // SAFETY: the set came from gss_inquire_sec_context_by_oid.
            unsafe { sys::gss_release_buffer_set(&mut minor2, &mut set) };
        }
        Ok(enctype)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: the handle came from accept/init and is deleted once.
            unsafe { sys::gss_delete_sec_context(&mut minor, &mut self.0, ptr::null_mut()) };
        }
    }
}

/// Decode the trailing arc of `1.2.840.113554.1.2.2.4.<enctype>`.
fn parse_enctype_oid(bytes: &[u8]) -> Option<i32> {
    let rest = bytes.strip_prefix(OID_SESSION_KEY_ENCTYPE_PREFIX)?;
    if rest.is_empty() || rest.len() > 4 {
        return None;
    }
    let mut value: u32 = 0;
    for (i, b) in rest.iter().enumerate() {
        value = (value << 7) | u32::from(b & 0x7f);
        let last = i + 1 == rest.len();
        if (b & 0x80 == 0) != last {
            return None;
        }
    }
    i32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enctype_oid_arcs() {
        let mut aes = OID_SESSION_KEY_ENCTYPE_PREFIX.to_vec();
        aes.push(18);
        assert_eq!(parse_enctype_oid(&aes), Some(18));
        let mut big = OID_SESSION_KEY_ENCTYPE_PREFIX.to_vec();
        big.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_enctype_oid(&big), Some(128));
        let mut unterminated = OID_SESSION_KEY_ENCTYPE_PREFIX.to_vec();
        unterminated.push(0x81);
        assert_eq!(parse_enctype_oid(&unterminated), None);
        assert_eq!(parse_enctype_oid(OID_MECH_KRB5), None);
    }

    #[test]
    fn supplementary_bits_are_not_errors() {
        // GSS_S_DUPLICATE_TOKEN (bit 1) | GSS_S_UNSEQ_TOKEN (bit 3)
        let st = Status {
            major: 0b1010,
            minor: 0,
        };
        assert!(!st.is_error());
        let bad_sig = Status {
            major: routine::BAD_SIG << 16,
            minor: 0,
        };
        assert!(bad_sig.is_error());
        assert_eq!(bad_sig.routine_error(), routine::BAD_SIG);
    }
}
