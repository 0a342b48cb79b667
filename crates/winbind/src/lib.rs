//! NTLMv2 responses verified by the Windows domain through Samba's winbind.
//!
//! A gateway that serves NTLM without a credentials file never sees a password or an NT hash: it
//! hands the server challenge and the client's NTLMv2 response to the domain (winbindd forwards it
//! to a domain controller over NETLOGON, `NetrLogonSamLogonEx`), which answers with the account's
//! *user session key* (the NTLMv2 SessionBaseKey) or the NT status of the refusal. This is what
//! Microsoft's own servers, FreeRADIUS and Squid do.
//!
//! # Why libwbclient and not the `ntlm_auth` helper
//!
//! Samba offers two doors to the same winbindd call: the `ntlm_auth --helper-protocol=ntlm-server-1`
//! helper (a process speaking a line protocol on stdin/stdout) and libwbclient's
//! `wbcAuthenticateUserEx` (a request on winbindd's privileged socket). This crate takes the
//! library:
//! * no process per sign-in or pool of helper processes to supervise, restart and keep in step
//!   (the 4.17 helper even ends a failed reply with two `.` lines, which desynchronises a reader
//!   that stops at the first: the next request gets the previous answer);
//! * the refusal comes back as a typed NT status (`NT_STATUS_ACCOUNT_LOCKED_OUT`, ...), not as
//!   localised display text to parse;
//! * cost: one call measured ~6.5 ms against a local Samba DC (the helper ~8 ms per request once
//!   running, 50–60 ms for a first one that starts the process), nearly all of it the DC's work.
//!
//! The library is loaded at run time (`dlopen("libwbclient.so.0")`, [`Library::load`]): a gateway
//! that does not use the domain needs no Samba package, and the binary links nothing new.
//! Every call blocks on a socket round trip to winbindd (and winbindd's to the DC): call it on
//! worker threads, one [`Context`] per thread (`wbcCtxCreate`: the library's global context is
//! not safe to share between threads).
//!
//! # Machine accounts
//!
//! `parameter_control` is 0: no `MSV1_0_ALLOW_WORKSTATION_TRUST_ACCOUNT` (0x800) nor
//! `MSV1_0_ALLOW_SERVER_TRUST_ACCOUNT` (0x20). An earlier build passed 0x820 (what `ntlm_auth`
//! passes), which let a computer account (`PC1$`, whose password every local administrator of
//! that machine can read) sign in as a SIP user. The DC now refuses those logons
//! (`NT_STATUS_NOLOGON_WORKSTATION_TRUST_ACCOUNT`), and [`Context::authenticate_response`] refuses a
//! user name ending in `$` before asking, in case a domain treats the flags differently.
//!
//! # Layouts
//!
//! The structures below follow `wbclient.h` (Samba 4.x, `WBCLIENT_MAJOR_VERSION 0`): they have
//! not changed since the `wbcCtx*` functions appeared (libwbclient 0.12, Samba 4.2). The size
//! assertions pin the x86-64/aarch64 (LP64) layout.

#![warn(missing_docs)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Arc;

use zeroize::Zeroize;

/// The library Debian's `libwbclient0` installs (soname).
pub const DEFAULT_LIBRARY: &str = "libwbclient.so.0";

// wbcErr values (enum _wbcErrType).
const WBC_ERR_SUCCESS: c_int = 0;
const WBC_ERR_NOT_IMPLEMENTED: c_int = 1;
const WBC_ERR_UNKNOWN_FAILURE: c_int = 2;
const WBC_ERR_NO_MEMORY: c_int = 3;
const WBC_ERR_INVALID_PARAM: c_int = 5;
const WBC_ERR_WINBIND_NOT_AVAILABLE: c_int = 6;
const WBC_ERR_DOMAIN_NOT_FOUND: c_int = 7;
const WBC_ERR_INVALID_RESPONSE: c_int = 8;
const WBC_ERR_AUTH_ERROR: c_int = 10;
const WBC_ERR_UNKNOWN_USER: c_int = 11;

