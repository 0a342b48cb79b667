//! What the fuzz targets share (issue 17): a deterministic clock and random generator, known
//! credentials, real NTLM and Digest handshakes against a fresh `SecurityCore` ([`sipae`]), and the
//! whole proxy with authentication on, in which alice has signed in ([`world`]). Each harness
//! rebuilds its world for every input from fixed seeds, so an artifact replays exactly what the
//! fuzzer ran.
//!
//! Input format of the multi-message targets (`auth_decide`, `proxy_edge`, `proxy_auth`): chunks
//! separated by the byte 0xFF ([`chunks`]), each a control byte and a payload.

pub mod sipae;
pub mod world;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fault planted on purpose, to show that `scripts/fuzz-smoke.sh` fails when a target crashes
/// (`SAGW_FUZZ_PLANT=panic`), hangs (`hang`: over `-timeout`) or asks for too much memory (`oom`:
/// over `-rss_limit_mb`), on any input of 8 bytes or more. Unset (always, but for that check):
/// nothing. `auth_header` calls it.
pub fn planted_fault(data: &[u8]) {
    static PLANT: OnceLock<Option<String>> = OnceLock::new();
    let plant = PLANT.get_or_init(|| std::env::var("SAGW_FUZZ_PLANT").ok());
    if data.len() < 8 {
        return;
    }
    match plant.as_deref() {
        Some("panic") => panic!("planted panic (SAGW_FUZZ_PLANT=panic)"),
        Some("hang") => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        Some("oom") => {
            let v = vec![1u8; 8 << 30];
            std::hint::black_box(&v);
        }
        _ => {}
    }
}

/// 2026-01-05 09:00:00 UTC, the wall clock every world starts at.
pub const T0: u64 = 1_767_603_600;

pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

/// Time steps a control byte picks from (3 bits): registrations, SA idle time and SA lifetime all
/// run out within reach.
pub const STEPS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(500),
    Duration::from_secs(4),
    Duration::from_secs(33),
    Duration::from_secs(300),
    Duration::from_secs(3600),
    Duration::from_secs(9 * 3600),
];

/// The chunks of a multi-message input.
pub fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == 0xFF)
}

/// Replaces each placeholder of `table` (e.g. `${opaque}`) in `raw` by its value: what a sender
/// could know (an opaque, the Via of a request it received), which random bytes never hold.
pub fn substitute(raw: &[u8], table: &[(&[u8], String)]) -> Vec<u8> {
    if !raw.windows(2).any(|w| w == b"${") {
        return raw.to_vec();
    }
    let mut out = Vec::with_capacity(raw.len() + 256);
    let mut i = 0;
    'outer: while i < raw.len() {
        if raw[i] == b'$' {
            for (k, v) in table {
                if raw[i..].starts_with(k) {
                    out.extend_from_slice(v.as_bytes());
                    i += k.len();
                    continue 'outer;
                }
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitute_fills_known_placeholders_only() {
        let t: [(&[u8], String); 1] = [(b"${opaque}", "ABCD".into())];
        assert_eq!(substitute(b"x=${opaque};${other}", &t), b"x=ABCD;${other}");
        assert_eq!(substitute(b"plain", &t), b"plain");
    }

    #[test]
    fn chunks_split_on_ff() {
        let c: Vec<&[u8]> = chunks(b"a\xffbc\xff").collect();
        assert_eq!(c, [&b"a"[..], b"bc", b""]);
    }
}
