//! Dialogs the gateway delivered to clients, and the address each was delivered under.
//!
//! A called client takes the INVITE's To as its own address for the whole dialog (RFC 3261
//! §12.1.1): its BYE, re-INVITE, UPDATE, INFO, REFER and NOTIFY carry `From: <that To>`. That To
//! is the client's identity when the caller addressed it by its address of record, but not when a
//! server behind the gateway addressed it otherwise: a PBX that dials the registered contact
//! (`sip:bob@10.0.0.5:5060`), a trunk's DID (`sip:+4930123456@…`), a forwarded call. The security
//! core lets a request's From be only the proven identity, so such a callee could not hang up,
//! hold or transfer: 403. Each dialog a client accepted (a 1xx with a To tag or a 2xx to an
//! INVITE, SUBSCRIBE or REFER the gateway sent it) is kept here under its Call-ID, the client's
//! tag and flow, with the request's To (the client's local URI) and From tag (the remote one): an
//! in-dialog request from that flow with those tags may have that From
//! ([`crate::hook::InboundContext::dialog_local`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sagw_sip::Message;

use crate::Map;
use crate::types::Flow;

/// How long a dialog is kept since it was last used. Calls without session timers can last hours
/// without a request; a dialog's last request (its BYE) may come after any of them.
pub(super) const IDLE: Duration = Duration::from_secs(12 * 3600);

/// The methods whose accepted requests make a dialog with the client (RFC 3261, RFC 6665, RFC
/// 3515).
const DIALOG_METHODS: [&str; 3] = ["INVITE", "SUBSCRIBE", "REFER"];

/// Dialogs delivered to clients whose local URI is not the client's registered address of
/// record; at most `cap` of them, the oldest forgotten first.
#[derive(Default)]
pub(super) struct DeliveredDialogs {
    dialogs: Map<String, Delivered>,
    /// Keys in the order they were last refreshed, with the expiry they had then.
    order: VecDeque<(Instant, String)>,
}

struct Delivered {
    /// The request's To URI: the client's From in the dialog.
    local_uri: String,
    /// The request's From tag: the To tag of the client's requests in the dialog.
    remote_tag: String,
    expires: Instant,
}

impl std::fmt::Debug for DeliveredDialogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveredDialogs")
            .field("dialogs", &self.dialogs.len())
            .finish()
    }
}

impl DeliveredDialogs {
    /// `response`, from the client at `flow`, answers `request`, which the gateway sent it.
    /// Kept when it makes a dialog (a 1xx with a To tag or a 2xx to a dialog-making method) and
    /// the request's To is not `aor`, the address of record the client registered over this flow
    /// (whose requests the core takes as its own anyway).
    pub(super) fn answered(
        &mut self,
        request: &Message,
        response: &Message,
        flow: &Flow,
        aor: Option<&str>,
        now: Instant,
        cap: usize,
    ) {
        let code = response.status_code().unwrap_or(0);
        if !(101..300).contains(&code) {
            return;
        }
        if !request
            .method()
            .is_some_and(|m| DIALOG_METHODS.contains(&m))
        {
            return;
        }
        let (Some(to), Some(from), Some(local_tag)) = (
            request.to(),
            request.from(),
            response.to().and_then(|t| t.tag()),
        ) else {
            return;
        };
        let Some(remote_tag) = from.tag() else {
            return;
        };
        let local_uri = strip_params(to.uri);
        if aor.is_some_and(|a| same_address(a, local_uri)) {
            return;
        }
        self.expire(now);
        let mut key = String::new();
        let Some(key) = dialog_key(&mut key, request.call_id(), local_tag, flow) else {
            return;
        };
        if self.dialogs.contains_key(key) {
            return;
        }
        while self.dialogs.len() >= cap.max(1) {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.dialogs.remove(&oldest);
        }
        let expires = now + IDLE;
        self.dialogs.insert(
            key.to_owned(),
            Delivered {
                local_uri: local_uri.to_owned(),
                remote_tag: remote_tag.to_owned(),
                expires,
            },
        );
        self.order.push_back((expires, key.to_owned()));
    }

