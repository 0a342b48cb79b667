#![no_main]
//! The whole decision entry point: whatever a client sends (a raw message, a well-formed request with
//! arbitrary credentials, or a real handshake whose final token is arbitrary), the core answers with a
//! decision and never panics; signing whatever it authenticated never panics either.
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sagw_auth::{
    CoreConfig, Decision, DigestSettings, FileCredentialStore, NtlmSettings, SecurityCore,
    Transport, TransportContext, XorShiftRng,
};
use sagw_sip::{AuthHeader, Message};

fn core() -> &'static SecurityCore {
    static CORE: OnceLock<SecurityCore> = OnceLock::new();
    CORE.get_or_init(|| {
        let mut cfg = CoreConfig::new("example.com");
        cfg.ntlm = Some(NtlmSettings::new(
            "gw.example.com",
            sagw_ntlm::ServerIdentity {
                netbios_domain: "EXAMPLE".into(),
                netbios_computer: "GW".into(),
                dns_domain: "example.com".into(),
                dns_computer: "gw.example.com".into(),
                dns_tree: "example.com".into(),
            },
        ));
        cfg.digest = Some(DigestSettings {
            config: sagw_digest::DigestConfig::new("example.com"),
            nonce_key: [1; 32],
            max_tracked_nonces: 1024,
        });
        let mut store = FileCredentialStore::new();
        store.add_password("alice", "pw", &[("example.com", sagw_digest::Algorithm::Sha256)]);
        SecurityCore::new(cfg, Arc::new(store))
    })
}

const TEMPLATE: &str = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1;epid=e1\r\nTo: <sip:alice@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let core = core();
    let now = UNIX_EPOCH + Duration::from_secs(1_767_603_600);
    let mut rng = XorShiftRng::new(u64::from(mode) + 1);
    let ctx = TransportContext {
        source: "192.0.2.1:5061".parse().expect("addr"),
        transport: Transport::Tls,
    };
    let decide = |m: &Message, rng: &mut XorShiftRng| {
        let d = core.on_request(m, &ctx, now, rng);
        if let Decision::Authenticated(a) = &d {
            let mut resp = m.clone();
            let _ = core.finish_response(&mut resp, a, now, rng);
        }
        d
    };
    match mode % 4 {
        0 => {
            if let Ok(m) = Message::parse(rest) {
                if m.is_request() {
                    decide(&m, &mut rng);
                } else {
                    core.on_response(&m, now);
                }
            }
        }
        1 | 2 => {
            let Ok(value) = std::str::from_utf8(rest) else {
                return;
            };
            if value.contains(['\r', '\n']) {
                return;
            }
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            let name = if mode % 4 == 1 { "Authorization" } else { "Proxy-Authorization" };
            m.push_header(name, value);
            decide(&m, &mut rng);
        }
        _ => {
            // A real leg 1, then a final leg carrying the fuzz bytes as the AUTHENTICATE.
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            m.push_header(
                "Authorization",
                "NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"gw.example.com\", gssapi-data=\"\", version=4",
            );
            let Decision::Continue(ch) = decide(&m, &mut rng) else {
                return;
            };
            let opaque = ch
                .headers
                .iter()
                .find_map(|(_, v)| AuthHeader::parse(v).ok()?.param("opaque").map(str::to_owned));
            let Some(opaque) = opaque else { return };
            let token = base64::engine::general_purpose::STANDARD.encode(rest);
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            m.push_header(
                "Authorization",
                &format!("NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"gw.example.com\", opaque=\"{opaque}\", gssapi-data=\"{token}\", version=4"),
            );
            decide(&m, &mut rng);
        }
    }
    // First legs keep nothing; this drops whatever SAs the fuzzer made and forgets their final
    // legs, so the one-time-use table never fills.
    core.expire(now + Duration::from_secs(3600));
});