/// enum wbcAuthUserLevel: WBC_AUTH_USER_LEVEL_RESPONSE.
const WBC_AUTH_USER_LEVEL_RESPONSE: c_int = 3;
/// No MSV1_0_ALLOW_*_TRUST_ACCOUNT: machine accounts are refused by the DC (see the crate docs).
/// MSV1_0_DONT_TRY_GUEST_ACCOUNT: an unknown name with any response must not fall back to the
/// Guest account where the domain has it enabled.
const PARAMETER_CONTROL: u32 = 0x0000_0010;
/// `WBC_AUTH_USER_INFO_GUEST` in `user_flags`: the logon was made as Guest.
const WBC_AUTH_USER_INFO_GUEST: u32 = 0x0000_0001;

/// `password.response` of `struct wbcAuthUserParams`: the largest member of the union (40 bytes,
/// pointer-aligned), so it stands for the whole union.
#[repr(C)]
struct WbcResponse {
    challenge: [u8; 8],
    nt_length: u32,
    nt_data: *const u8,
    lm_length: u32,
    lm_data: *const u8,
}

/// `struct wbcAuthUserParams` with the response member of its password union.
#[repr(C)]
struct WbcAuthUserParams {
    account_name: *const c_char,
    domain_name: *const c_char,
    workstation_name: *const c_char,
    flags: u32,
    parameter_control: u32,
    level: c_int,
    password: WbcResponse,
}

/// `struct wbcAuthUserInfo`.
#[repr(C)]
struct WbcAuthUserInfo {
    user_flags: u32,
    account_name: *mut c_char,
    user_principal: *mut c_char,
    full_name: *mut c_char,
    domain_name: *mut c_char,
    dns_domain_name: *mut c_char,
    acct_flags: u32,
    user_session_key: [u8; 16],
    lm_session_key: [u8; 8],
    logon_count: u16,
    bad_password_count: u16,
    logon_time: u64,
    logoff_time: u64,
    kickoff_time: u64,
    pass_last_set_time: u64,
    pass_can_change_time: u64,
    pass_must_change_time: u64,
    logon_server: *mut c_char,
    logon_script: *mut c_char,
    profile_path: *mut c_char,
    home_directory: *mut c_char,
    home_drive: *mut c_char,
    num_sids: u32,
    sids: *mut c_void,
}

/// `struct wbcAuthErrorInfo`.
#[repr(C)]
struct WbcAuthErrorInfo {
    nt_status: u32,
    nt_string: *mut c_char,
    pam_error: i32,
    display_string: *mut c_char,
}

/// `struct wbcInterfaceDetails` (libwbclient 0.6 on: non-const members).
#[repr(C)]
struct WbcInterfaceDetails {
    interface_version: u32,
    winbind_version: *mut c_char,
    winbind_separator: c_char,
    netbios_name: *mut c_char,
    netbios_domain: *mut c_char,
    dns_domain: *mut c_char,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<WbcInterfaceDetails>() == 48);
    assert!(std::mem::offset_of!(WbcInterfaceDetails, netbios_domain) == 32);
    assert!(std::mem::size_of::<WbcResponse>() == 40);
    assert!(std::mem::size_of::<WbcAuthUserParams>() == 80);
    assert!(std::mem::offset_of!(WbcAuthUserParams, password) == 40);
    assert!(std::mem::offset_of!(WbcAuthUserInfo, user_session_key) == 52);
    assert!(std::mem::offset_of!(WbcAuthUserInfo, logon_time) == 80);
    assert!(std::mem::size_of::<WbcAuthUserInfo>() == 184);
    assert!(std::mem::size_of::<WbcAuthErrorInfo>() == 32);
};

type CtxCreate = unsafe extern "C" fn() -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxPing = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxAuthenticateUserEx = unsafe extern "C" fn(
    *mut c_void,
    *const WbcAuthUserParams,
    *mut *mut WbcAuthUserInfo,
    *mut *mut WbcAuthErrorInfo,
) -> c_int;
type CtxInterfaceDetails =
    unsafe extern "C" fn(*mut c_void, *mut *mut WbcInterfaceDetails) -> c_int;
type FreeMemory = unsafe extern "C" fn(*mut c_void);

/// Why the library could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed (not installed, wrong path).
    #[error("cannot load {library}: {detail}")]
    Open {
        /// The name or path given.
        library: String,
        /// The loader's message.
        detail: String,
    },
    /// The library lacks a function this crate needs (libwbclient older than 0.12).
    #[error("{library} has no {symbol} (libwbclient 0.12 / Samba 4.2 or later is needed)")]
    Symbol {
        /// The name or path given.
        library: String,
        /// The missing function.
        symbol: &'static str,
    },
}

