//! The few krb5 profile values the acceptor must agree with: the clock skew
//! MIT enforces and the default realm. Read through libkrb5 itself so the
//! answer honours KRB5_CONFIG and include directives exactly as the GSS
//! acceptor (which builds its own krb5 context per call) will.

use std::ffi::{CStr, c_char, c_int, c_long, c_void};
use std::ptr;
use std::time::Duration;

#[link(name = "krb5")]
unsafe extern "C" {
    fn krb5_init_context(context: *mut *mut c_void) -> i32;
    fn krb5_free_context(context: *mut c_void);
    fn krb5_get_profile(context: *mut c_void, profile: *mut *mut c_void) -> i32;
    fn profile_get_integer(
        profile: *mut c_void,
        name: *const c_char,
        subname: *const c_char,
        subsubname: *const c_char,
        def_val: c_int,
        ret_default: *mut c_int,
    ) -> c_long;
    fn profile_release(profile: *mut c_void);
    fn krb5_get_default_realm(context: *mut c_void, realm: *mut *mut c_char) -> i32;
    fn krb5_free_default_realm(context: *mut c_void, realm: *mut c_char);
}

/// MIT's built-in default (`DEFAULT_CLOCKSKEW`, 300 s).
const MIT_DEFAULT_CLOCKSKEW: c_int = 300;

pub(crate) struct ProfileValues {
    pub clock_skew: Duration,
    pub default_realm: Option<String>,
}

struct Krb5Context(*mut c_void);

impl Drop for Krb5Context {
    fn drop(&mut self) {
        // SAFETY: created by krb5_init_context, freed once.
        unsafe { krb5_free_context(self.0) };
    }
}

/// Read `[libdefaults] clockskew` and `default_realm`. The error is a
/// `krb5_error_code` (e.g. a syntax error in krb5.conf).
pub(crate) fn read() -> Result<ProfileValues, i32> {
    let mut raw: *mut c_void = ptr::null_mut();
    // SAFETY: out-pointer valid; the context is freed by Krb5Context.
    let code = unsafe { krb5_init_context(&mut raw) };
    if code != 0 {
        return Err(code);
    }
    let ctx = Krb5Context(raw);

    let mut profile: *mut c_void = ptr::null_mut();
    // SAFETY: ctx.0 is a live context; the profile copy is released below.
    let code = unsafe { krb5_get_profile(ctx.0, &mut profile) };
    if code != 0 {
        return Err(code);
    }
    let mut skew: c_int = MIT_DEFAULT_CLOCKSKEW;
    // SAFETY: static NUL-terminated strings; `profile` is live.
    let code = unsafe {
        profile_get_integer(
            profile,
            c"libdefaults".as_ptr(),
            c"clockskew".as_ptr(),
            ptr::null(),
            MIT_DEFAULT_CLOCKSKEW,
            &mut skew,
        )
    };
    // SAFETY: returned by krb5_get_profile.
    unsafe { profile_release(profile) };
    if code != 0 {
        // profile error codes are com_err codes that fit in an i32.
        return Err(code as i32);
    }

    let mut realm: *mut c_char = ptr::null_mut();
    // SAFETY: ctx.0 is live; the string is freed with krb5_free_default_realm.
    let code = unsafe { krb5_get_default_realm(ctx.0, &mut realm) };
    let default_realm = if code == 0 && !realm.is_null() {
        // SAFETY: MIT returns a NUL-terminated string.
        let s = unsafe { CStr::from_ptr(realm) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by krb5_get_default_realm.
        unsafe { krb5_free_default_realm(ctx.0, realm) };
        Some(s)
    } else {
        None
    };

    Ok(ProfileValues {
        clock_skew: Duration::from_secs(u64::try_from(skew).unwrap_or(0)),
        default_realm,
    })
}
