//! Small helpers: an OS-backed RNG, random hex, HTTP dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    hex::encode(b)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an RFC 1123 date in GMT (`Mon, 01 Mar 2010 10:08:08 GMT`), the form SIP's `Date` header
/// uses (RFC 3261 §20.17). The weekday is not checked.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let rest = s.split_once(',').map_or(s, |(_, r)| r).trim();
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let month_name = it.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))?;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if !it.next()?.eq_ignore_ascii_case("GMT")
        || day == 0
        || day > 31
        || h > 23
        || m > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(year, u32::try_from(month).ok()? + 1, day);
    let days = u64::try_from(days).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn rejects_other_forms() {
        for bad in [
            "",
            "Mon, 01 Mar 2010 10:08:08 PST",
            "Mon, 01 Foo 2010 10:08:08 GMT",
            "Mon, 32 Mar 2010 10:08:08 GMT",
            "Mon, 01 Mar 2010 10:08 GMT",
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
