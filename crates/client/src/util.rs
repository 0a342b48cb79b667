//! Small helpers: an OS-backed RNG, random hex, HTTP dates.

use std::time::SystemTime;

use sagw_auth::Rng;

/// Random bytes from the operating system. Handshake secrets (the NTLM random session key, the
/// client challenge, Digest cnonces) come from here, not from a seeded generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl OsRng {
    /// Checks once that the OS source works, so that [`Rng::fill_bytes`] cannot fail later.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut probe = [0u8; 8];
        getrandom::fill(&mut probe)?;
        Ok(OsRng)
    }
}

impl Rng for OsRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        // `new` proved the source works; the kernel interface does not fail afterwards. Should it
        // ever, abort rather than sign in with predictable keys.
        if getrandom::fill(buf).is_err() {
            std::process::abort();
        }
    }
}

/// `bytes` random bytes as lower-case hex (branches, tags, Call-IDs, cnonces).
pub fn rand_hex(rng: &mut dyn Rng, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rng.fill_bytes(&mut b);
    sagw_hex::encode(b)
}

/// Parses an HTTP date (`Mon, 01 Mar 2010 10:08:08 GMT`), the form of SIP's `Date` header
/// (RFC 3261 §20.17), with the httpdate crate. Like any HTTP recipient (RFC 7231 §7.1.1.1) it also
/// takes the obsolete RFC 850 and asctime forms; a weekday that does not match the date is refused.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

/// Signed seconds `a - b`.
pub fn signed_secs(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn parses_the_recorded_date_and_formats_back() {
        let t = parse_http_date("Mon, 01 Mar 2010 10:08:08 GMT").expect("date");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs(),
            1_267_438_088
        );
        assert_eq!(
            sagw_auth::date::http_date(t),
            "Mon, 01 Mar 2010 10:08:08 GMT"
        );
        let leap = parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT").expect("leap day");
        assert_eq!(
            sagw_auth::date::http_date(leap),
            "Thu, 29 Feb 2024 23:59:59 GMT"
        );
    }

    #[test]
    fn takes_the_obsolete_forms_http_recipients_must_accept() {
        // RFC 7231 §7.1.1.1: a recipient accepts the RFC 850 and asctime forms too. The
        // hand-written parser took only the RFC 1123 form; the httpdate crate takes all three.
        for obsolete in ["Monday, 01-Mar-10 10:08:08 GMT", "Mon Mar  1 10:08:08 2010"] {
            let t = parse_http_date(obsolete).expect(obsolete);
            assert_eq!(
                t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs(),
                1_267_438_088,
                "{obsolete}"
            );
        }
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "not a date",
            "Mon, 01 Mar 2010 10:08:08 PST",
            "Mon, 01 Foo 2010 10:08:08 GMT",
            "Mon, 32 Mar 2010 10:08:08 GMT",
            "Mon, 01 Mar 2010 10:08 GMT",
            "Tue, 30 Feb 2010 10:08:08 GMT",
            "Mon, 01 Mar 2010 24:08:08 GMT",
            "Mon, 01 Mar 2010 10:60:08 GMT",
            "Sat, 01 Mar 1969 10:08:08 GMT",
            // The weekday must match the date (1 March 2010 was a Monday).
            "Tue, 01 Mar 2010 10:08:08 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn rand_hex_is_the_lower_case_hex_of_the_bytes_drawn() {
        struct Counting(u8);
        impl Rng for Counting {
            fn fill_bytes(&mut self, buf: &mut [u8]) {
                for b in buf {
                    self.0 = self.0.wrapping_add(0x5b);
                    *b = self.0;
                }
            }
        }
        assert_eq!(rand_hex(&mut Counting(0), 5), "5bb6116cc7");
        assert_eq!(rand_hex(&mut Counting(0), 0), "");
    }

    #[test]
    fn signed_secs_is_negative_when_behind() {
        assert_eq!(
            signed_secs(UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(5)),
            -5
        );
    }
}
