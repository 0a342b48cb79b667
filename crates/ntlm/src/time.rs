//! FILETIME (100 ns ticks since 1601-01-01 UTC, [MS-DTYP] 2.3.3) conversions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// FILETIME of 1970-01-01 00:00:00 UTC.
pub const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

const TICKS_PER_SEC: i128 = 10_000_000;

/// 100 ns ticks since 1601, signed so that instants before 1601 do not need special cases.
pub(crate) fn ticks_since_1601(t: SystemTime) -> i128 {
    // Whole seconds are whole ticks: `secs * 10^7 + subsec_nanos / 100` is `as_nanos() / 100`
    // without a 128-bit division.
    let ticks =
        |d: Duration| i128::from(d.as_secs()) * TICKS_PER_SEC + i128::from(d.subsec_nanos() / 100);
    let unix_ticks = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ticks(d),
        Err(e) => -ticks(e.duration()),
    };
    unix_ticks + i128::from(FILETIME_UNIX_EPOCH)
}

/// FILETIME of `t`, saturated to the representable range (0 before 1601).
pub fn filetime_from_system_time(t: SystemTime) -> u64 {
    u64::try_from(ticks_since_1601(t).max(0)).unwrap_or(u64::MAX)
}

/// The instant a FILETIME denotes, or `None` if the platform cannot represent it.
pub fn system_time_from_filetime(ft: u64) -> Option<SystemTime> {
    let nanos_from_1601 = u128::from(ft) * 100;
    let d = duration_from_nanos(nanos_from_1601);
    let epoch_1601 =
        UNIX_EPOCH.checked_sub(Duration::from_secs(FILETIME_UNIX_EPOCH / 10_000_000))?;
    epoch_1601.checked_add(d)
}

/// Signed difference `a - b` in whole seconds, rounded away from zero so that a reported skew
/// never looks smaller than the limit it exceeded.
pub(crate) fn ticks_diff_secs(a: i128, b: i128) -> i64 {
    let d = a - b;
    let secs = (d.abs() + TICKS_PER_SEC - 1) / TICKS_PER_SEC;
    let signed = if d < 0 { -secs } else { secs };
    i64::try_from(signed).unwrap_or(if d > 0 { i64::MAX } else { i64::MIN })
}

fn duration_from_nanos(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it always fits a u32.
    let nanos = u32::try_from(n % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_a_timestamp_is_2010_03_01_10_08_08_utc() {
        // Client timestamp of the recorded OC 2007 R2 AUTHENTICATE (bytes 59519A1727B9CA01).
        let ft = u64::from_le_bytes([0x59, 0x51, 0x9A, 0x17, 0x27, 0xB9, 0xCA, 0x01]);
        let t = system_time_from_filetime(ft).unwrap();
        // 2010-03-01T10:08:08Z = 1267438088 s after the Unix epoch.
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_267_438_088);
        assert_eq!(filetime_from_system_time(t), ft);
    }

    #[test]
    fn ticks_are_the_nanoseconds_divided_by_100() {
        for nanos in [
            0u64,
            99,
            100,
            101,
            999_999_999,
            1_000_000_000,
            1_267_438_088_123_456_789,
        ] {
            let d = Duration::from_nanos(nanos);
            let expected = (d.as_nanos() / 100) as i128;
            let f = i128::from(FILETIME_UNIX_EPOCH);
            assert_eq!(ticks_since_1601(UNIX_EPOCH + d), f + expected);
            assert_eq!(ticks_since_1601(UNIX_EPOCH - d), f - expected);
        }
    }

    #[test]
    fn before_1601_saturates_and_1601_is_zero() {
        let t1601 = system_time_from_filetime(0).unwrap();
        assert_eq!(filetime_from_system_time(t1601), 0);
        let earlier = t1601 - Duration::from_secs(10);
        assert_eq!(filetime_from_system_time(earlier), 0);
        assert_eq!(ticks_since_1601(earlier), -100_000_000);
    }
}
