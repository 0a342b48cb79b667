#![no_main]
//! The security core's decision entry point with real security associations (issue 17). For every
//! input a fresh `SecurityCore` is built (`sagw_fuzz::sipae::CoreWorld`: fixed seeds and clock, so
//! an artifact replays exactly) in which alice signed in with a real NTLM handshake (she holds an
//! SA) and bob answered a Digest challenge; then the input's chunks are fed as follow-ups: messages
//! alice signs with her SA, requests bob authorizes with Digest, and whatever an unauthenticated
//! sender (mallory, or alice without signing) sends: raw messages, arbitrary credentials on a valid
//! request, an arbitrary AUTHENTICATE after a real first leg. So `Decision::Authenticated`,
//! `sign` and `finish_response` run on fuzzed messages.
//!
//! Invariants (asserted):
//! 1. Nothing unauthenticated is accepted: a message the harness did not sign or authorize never
//!    gets a decision with a binding (`Authenticated` or a signed `Forbidden`), and a response never
//!    verifies; so nothing is ever signed for such a sender.
//! 2. A signature only with the SA that verified: a decision with an SA binding for a message alice
//!    signed names her SA and identity, and the signature `finish_response` puts on the answer
//!    verifies with her session and carries her opaque. A Digest binding is bob's.
//! 3. Integrity: a signed message with one byte changed (chunk kind 6) is accepted only when the
//!    byte is outside what the signature covers (the same signature buffer).
//! 4. No replay: the same signed request sent twice is accepted at most once.
//!
//! Input format: chunks separated by 0xFF; a chunk is a control byte and a payload:
//! * bits 0-2: 0 mallory's raw message; 1 alice signs the payload (a SIP message); 2/3 mallory's
//!   `Authorization` / `Proxy-Authorization` value on a valid REGISTER; 4 an arbitrary
//!   AUTHENTICATE (the payload) after a real first leg from mallory; 5 bob authorizes the payload
//!   (a request) with Digest; 6 alice signs the payload, then payload byte 0/1 picks a byte of the
//!   signed message to change (xor payload byte 2, made non-zero); 7 alice's raw message (unsigned);
//! * bits 3-5: time that passes before it (`sagw_fuzz::STEPS`; the core expires what ran out);
//! * bits 6-7, kind 1: 2 sends the signed message twice.
//!
//! In payloads `${opaque}` becomes alice's SA opaque and `${epid}` her epid (what anyone can see).
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sagw_auth::{Binding, BufferParams, Decision, ResponseVerdict, SignatureBuffer};
use sagw_fuzz::sipae::{
    ALICE_ADDR, ALICE_EPID, BOB_ADDR, CoreWorld, MALLORY_ADDR, REALM, TARGET, VERSION,
    authenticated_sa, context, credentials_header, ntlm_negotiate, response_to,
};
use sagw_fuzz::{STEPS, chunks, substitute};
use sagw_sip::{AuthHeader, Message};

fn parse(w: &CoreWorld, payload: &[u8]) -> Option<Message> {
    let table: [(&[u8], String); 2] = [
        (b"${opaque}", w.alice.opaque.clone()),
        (b"${epid}", ALICE_EPID.to_owned()),
    ];
    Message::parse(&substitute(payload, &table)).ok()
}

/// A message from a sender that proved nothing: never accepted.
fn unauthenticated(w: &mut CoreWorld, m: &Message, addr: &str) {
    if m.is_request() {
        let d = w.core.on_request(m, &context(addr), w.now, &mut w.rng);
        assert!(
            !matches!(d, Decision::Authenticated(_) | Decision::Forbidden(_)),
            "invariant 1 broken: an unsigned message was accepted: {d:?}\n{}",
            String::from_utf8_lossy(&m.to_bytes())
        );
    } else {
        let v = w.core.on_response(m, w.now);
        assert!(
            !matches!(v, ResponseVerdict::Verified(_)),
            "invariant 1 broken: an unsigned response verified\n{}",
            String::from_utf8_lossy(&m.to_bytes())
        );
    }
}

/// A message alice signed: when accepted, only with her SA, and the answer's signature is hers.
/// Returns whether it was accepted.
fn signed(w: &mut CoreWorld, m: &Message) -> bool {
    if !m.is_request() {
        return match w.core.on_response(m, w.now) {
            ResponseVerdict::Verified(sa) => {
                assert_eq!(
                    sa.opaque().to_string(),
                    w.alice.opaque,
                    "invariant 2: another SA"
                );
                true
            }
            _ => false,
        };
    }
    let d = w
        .core
        .on_request(m, &context(ALICE_ADDR), w.now, &mut w.rng);
    let Some(opaque) = authenticated_sa(&d) else {
        assert!(
            !matches!(&d, Decision::Authenticated(_) | Decision::Forbidden(_)),
            "invariant 2 broken: alice's signed request bound to Digest: {d:?}"
        );
        return false;
    };
    assert_eq!(
        opaque, w.alice.opaque,
        "invariant 2 broken: another SA verified alice's signature"
    );
    let a = match &d {
        Decision::Authenticated(a) => a,
        Decision::Forbidden(f) => &f.verified,
        _ => unreachable!("authenticated_sa"),
    };
    assert_eq!(
        a.identity, "sip:alice@example.com",
        "invariant 2 broken: identity"
    );
    let Some(mut resp) = response_to(m, 200) else {
        return true;
    };
    if w.core
        .finish_response(&mut resp, a, w.now, &mut w.rng)
        .is_ok()
    {
        assert!(
            w.alice.signed_by(&resp).is_some_and(|(_, hers)| hers),
            "invariant 2 broken: the answer's signature is not alice's\n{}",
            String::from_utf8_lossy(&resp.to_bytes())
        );
    }
    true
}