    /// The local URI of the dialog that `request` (from the client at `flow`, with a To tag) is
    /// in, when the gateway delivered that dialog to this flow: its From tag is the client's tag,
    /// its To tag the other party's. Using it keeps the dialog.
    pub(super) fn local_uri(
        &mut self,
        request: &Message,
        flow: &Flow,
        now: Instant,
    ) -> Option<String> {
        if self.dialogs.is_empty() {
            return None;
        }
        self.expire(now);
        let local_tag = request.from()?.tag()?;
        let remote_tag = request.to()?.tag()?;
        let mut key = String::new();
        let key = dialog_key(&mut key, request.call_id(), local_tag, flow)?;
        let d = self.dialogs.get_mut(key)?;
        if d.remote_tag != remote_tag {
            return None;
        }
        // Refreshed at most twice an IDLE, so that a busy dialog does not grow the queue.
        if d.expires < now + IDLE / 2 {
            d.expires = now + IDLE;
            self.order.push_back((d.expires, key.to_owned()));
        }
        Some(d.local_uri.clone())
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front()
            && *at <= now
        {
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            if self.dialogs.get(&key).is_some_and(|d| d.expires <= now) {
                self.dialogs.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.dialogs.len()
    }
}

/// A URI without its `;parameters` and `?headers`.
fn strip_params(uri: &str) -> &str {
    let uri = uri.trim();
    let end = uri.find([';', '?']).unwrap_or(uri.len());
    &uri[..end]
}

/// `sip:Bob@Example.com` and `sips:bob@example.com` are one address, as identities compare.
fn same_address(a: &str, b: &str) -> bool {
    fn rest(s: &str) -> &str {
        s.split_once(':').map_or(s, |(_, r)| r)
    }
    rest(strip_params(a)).eq_ignore_ascii_case(rest(strip_params(b)))
}

/// Call-ID, the client's tag and its flow (the connection; over UDP its address and port).
fn dialog_key<'b>(
    buf: &'b mut String,
    call_id: Option<&str>,
    local_tag: &str,
    flow: &Flow,
) -> Option<&'b str> {
    let call_id = call_id?;
    buf.clear();
    buf.push_str(call_id.trim());
    let id = if flow.transport.is_reliable() {
        flow.id.0
    } else {
        0
    };
    let _ = write!(
        buf,
        "\n{local_tag}\n{:?}\n{}\n{id}",
        flow.transport, flow.remote
    );
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FlowId, Transport};

    fn flow(id: u64) -> Flow {
        Flow {
            id: FlowId(id),
            transport: Transport::Tcp,
            remote: "198.51.100.1:40001".parse().unwrap(),
        }
    }

    fn invite(to: &str) -> Message {
        Message::parse(
            format!(
                "INVITE {to} SIP/2.0\r\nVia: SIP/2.0/TCP gw;branch=z9hG4bK1\r\nFrom: <sip:pbx@example.com>;tag=p1\r\n\
To: <{to}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn ringing(req: &Message, code: u16, tag: &str) -> Message {
        crate::edit::build_response(req, code, "x", Some(tag), &[]).unwrap()
    }

    fn bye(from_tag: &str, to_tag: &str) -> Message {
        Message::parse(
            format!(
                "BYE sip:pbx@example.com SIP/2.0\r\nVia: SIP/2.0/TCP c;branch=z9hG4bK2\r\n\
From: <sip:bob@10.0.0.5:5060>;tag={from_tag}\r\nTo: <sip:pbx@example.com>;tag={to_tag}\r\n\
Call-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_dialog_delivered_under_another_address_lends_it_to_the_clients_requests() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:bob@10.0.0.5:5060;ob");
        d.answered(
            &req,
            &ringing(&req, 180, "b1"),
            &flow(1),
            Some("sip:bob@example.com"),
            now,
            10,
        );
        assert_eq!(
            d.local_uri(&bye("b1", "p1"), &flow(1), now).as_deref(),
            Some("sip:bob@10.0.0.5:5060")
        );
        // Not another connection, another tag of the client's or of the other party's.
        assert_eq!(d.local_uri(&bye("b1", "p1"), &flow(2), now), None);
        assert_eq!(d.local_uri(&bye("b2", "p1"), &flow(1), now), None);
        assert_eq!(d.local_uri(&bye("b1", "p2"), &flow(1), now), None);
        // Forgotten after IDLE without a request.
        assert!(
            d.local_uri(&bye("b1", "p1"), &flow(1), now + IDLE)
                .is_none()
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn only_dialogs_under_another_address_than_the_registered_one_are_kept() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:Bob@example.com");
        d.answered(
            &req,
            &ringing(&req, 200, "b1"),
            &flow(1),
            Some("sip:bob@example.com"),
            now,
            10,
        );
        // A 100 (no dialog), a final failure, a MESSAGE: no dialog either.
        let other = invite("sip:bob@10.0.0.5");
        d.answered(&other, &ringing(&other, 100, "b1"), &flow(1), None, now, 10);
        d.answered(&other, &ringing(&other, 486, "b1"), &flow(1), None, now, 10);
        assert_eq!(d.len(), 0);
        // At the cap, the oldest goes.
        d.answered(&other, &ringing(&other, 180, "b1"), &flow(1), None, now, 1);
        d.answered(&other, &ringing(&other, 180, "b2"), &flow(1), None, now, 1);
        assert_eq!(d.len(), 1);
        assert!(d.local_uri(&bye("b2", "p1"), &flow(1), now).is_some());
    }
}