/// libwbclient, loaded. Shared by every worker thread; each makes its own [`Context`].
pub struct Library {
    name: String,
    ctx_create: CtxCreate,
    ctx_free: CtxFree,
    ctx_ping: CtxPing,
    ctx_authenticate: CtxAuthenticateUserEx,
    ctx_interface_details: CtxInterfaceDetails,
    free_memory: FreeMemory,
    /// Keeps the function pointers above valid; never unloaded before them.
    _lib: libloading::Library,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("name", &self.name).finish()
    }
}

impl Library {
    /// Loads `name` (a soname such as [`DEFAULT_LIBRARY`], or a path) and finds its functions.
    pub fn load(name: &str) -> Result<Arc<Library>, LoadError> {
        // SAFETY: loading libwbclient runs its initialisers, which only set up library state
        // (talloc contexts, no threads, no signal handlers).
        let lib = unsafe { libloading::Library::new(name) }.map_err(|e| LoadError::Open {
            library: name.to_owned(),
            detail: e.to_string(),
        })?;
        fn sym<T: Copy>(
            lib: &libloading::Library,
            name: &str,
            symbol: &'static str,
        ) -> Result<T, LoadError> {
            // SAFETY: each type above is the prototype `wbclient.h` declares for the symbol.
            unsafe { lib.get::<T>(symbol.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| LoadError::Symbol {
                    library: name.to_owned(),
                    symbol,
                })
        }
        Ok(Arc::new(Library {
            name: name.to_owned(),
            ctx_create: sym(&lib, name, "wbcCtxCreate")?,
            ctx_free: sym(&lib, name, "wbcCtxFree")?,
            ctx_ping: sym(&lib, name, "wbcCtxPing")?,
            ctx_authenticate: sym(&lib, name, "wbcCtxAuthenticateUserEx")?,
            ctx_interface_details: sym(&lib, name, "wbcCtxInterfaceDetails")?,
            free_memory: sym(&lib, name, "wbcFreeMemory")?,
            _lib: lib,
        }))
    }

    /// The name or path it was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A context for one thread (its own connection to winbindd).
    pub fn context(self: &Arc<Self>) -> Result<Context, Unavailable> {
        // SAFETY: no arguments; returns NULL when out of memory.
        let ctx = unsafe { (self.ctx_create)() };
        if ctx.is_null() {
            return Err(Unavailable("wbcCtxCreate failed (out of memory)".into()));
        }
        Ok(Context {
            lib: Arc::clone(self),
            ctx,
        })
    }
}

/// The domain winbindd's host is joined to, by both its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedDomain {
    /// NetBIOS name (`EXAMPLE`).
    pub netbios: String,
    /// DNS name (`example.com`); empty when winbindd has none.
    pub dns: String,
}

impl JoinedDomain {
    /// Whether `domain` (as a logon's reply names an account's domain) is this one, by either
    /// name, ASCII case ignored.
    pub fn is(&self, domain: &str) -> bool {
        !domain.is_empty()
            && (domain.eq_ignore_ascii_case(&self.netbios)
                || domain.eq_ignore_ascii_case(&self.dns))
    }
}

/// winbindd (or the domain controller behind it) could not answer: not a refusal of the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("domain unavailable: {0}")]
pub struct Unavailable(pub String);

/// Why the domain refused a logon, from its NT status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `NT_STATUS_WRONG_PASSWORD`: the response does not match the account's password (or the
    /// server challenge). Also what disabled or expired accounts give with a wrong password.
    WrongPassword,
    /// `NT_STATUS_ACCOUNT_DISABLED`.
    AccountDisabled,
    /// `NT_STATUS_ACCOUNT_LOCKED_OUT` (the domain's lockout policy; with any password).
    AccountLockedOut,
    /// `NT_STATUS_ACCOUNT_EXPIRED`.
    AccountExpired,
    /// `NT_STATUS_PASSWORD_EXPIRED`.
    PasswordExpired,
    /// `NT_STATUS_PASSWORD_MUST_CHANGE` (set to change at next logon).
    PasswordMustChange,
    /// `NT_STATUS_NO_SUCH_USER` (or the library's unknown-user error).
    NoSuchUser,
    /// A computer or trust account (`PC1$`): never a SIP user.
    MachineAccount,
    /// Any other refusal (`NT_STATUS_LOGON_FAILURE`, logon hours, workstation restrictions...).
    Other,
}