fn sign(w: &mut CoreWorld, m: &mut Message) {
    let b = w.alice.credentials();
    w.alice.sign(&mut w.rng, m, credentials_header(m), b);
}

/// The buffer alice's signature in `m` covers (with the parameters she signed with).
fn covered(m: &Message) -> Option<Vec<u8>> {
    let v = m.header_all(credentials_header(m)).last()?;
    let h = AuthHeader::parse(v).ok()?;
    let buf = SignatureBuffer::build(
        m,
        &BufferParams {
            scheme: "NTLM",
            rand: h.param("crand")?,
            num: h.param("cnum")?,
            realm: REALM,
            targetname: TARGET,
            version: VERSION,
        },
    );
    Some(buf.as_bytes().to_vec())
}

const TEMPLATE: &str = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1;epid=a1b2c3d4e5\r\nTo: <sip:alice@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

fn step(w: &mut CoreWorld, chunk: &[u8]) {
    let Some((&ctl, payload)) = chunk.split_first() else {
        return;
    };
    let d = STEPS[usize::from((ctl >> 3) & 7)];
    if !d.is_zero() {
        w.now += d;
        w.core.expire(w.now);
    }
    match ctl & 7 {
        0 | 7 => {
            if let Some(m) = parse(w, payload) {
                let addr = if ctl & 7 == 0 {
                    MALLORY_ADDR
                } else {
                    ALICE_ADDR
                };
                unauthenticated(w, &m, addr);
            }
        }
        1 => {
            let Some(mut m) = parse(w, payload) else {
                return;
            };
            sign(w, &mut m);
            let first = signed(w, &m);
            if ctl >> 6 == 2 && m.is_request() {
                assert!(
                    !(first && signed(w, &m)),
                    "invariant 4 broken: a signed request was accepted twice"
                );
            }
        }
        2 | 3 => {
            let Ok(value) = std::str::from_utf8(payload) else {
                return;
            };
            let value = String::from_utf8_lossy(&parse_value(w, value)).into_owned();
            if value.contains(['\r', '\n']) {
                return;
            }
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            let name = if ctl & 7 == 2 {
                "Authorization"
            } else {
                "Proxy-Authorization"
            };
            m.push_header(name, &value);
            unauthenticated(w, &m, MALLORY_ADDR);
        }
        4 => {
            // A real leg 1, then a final leg carrying the payload as the AUTHENTICATE.
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            m.push_header("Authorization", &ntlm_negotiate(REALM, TARGET));
            let Decision::Continue(ch) =
                w.core
                    .on_request(&m, &context(MALLORY_ADDR), w.now, &mut w.rng)
            else {
                return;
            };
            let opaque = ch.headers.iter().find_map(|(_, v)| {
                AuthHeader::parse(v)
                    .ok()?
                    .param("opaque")
                    .map(str::to_owned)
            });
            let Some(opaque) = opaque else { return };
            let token = base64::engine::general_purpose::STANDARD.encode(payload);
            let mut m = Message::parse(TEMPLATE.as_bytes()).expect("template");
            m.push_header(
                "Authorization",
                &format!("NTLM qop=\"auth\", realm=\"{REALM}\", targetname=\"{TARGET}\", opaque=\"{opaque}\", gssapi-data=\"{token}\", version={VERSION}"),
            );
            unauthenticated(w, &m, MALLORY_ADDR);
        }
        5 => {
            let Some(mut m) = parse(w, payload) else {
                return;
            };
            let (Some(method), Some(uri)) = (
                m.method().map(str::to_owned),
                m.request_uri().map(str::to_owned),
            ) else {
                return;
            };
            let Some(creds) = w.bob.authorize(&method, &uri) else {
                return;
            };
            m.push_header(credentials_header(&m), &creds);
            let d = w.core.on_request(&m, &context(BOB_ADDR), w.now, &mut w.rng);
            let a = match &d {
                Decision::Authenticated(a) => a,
                Decision::Forbidden(f) => &f.verified,
                _ => return,
            };
            assert!(
                matches!(a.binding, Binding::Digest { .. }) && a.identity == "sip:bob@example.com",
                "invariant 2 broken: bob's Digest request bound to {a:?}"
            );
            if let Some(mut resp) = response_to(&m, 200) {
                let _ = w.core.finish_response(&mut resp, a, w.now, &mut w.rng);
            }
        }
        _ => {
            // Kind 6: tamper with one byte of a signed message.
            let [hi, lo, x, msg @ ..] = payload else {
                return;
            };
            let Some(mut m) = parse(w, msg) else {
                return;
            };
            sign(w, &mut m);
            let mut bytes = m.to_bytes();
            let pos = usize::from(u16::from_be_bytes([*hi, *lo])) % bytes.len();
            bytes[pos] ^= if *x == 0 { 0x20 } else { *x };
            let Ok(t) = Message::parse(&bytes) else {
                return;
            };
            if signed(w, &t) {
                assert_eq!(
                    covered(&t),
                    covered(&m),
                    "invariant 3 broken: a signed message with a covered byte changed (offset {pos}) was accepted:\n{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
}

fn parse_value(w: &CoreWorld, value: &str) -> Vec<u8> {
    let table: [(&[u8], String); 2] = [
        (b"${opaque}", w.alice.opaque.clone()),
        (b"${epid}", ALICE_EPID.to_owned()),
    ];
    substitute(value.as_bytes(), &table)
}

fuzz_target!(|data: &[u8]| {
    let mut w = CoreWorld::new();
    for chunk in chunks(data) {
        step(&mut w, chunk);
    }
});
