#![no_main]
//! The proxy core's transactions with authentication on (issue 17): the world of
//! `sagw_fuzz::world` (the real `Edge` + `SecurityStage`, alice signed in with a real NTLM
//! handshake, mallory never authenticated, one next hop), where the next hop answers with
//! responses built from the edge's own forwarded requests (their Via, From, To, Call-ID, CSeq and
//! Record-Route echoed) with fuzzed status codes, extra headers and timing, so the client
//! transactions match: response forwarding, the best final response, CANCEL after a provisional
//! and the transaction timers all run. alice's requests, CANCELs and ACKs are signed by the harness
//! with her SA. The invariants are the world's (see `fuzz/src/world.rs`): a client's message makes
//! the edge send only to the next hop (the routing policy with `client_routes` empty), nothing
//! signed with alice's SA leaves her flow, and nothing from an unauthenticated sender is relayed.
//!
//! Input format: chunks separated by the byte 0xFF; a chunk is one control byte and a payload:
//! * bits 0-2, what happens:
//!   0. alice sends the payload (a SIP message, placeholders filled in as in `proxy_auth`), signed;
//!   1. alice sends the payload as is (unsigned);
//!   2. mallory sends the payload;
//!   3. the next hop answers one of the last requests the edge sent it: payload byte 0 picks the
//!      status ([`STATUS`]), the rest are extra header lines (CRLF-ended);
//!   4. the same, twice (a retransmission);
//!   5. alice CANCELs her last request (signed);
//!   6. alice ACKs her last request, with the To of the last response she got (signed);
//!   7. the next hop sends the payload (a request to alice, say; placeholders filled in);
//! * bits 3-5: time that passes before it (`sagw_fuzz::STEPS`; timers fire);
//! * bits 6-7: which request the next hop answers (0 the last, 1 the one before, ...).

use libfuzzer_sys::fuzz_target;
use sagw_fuzz::world::{Who, World, header_lines};
use sagw_fuzz::{STEPS, chunks};
use sagw_sip::Message;

/// Status codes the next hop answers with (payload byte 0 picks one, modulo).
const STATUS: [u16; 24] = [
    100, 180, 181, 182, 183, 199, 200, 202, 204, 300, 302, 400, 401, 403, 404, 407, 408, 480, 486,
    487, 500, 503, 600, 603,
];

/// The next hop's answer to `req`: status, the request's dialog headers echoed, `extra` lines.
fn answer(req: &Message, status: u16, extra: &[u8]) -> Option<Message> {
    let mut s = format!("SIP/2.0 {status} Fuzz\r\n").into_bytes();
    s.extend_from_slice(
        header_lines(
            Some(req),
            &["Via", "Record-Route", "From", "To", "Call-ID", "CSeq"],
        )
        .as_bytes(),
    );
    if (200..300).contains(&status) && req.method() == Some("INVITE") {
        s.extend_from_slice(b"Contact: <sip:bob@198.51.100.10:5060>\r\n");
    }
    s.extend_from_slice(extra);
    s.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Message::parse(&s).ok()
}

/// A CANCEL or ACK for alice's request `req` (same Via branch, Call-ID, From, CSeq number and
/// Route), with `to` as its To.
fn follow_up(method: &str, req: &Message, to: Option<&str>) -> Option<Message> {
    let mut s = format!("{method} {} SIP/2.0\r\n", req.request_uri()?);
    s.push_str(&header_lines(
        Some(req),
        &["Via", "Route", "From", "Call-ID"],
    ));
    s.push_str(&format!("To: {}\r\n", to.or(req.header("To"))?));
    s.push_str(&format!(
        "CSeq: {} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        req.cseq()?.number
    ));
    Message::parse(s.as_bytes()).ok()
}

fn step(w: &mut World, chunk: &[u8]) {
    let Some((&ctl, payload)) = chunk.split_first() else {
        return;
    };
    w.advance(STEPS[usize::from((ctl >> 3) & 7)]);
    let pick = usize::from(ctl >> 6);
    match ctl & 7 {
        0 | 1 => {
            let Ok(mut m) = Message::parse(&w.substitute(Who::Alice, payload)) else {
                return;
            };
            let signed = ctl & 7 == 0;
            if signed {
                w.sign_as_alice(&mut m);
            }
            w.inject(Who::Alice, signed, m);
        }
        2 => {
            if let Ok(m) = Message::parse(&w.substitute(Who::Mallory, payload)) {
                w.inject(Who::Mallory, false, m);
            }
        }
        3 | 4 => {
            let reqs = &w.hop.requests;
            let Some(req) = reqs.len().checked_sub(pick + 1).map(|i| reqs[i].clone()) else {
                return;
            };
            let (status, extra) = match payload.split_first() {
                Some((&b, rest)) => (STATUS[usize::from(b) % STATUS.len()], rest),
                None => (200, &[][..]),
            };
            let Some(resp) = answer(&req, status, extra) else {
                return;
            };
            if ctl & 7 == 4 {
                w.inject(Who::Hop, false, resp.clone());
            }
            w.inject(Who::Hop, false, resp);
        }
        5 | 6 => {
            let Some(req) = w.alice_sent.last().cloned() else {
                return;
            };
            let (method, to) = if ctl & 7 == 5 {
                ("CANCEL", None)
            } else {
                let to = w
                    .alice
                    .last_response
                    .as_ref()
                    .and_then(|r| r.header("To"))
                    .map(str::to_owned);
                ("ACK", to)
            };
            let Some(mut m) = follow_up(method, &req, to.as_deref()) else {
                return;
            };
            w.sign_as_alice(&mut m);
            w.inject(Who::Alice, true, m);
        }
        _ => {
            if let Ok(m) = Message::parse(&w.substitute(Who::Hop, payload)) {
                w.inject(Who::Hop, false, m);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    for chunk in chunks(data) {
        step(&mut w, chunk);
    }
    // Whatever is still pending runs out (timer C, registrations).
    w.advance(std::time::Duration::from_secs(300));
});