/// A refusal with the status behind it, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What it means for the sign-in.
    pub refusal: Refusal,
    /// The NT status (0 when the library refused without one).
    pub nt_status: u32,
    /// `NT_STATUS_...` as winbind named it, when it did.
    pub nt_string: String,
}

/// Why [`Context::authenticate_response`] gave no session key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogonError {
    /// The domain answered no.
    #[error("refused by the domain: {} ({:#010x})", .0.nt_string, .0.nt_status)]
    Refused(Refused),
    /// No answer from the domain.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// An NTLMv2 logon to verify: the names exactly as the client's AUTHENTICATE carried them (they
/// are part of the NTLMv2 proof), the server challenge and the NT response. Its `Debug` shows the
/// names only: the challenge and the response together allow an offline password search.
#[derive(Clone, Copy)]
pub struct ResponseLogon<'a> {
    /// Account name as sent.
    pub user: &'a str,
    /// Domain as sent (may be empty: the DC's own domain then).
    pub domain: &'a str,
    /// Workstation name as sent (the DC may check logon workstations against it).
    pub workstation: &'a str,
    /// The 8-byte server challenge of the CHALLENGE_MESSAGE.
    pub server_challenge: [u8; 8],
    /// NTProofStr followed by the NTLMv2 client challenge blob.
    pub nt_response: &'a [u8],
}

impl std::fmt::Debug for ResponseLogon<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseLogon")
            .field("user", &self.user)
            .field("domain", &self.domain)
            .field("workstation", &self.workstation)
            .finish_non_exhaustive()
    }
}

/// A logon the domain accepted.
pub struct Logon {
    /// The account name as the domain spells it (`alice`).
    pub account_name: String,
    /// The account's NetBIOS domain (`EXAMPLE`).
    pub domain_name: String,
    /// The user session key: for NTLMv2, the SessionBaseKey. Secret: zeroized on drop.
    pub user_session_key: [u8; 16],
}

impl Drop for Logon {
    fn drop(&mut self) {
        self.user_session_key.zeroize();
    }
}

impl std::fmt::Debug for Logon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logon")
            .field("account_name", &self.account_name)
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}

/// One thread's connection to winbindd (`struct wbcContext`). `Send` (it may move to the thread
/// that uses it), not `Sync`: calls take `&mut self`.
pub struct Context {
    lib: Arc<Library>,
    ctx: *mut c_void,
}

// SAFETY: a wbcContext is plain heap state plus a socket descriptor; libwbclient allows a context
// to be used from any thread as long as one thread at a time does (hence no Sync, `&mut self`).
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: made by wbcCtxCreate of the same library, freed once.
        unsafe { (self.lib.ctx_free)(self.ctx) };
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("library", &self.lib.name)
            .finish()
    }
}

fn wbc_error_text(code: c_int) -> &'static str {
    match code {
        WBC_ERR_NOT_IMPLEMENTED => "WBC_ERR_NOT_IMPLEMENTED",
        WBC_ERR_UNKNOWN_FAILURE => "WBC_ERR_UNKNOWN_FAILURE",
        WBC_ERR_NO_MEMORY => "WBC_ERR_NO_MEMORY",
        WBC_ERR_INVALID_PARAM => "WBC_ERR_INVALID_PARAM",
        WBC_ERR_WINBIND_NOT_AVAILABLE => "WBC_ERR_WINBIND_NOT_AVAILABLE",
        WBC_ERR_DOMAIN_NOT_FOUND => "WBC_ERR_DOMAIN_NOT_FOUND",
        WBC_ERR_INVALID_RESPONSE => "WBC_ERR_INVALID_RESPONSE",
        WBC_ERR_AUTH_ERROR => "WBC_ERR_AUTH_ERROR",
        WBC_ERR_UNKNOWN_USER => "WBC_ERR_UNKNOWN_USER",
        _ => "wbcErr (other)",
    }
}

