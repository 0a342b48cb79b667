//! Established NTLM SAs as the handshake leaves them, without running one per SA.
#![allow(dead_code)]

use sagw_auth::sa::NewSa;
use sagw_auth::{Mechanism, Opaque};

pub const NOW: u64 = 1_767_603_600;

pub fn new_sa(opaque: Opaque, i: u32, session: sagw_ntlm::NtlmSession) -> NewSa {
    NewSa {
        opaque,
        version: 4,
        // Realistic lengths: a corporate address and a 10-hex-digit epid.
        identity: format!("sip:user{i:07}@corp.example.com"),
        epid: format!("{i:010x}"),
        mechanism: Mechanism::Ntlm(session),
        now: NOW,
        hard_expiry: NOW + 8 * 3600,
        idle_ttl: 900,
        final_token: None,
    }
}
