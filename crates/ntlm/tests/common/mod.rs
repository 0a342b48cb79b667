#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sagw_ntlm::{AcceptorConfig, NtlmAcceptor, ServerIdentity};

/// The recorded OCS 2007 R2 CHALLENGE (flows/oc2007r2-ntlm-register.txt).
pub const CHALLENGE_B64: &str = "TlRMTVNTUAACAAAAAAAAADgAAADzgpji3Ruq9OfiGNEAAAAAAAAAAJYAlgA4AAAABQLODgAAAA8CAAoAQwBPAFMATQBPAAEAGABDAE8AUwBNAE8ALQBPAEMAUwAtAFIAMgAEABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAMAMABjAG8AcwBtAG8ALQBvAGMAcwAtAHIAMgAuAGMAbwBzAG0AbwAuAGwAbwBjAGEAbAAFABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAAAAAA=";
/// The recorded Communicator 2007 R2 AUTHENTICATE answering it.
pub const AUTHENTICATE_B64: &str = "TlRMTVNTUAADAAAAGAAYAHIAAADGAMYAigAAAAoACgBIAAAACAAIAFIAAAAYABgAWgAAABAAEABQAQAAVYKYYgUCzg4AAAAPQwBPAFMATQBPAFUAcwBlAHIAQwBPAFMATQBPAC0ATwBDAFMALQBSADIAoeku/k4Hi/fFwASazGFmwtauh1yw/apBjcDIAK527KYG0rn769BHMQEBAAAAAAAAWVGaFye5ygHWrodcsP2qQQAAAAACAAoAQwBPAFMATQBPAAEAGABDAE8AUwBNAE8ALQBPAEMAUwAtAFIAMgAEABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAMAMABjAG8AcwBtAG8ALQBvAGMAcwAtAHIAMgAuAGMAbwBzAG0AbwAuAGwAbwBjAGEAbAAFABYAYwBvAHMAbQBvAC4AbABvAGMAYQBsAAAAAAAAAAAAMctznhyoCkmFkeiueXEV5A==";

pub const SERVER_CHALLENGE_A: [u8; 8] = [0xDD, 0x1B, 0xAA, 0xF4, 0xE7, 0xE2, 0x18, 0xD1];
pub const PASSWORD_A: &str = "Pa$$word";

/// Signature buffer of the v4 REGISTER carrying the AUTHENTICATE (crand 13317733, cnum 1).
pub const REQUEST_BUFFER_A: &[u8] = b"<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><><><><>";
/// Signature buffer of the server's 200 OK (srand 9616454F, snum 1).
pub const RESPONSE_BUFFER_A: &[u8] = b"<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>";
pub const CLIENT_MAC_A: &str = "0100000029618e9651b65a7764000000";
pub const SERVER_MAC_A: &str = "01000000E615438A917661BE64000000";

pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

pub fn hexd(s: &str) -> Vec<u8> {
    sagw_hex::decode(s.replace(' ', "")).unwrap()
}

/// 2010-03-01 10:08:08 UTC, the client timestamp of vector A.
pub fn clock_a() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_267_438_088)
}

pub fn identity_a() -> ServerIdentity {
    ServerIdentity {
        netbios_domain: "COSMO".into(),
        netbios_computer: "COSMO-OCS-R2".into(),
        dns_domain: "cosmo.local".into(),
        dns_computer: "cosmo-ocs-r2.cosmo.local".into(),
        dns_tree: "cosmo.local".into(),
    }
}

pub fn config_a() -> AcceptorConfig {
    let mut c = AcceptorConfig::new(identity_a());
    c.version = [5, 2, 0xCE, 0x0E, 0, 0, 0, 0x0F]; // 5.2.3790, NTLMSSP rev 15 (Windows 2003)
    c
}

pub fn acceptor_a() -> NtlmAcceptor {
    NtlmAcceptor::new(config_a())
}

/// Deterministic xorshift64 for reproducible "random" inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn name(&mut self, max: u64) -> String {
        const ALPHABET: &[char] = &[
            'a', 'B', 'z', 'Q', '0', '9', '-', '.', '_', 'é', 'Ω', 'ß', 'ж', '日', '😀',
        ];
        let len = 1 + self.below(max);
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
}