/// NT statuses that say the domain could not be reached or could not decide: the sign-in is
/// neither passed nor refused (503, try again).
const UNAVAILABLE_STATUSES: &[u32] = &[
    0xC000_005E, // NT_STATUS_NO_LOGON_SERVERS
    0xC000_00B5, // NT_STATUS_IO_TIMEOUT
    0xC000_00DA, // NT_STATUS_CANT_ACCESS_DOMAIN_INFO
    0xC000_018D, // NT_STATUS_TRUSTED_RELATIONSHIP_FAILURE
    0xC000_0192, // NT_STATUS_NETLOGON_NOT_STARTED
    0xC000_0233, // NT_STATUS_DOMAIN_CONTROLLER_NOT_FOUND
    0xC000_020C, // NT_STATUS_CONNECTION_DISCONNECTED
    0xC000_0236, // NT_STATUS_CONNECTION_REFUSED
    0xC000_023C, // NT_STATUS_NETWORK_UNREACHABLE
    0xC000_0241, // NT_STATUS_CONNECTION_ABORTED
    0xC000_0017, // NT_STATUS_NO_MEMORY
    0xC000_009A, // NT_STATUS_INSUFFICIENT_RESOURCES
];

/// What an NT status from a failed logon means: a refusal, or no answer (`None`).
pub fn classify_nt_status(nt_status: u32) -> Option<Refusal> {
    // RPC_NT_* (0xC002xxxx): the NETLOGON call itself failed.
    if UNAVAILABLE_STATUSES.contains(&nt_status) || nt_status & 0xFFFF_0000 == 0xC002_0000 {
        return None;
    }
    Some(match nt_status {
        0xC000_006A => Refusal::WrongPassword,
        0xC000_0072 => Refusal::AccountDisabled,
        0xC000_0234 => Refusal::AccountLockedOut,
        0xC000_0193 => Refusal::AccountExpired,
        0xC000_0071 => Refusal::PasswordExpired,
        0xC000_0224 => Refusal::PasswordMustChange,
        0xC000_0064 => Refusal::NoSuchUser,
        // NOLOGON_INTERDOMAIN / WORKSTATION / SERVER_TRUST_ACCOUNT
        0xC000_0198..=0xC000_019A => Refusal::MachineAccount,
        _ => Refusal::Other,
    })
}

/// Copies a C string the library returned (NULL: empty).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the function contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Whether a logon winbindd reports as a success is one a SIP user may sign in with: not a
/// machine account, not the Guest account (whatever `parameter_control` asked), an account with a
/// name, and a session key that is not all zeros (a guest's or anonymous logon's, which anyone
/// can compute: the SA's signatures would prove nothing).
fn accepted_logon(
    user_flags: u32,
    account_name: &str,
    session_key: &[u8; 16],
) -> Result<(), (Refusal, &'static str)> {
    if account_name.ends_with('$') {
        return Err((Refusal::MachineAccount, "machine account refused"));
    }
    if user_flags & WBC_AUTH_USER_INFO_GUEST != 0 {
        return Err((Refusal::Other, "guest logon refused"));
    }
    if account_name.is_empty() {
        return Err((Refusal::Other, "logon without an account name"));
    }
    if session_key.iter().all(|b| *b == 0) {
        return Err((Refusal::Other, "logon without a session key"));
    }
    Ok(())
}

impl Context {
    /// `wbcCtxPing`: is winbindd there (for `check-config` and readiness)?
    pub fn ping(&mut self) -> Result<(), Unavailable> {
        // SAFETY: a live context of this library.
        let rc = unsafe { (self.lib.ctx_ping)(self.ctx) };
        if rc == WBC_ERR_SUCCESS {
            Ok(())
        } else {
            Err(Unavailable(format!(
                "winbindd does not answer ({})",
                wbc_error_text(rc)
            )))
        }
    }

    /// `wbcCtxInterfaceDetails`: the domain this host is joined to.
    pub fn joined_domain(&mut self) -> Result<JoinedDomain, Unavailable> {
        let mut details: *mut WbcInterfaceDetails = std::ptr::null_mut();
        // SAFETY: a live context of this library; `details` receives a library allocation,
        // freed below.
        let rc = unsafe { (self.lib.ctx_interface_details)(self.ctx, &mut details) };
        if rc != WBC_ERR_SUCCESS || details.is_null() {
            return Err(Unavailable(format!(
                "winbindd does not say which domain it is joined to ({})",
                wbc_error_text(rc)
            )));
        }
        // SAFETY: on success `details` points to a wbcInterfaceDetails the library filled in;
        // its strings are NULL or NUL-terminated, alive until freed below.
        let joined = unsafe {
            JoinedDomain {
                netbios: owned((*details).netbios_domain),
                dns: owned((*details).dns_domain),
            }
        };
        // SAFETY: a library allocation, freed once.
        unsafe { (self.lib.free_memory)(details.cast()) };
        if joined.netbios.is_empty() {
            return Err(Unavailable(
                "winbindd names no domain: is this host joined?".into(),
            ));
        }
        Ok(joined)
    }

    /// `wbcCtxAuthenticateUserEx` at level `WBC_AUTH_USER_LEVEL_RESPONSE`: the domain verifies
    /// the NTLMv2 response to `server_challenge` and returns the user session key. Blocking (a
    /// round trip to winbindd and on to a DC).
    pub fn authenticate_response(
        &mut self,
        logon: &ResponseLogon<'_>,
    ) -> Result<Logon, LogonError> {
        let refused = |refusal, nt_string: &str| {
            LogonError::Refused(Refused {
                refusal,
                nt_status: 0,
                nt_string: nt_string.to_owned(),
            })
        };
        if logon.user.ends_with('$') {
            return Err(refused(Refusal::MachineAccount, "machine account refused"));
        }
        // A NUL inside a name cannot be passed to C, and no account has one.
        let (Ok(user), Ok(domain), Ok(workstation)) = (
            CString::new(logon.user),
            CString::new(logon.domain),
            CString::new(logon.workstation),
        ) else {
            return Err(refused(Refusal::NoSuchUser, "NUL in a name"));
        };
        let Ok(nt_length) = u32::try_from(logon.nt_response.len()) else {
            return Err(refused(Refusal::Other, "NT response too long"));
        };
        let params = WbcAuthUserParams {
            account_name: user.as_ptr(),
            domain_name: domain.as_ptr(),
            workstation_name: workstation.as_ptr(),
            flags: 0,
            parameter_control: PARAMETER_CONTROL,
            level: WBC_AUTH_USER_LEVEL_RESPONSE,
            password: WbcResponse {
                challenge: logon.server_challenge,
                nt_length,
                nt_data: logon.nt_response.as_ptr(),
                lm_length: 0,
                lm_data: std::ptr::null(),
            },
        };
        let mut info: *mut WbcAuthUserInfo = std::ptr::null_mut();
        let mut error: *mut WbcAuthErrorInfo = std::ptr::null_mut();
        // SAFETY: `params` and every buffer it points to outlive the call; the library only
        // reads them. `info` / `error` receive library allocations, freed below.
        let rc = unsafe { (self.lib.ctx_authenticate)(self.ctx, &params, &mut info, &mut error) };
        let result = if rc == WBC_ERR_SUCCESS && !info.is_null() {
            // SAFETY: on success `info` points to a wbcAuthUserInfo the library filled in.
            let i = unsafe { &*info };
            // SAFETY: its strings are NULL or NUL-terminated, alive until freed below.
            let (account_name, domain_name) =
                unsafe { (owned(i.account_name), owned(i.domain_name)) };
            match accepted_logon(i.user_flags, &account_name, &i.user_session_key) {
                Err((refusal, why)) => Err(refused(refusal, why)),
                Ok(()) => Ok(Logon {
                    account_name,
                    domain_name,
                    user_session_key: i.user_session_key,
                }),
            }
        } else if !error.is_null() {
            // SAFETY: on failure `error`, when set, points to a wbcAuthErrorInfo.
            let e = unsafe { &*error };
            // SAFETY: NULL or NUL-terminated, alive until freed below.
            let nt_string = unsafe { owned(e.nt_string) };
            match classify_nt_status(e.nt_status) {
                Some(refusal) => Err(LogonError::Refused(Refused {
                    refusal,
                    nt_status: e.nt_status,
                    nt_string,
                })),
                None => Err(LogonError::Unavailable(Unavailable(format!(
                    "{nt_string} ({:#010x})",
                    e.nt_status
                )))),
            }
        } else {
            match rc {
                WBC_ERR_UNKNOWN_USER => Err(refused(Refusal::NoSuchUser, wbc_error_text(rc))),
                WBC_ERR_DOMAIN_NOT_FOUND | WBC_ERR_INVALID_PARAM | WBC_ERR_AUTH_ERROR => {
                    Err(refused(Refusal::Other, wbc_error_text(rc)))
                }
                _ => Err(LogonError::Unavailable(Unavailable(
                    wbc_error_text(rc).to_owned(),
                ))),
            }
        };
        if !info.is_null() {
            // SAFETY: the session key copy above is the only one left once this is wiped.
            unsafe {
                (*info).user_session_key.zeroize();
                (*info).lm_session_key.zeroize();
                (self.lib.free_memory)(info.cast());
            }
        }
        if !error.is_null() {
            // SAFETY: a library allocation, freed once.
            unsafe { (self.lib.free_memory)(error.cast()) };
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify_nt_status(0xC000_006A),
            Some(Refusal::WrongPassword)
        );
        assert_eq!(
            classify_nt_status(0xC000_0072),
            Some(Refusal::AccountDisabled)
        );
        assert_eq!(
            classify_nt_status(0xC000_0234),
            Some(Refusal::AccountLockedOut)
        );
        assert_eq!(
            classify_nt_status(0xC000_0193),
            Some(Refusal::AccountExpired)
        );
        assert_eq!(
            classify_nt_status(0xC000_0071),
            Some(Refusal::PasswordExpired)
        );
        assert_eq!(
            classify_nt_status(0xC000_0224),
            Some(Refusal::PasswordMustChange)
        );
        assert_eq!(classify_nt_status(0xC000_0064), Some(Refusal::NoSuchUser));
        assert_eq!(
            classify_nt_status(0xC000_0199),
            Some(Refusal::MachineAccount)
        );
        assert_eq!(classify_nt_status(0xC000_006D), Some(Refusal::Other));
        assert_eq!(classify_nt_status(0xC000_005E), None, "no logon servers");
        assert_eq!(classify_nt_status(0xC002_0017), None, "RPC failure");
    }

    #[test]
    fn only_a_named_non_guest_user_with_a_session_key_is_accepted() {
        let key = [7u8; 16];
        assert_eq!(accepted_logon(0x20, "alice", &key), Ok(()));
        assert_eq!(
            accepted_logon(0, "PC1$", &key).map_err(|e| e.0),
            Err(Refusal::MachineAccount)
        );
        assert!(accepted_logon(WBC_AUTH_USER_INFO_GUEST, "guest", &key).is_err());
        assert!(accepted_logon(0, "", &key).is_err());
        assert!(accepted_logon(0, "alice", &[0; 16]).is_err());
    }

    #[test]
    fn a_logon_request_shows_no_challenge_or_response() {
        let r = ResponseLogon {
            user: "alice",
            domain: "EXAMPLE",
            workstation: "WS1",
            server_challenge: [0xAB; 8],
            nt_response: &[0xCD; 40],
        };
        let shown = format!("{r:?}");
        assert!(shown.contains("alice") && !shown.contains("171") && !shown.contains("205"));
    }

    #[test]
    fn the_joined_domain_by_either_name() {
        let d = JoinedDomain {
            netbios: "EXAMPLE".into(),
            dns: "example.com".into(),
        };
        assert!(d.is("EXAMPLE") && d.is("example") && d.is("Example.COM"));
        assert!(!d.is("OTHER") && !d.is("") && !d.is("example.com.evil"));
        let no_dns = JoinedDomain {
            netbios: "EXAMPLE".into(),
            dns: String::new(),
        };
        assert!(!no_dns.is(""));
    }

    #[test]
    fn a_missing_library_is_an_error() {
        let e = Library::load("libsagw-no-such-wbclient.so.0").unwrap_err();
        assert!(matches!(e, LoadError::Open { .. }), "{e}");
    }

    #[test]
    fn machine_accounts_are_refused_before_asking() {
        // Only runs where libwbclient is installed; the refusal needs no winbindd.
        let Ok(lib) = Library::load(DEFAULT_LIBRARY) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "libwbclient missing under CI"
            );
            return;
        };
        let mut ctx = lib.context().unwrap();
        let e = ctx
            .authenticate_response(&ResponseLogon {
                user: "PC1$",
                domain: "EXAMPLE",
                workstation: "PC1",
                server_challenge: [1; 8],
                nt_response: &[0; 48],
            })
            .unwrap_err();
        assert!(
            matches!(&e, LogonError::Refused(r) if r.refusal == Refusal::MachineAccount),
            "{e:?}"
        );
    }
}
