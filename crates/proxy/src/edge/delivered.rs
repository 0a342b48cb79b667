//! Dialogs that servers behind the gateway opened with clients, and the address each was opened
//! under.
//!
//! A called client takes the INVITE's To as its own address for the whole dialog (RFC 3261
//! §12.1.1): its BYE, re-INVITE, UPDATE, INFO, REFER and NOTIFY carry `From: <that To>`. That To
//! is the client's identity when the caller addressed it by its address of record, but not when a
//! server behind the gateway addressed it otherwise: a PBX that dials the registered contact
//! (`sip:bob@10.0.0.5:5060`), a trunk's DID (`sip:+4930123456@…`, `tel:+4930123456`), a forwarded
//! call. The security core lets a request's From be only the proven identity, so such a callee
//! could not hang up, hold or transfer: 403.
//!
//! Each such dialog is kept here: an INVITE, SUBSCRIBE or REFER that came from a server (never
//! from a client: a client would choose the To itself), whose To is not the address of record
//! registered over the flow and whose From is not that address either (the client's own call
//! looped back through a proxy that passes To on), answered by the client with a tag (a 1xx or
//! 2xx). It is found by its
//! Call-ID, the client's tag and flow, and holds the To (the client's local URI), the From tag
//! and the remote target (the server side's Contact, refreshed by its re-INVITEs and UPDATEs). A
//! request from that flow with those tags and that remote target as its Request-URI may have that
//! From ([`crate::hook::InboundContext::dialog_local`]): it can reach no one but the party that
//! called. The remote target moves with the server side's re-INVITEs and UPDATEs, and with its
//! 2xx to the client's. Forgotten when the client turns the dialog-making request down (a final
//! over 299: a decline, a 487 after CANCEL; inside the dialog only a 481), after a BYE either way,
//! when its connection closes, and 12 h after its last request.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sagw_sip::Message;

use crate::Map;
use crate::types::{Flow, FlowId};
use crate::uri::SipUri;

/// How long a dialog is kept since it was last used. Calls without session timers can last hours
/// without a request; a dialog's last request (its BYE) may come after any of them.
pub(super) const IDLE: Duration = Duration::from_secs(12 * 3600);

/// Dialogs kept for one flow at most: a client has a few calls and subscriptions at a time; one
/// that answers a flood of INVITEs with a tag each fills only its own share.
pub(super) const PER_FLOW: usize = 32;

/// The longest key, address, tag or target kept: a dialog's are shorter (a GRUU or an
/// `ms-opaque` Contact included); a client's tag or a server's Contact past it is not worth
/// holding for 12 h.
const MAX_TEXT: usize = 1024;

/// The methods whose accepted requests make a dialog with the client (RFC 3261, RFC 6665, RFC
/// 3515).
const DIALOG_METHODS: [&str; 3] = ["INVITE", "SUBSCRIBE", "REFER"];

/// Methods that refresh the remote target (RFC 3261 §12.2.2, RFC 3311).
const TARGET_REFRESH: [&str; 2] = ["INVITE", "UPDATE"];

/// Dialogs delivered to clients under another address than their registered address of record;
/// at most `cap` of them (`max_transactions`), [`PER_FLOW`] a flow. A new one over either bound is
/// not kept (the client's requests in it meet the identity rule alone); the ones kept stay.
#[derive(Default)]
pub(super) struct DeliveredDialogs {
    dialogs: Map<String, Delivered>,
    /// The keys of each flow's dialogs, so that a flow's share is counted and its dialogs go
    /// when its connection closes.
    by_flow: Map<(FlowId, SocketAddr), Vec<String>>,
    /// Keys in the order they were last refreshed, with the expiry they had then.
    order: VecDeque<(Instant, String)>,
}

struct Delivered {
    /// The request's To URI, without parameters: the client's From in the dialog.
    local_uri: String,
    /// The request's From tag: the To tag of the client's requests in the dialog.
    remote_tag: String,
    /// The server side's Contact URI: the Request-URI of the client's requests in the dialog.
    remote_target: String,
    flow: (FlowId, SocketAddr),
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
    /// `response`, from the client at `flow`, answers `request`, which the gateway sent it on a
    /// server's behalf. A 1xx with a To tag or a 2xx to a dialog-making request keeps the dialog
    /// when the request's To is not `aor` (the address of record the client registered over the
    /// flow, whose requests the core takes as its own anyway); a final over 299 forgets it.
    #[allow(clippy::too_many_arguments)]
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
        if code <= 100
            || !request
                .method()
                .is_some_and(|m| DIALOG_METHODS.contains(&m))
        {
            return;
        }
        let Some(local_tag) = response.to().and_then(|t| t.tag()) else {
            return;
        };
        let Some(to) = request.to() else {
            return;
        };
        let mut key = String::new();
        let Some(key) = dialog_key(&mut key, request.call_id(), local_tag, flow) else {
            return;
        };
        // Only a dialog-making request outside a dialog makes one; inside one (a re-INVITE, a
        // REFER) a decline leaves the dialog as it was (RFC 3261 §14.1), unless the client says
        // it has no such dialog (481, RFC 5057).
        let initial = to.tag().is_none();
        if code >= 300 {
            if initial || code == 481 {
                self.remove(key);
            }
            return;
        }
        let (true, Some(from), Some(target)) = (initial, request.from(), contact_uri(request))
        else {
            return;
        };
        let Some(remote_tag) = from.tag() else {
            return;
        };
        let local_uri = strip_params(to.uri);
        // Nor when the caller is the client itself (its From is the identity the gateway
        // enforced): its own call looped back through a proxy that passes To on as it came, whose
        // To it chose.
        if aor.is_some_and(|a| same_address(a, local_uri) || same_address(a, from.uri))
            || self.dialogs.contains_key(key)
            || [key, local_uri, remote_tag, target]
                .iter()
                .any(|t| t.len() > MAX_TEXT)
        {
            return;
        }
        self.expire(now);
        let flow_key = (flow.id, flow.remote);
        let mine = self.by_flow.get(&flow_key).map_or(0, Vec::len);
        if mine >= PER_FLOW || self.dialogs.len() >= cap {
            return;
        }
        let expires = now + IDLE;
        self.dialogs.insert(
            key.to_owned(),
            Delivered {
                local_uri: local_uri.to_owned(),
                remote_tag: remote_tag.to_owned(),
                remote_target: target.to_owned(),
                flow: flow_key,
                expires,
            },
        );
        self.by_flow
            .entry(flow_key)
            .or_default()
            .push(key.to_owned());
        self.queue(expires, key);
    }

    /// Queues `key` for expiry at `expires`. The entries of dialogs forgotten or refreshed since
    /// stay until their time; when they outnumber the dialogs, only the live ones are kept, so
    /// that a client answering and declining in a loop grows nothing for 12 h.
    fn queue(&mut self, expires: Instant, key: &str) {
        if self.order.len() >= 2 * self.dialogs.len() + 64 {
            let dialogs = &self.dialogs;
            self.order
                .retain(|(at, k)| dialogs.get(k).is_some_and(|d| d.expires == *at));
        }
        self.order.push_back((expires, key.to_owned()));
    }

    /// `response`, a 2xx from the server side, answers the client's `request` at `flow`: in a
    /// dialog kept here, a re-INVITE's or UPDATE's 2xx moves the remote target to its Contact
    /// (RFC 3261 §12.2.1.2), where the client's ACK and later requests go.
    pub(super) fn refreshed(&mut self, request: &Message, response: &Message, flow: &Flow) {
        if self.dialogs.is_empty()
            || !request
                .method()
                .is_some_and(|m| TARGET_REFRESH.contains(&m))
        {
            return;
        }
        let (Some(local_tag), Some(remote_tag)) = (
            request.from().and_then(|f| f.tag()),
            request.to().and_then(|t| t.tag()),
        ) else {
            return;
        };
        let mut key = String::new();
        let Some(key) = dialog_key(&mut key, request.call_id(), local_tag, flow) else {
            return;
        };
        // Only a refresh the client sent to the party that called (the current target): one it
        // sent elsewhere under its own From, answered by a party of its choosing, would make that
        // party the one the lent address reaches.
        let Some(ruri) = request.request_uri().and_then(SipUri::parse) else {
            return;
        };
        if let Some(d) = self.dialogs.get_mut(key)
            && d.remote_tag == remote_tag
            && SipUri::parse(&d.remote_target).is_some_and(|t| t.same_target(&ruri))
            && let Some(target) = contact_uri(response).filter(|t| t.len() <= MAX_TEXT)
        {
            d.remote_target = target.to_owned();
        }
    }

    /// `request` is on its way to the client at `flow`, from a server: in a dialog kept here, a
    /// re-INVITE or UPDATE moves the remote target to its Contact, and a BYE ends the dialog.
    pub(super) fn delivering(&mut self, request: &Message, flow: &Flow) {
        if self.dialogs.is_empty() {
            return;
        }
        let Some(method) = request.method() else {
            return;
        };
        let (Some(local_tag), Some(remote_tag)) = (
            request.to().and_then(|t| t.tag()),
            request.from().and_then(|f| f.tag()),
        ) else {
            return;
        };
        let mut key = String::new();
        let Some(key) = dialog_key(&mut key, request.call_id(), local_tag, flow) else {
            return;
        };
        if self
            .dialogs
            .get(key)
            .is_none_or(|d| d.remote_tag != remote_tag)
        {
            return;
        }
        if method == "BYE" {
            self.remove(key);
        } else if TARGET_REFRESH.contains(&method)
            && let Some(target) = contact_uri(request).filter(|t| t.len() <= MAX_TEXT)
            && let Some(d) = self.dialogs.get_mut(key)
        {
            d.remote_target = target.to_owned();
        }
    }

    /// The local URI of the dialog that `request` (from the client at `flow`, with a To tag) is
    /// in, when it is one kept here: its From tag is the client's tag, its To tag the other
    /// party's, its Request-URI the remote target. Using it keeps the dialog.
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
        let ruri = SipUri::parse(request.request_uri()?)?;
        let mut key = String::new();
        let key = dialog_key(&mut key, request.call_id(), local_tag, flow)?;
        let d = self.dialogs.get_mut(key)?;
        let to_the_caller = SipUri::parse(&d.remote_target).is_some_and(|t| t.same_target(&ruri));
        if d.remote_tag != remote_tag || !to_the_caller {
            return None;
        }
        // Refreshed at most twice an IDLE, so that a busy dialog does not grow the queue.
        let local_uri = d.local_uri.clone();
        if d.expires < now + IDLE / 2 {
            d.expires = now + IDLE;
            let expires = d.expires;
            self.queue(expires, key);
        }
        Some(local_uri)
    }

    /// The client's own BYE in a dialog kept here passed: the dialog is over.
    pub(super) fn ended(&mut self, request: &Message, flow: &Flow) {
        let Some(local_tag) = request.from().and_then(|f| f.tag()) else {
            return;
        };
        let mut key = String::new();
        if let Some(key) = dialog_key(&mut key, request.call_id(), local_tag, flow) {
            self.remove(key);
        }
    }

    /// The connection `id` closed: its dialogs cannot be used again.
    pub(super) fn flow_closed(&mut self, id: FlowId) {
        if self.dialogs.is_empty() {
            return;
        }
        let dialogs = &mut self.dialogs;
        self.by_flow.retain(|(flow, _), keys| {
            if *flow != id {
                return true;
            }
            for k in keys.iter() {
                dialogs.remove(k);
            }
            false
        });
    }

    fn remove(&mut self, key: &str) {
        let Some(d) = self.dialogs.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_flow.get_mut(&d.flow) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_flow.remove(&d.flow);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front()
            && *at <= now
        {
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            if self.dialogs.get(&key).is_some_and(|d| d.expires <= now) {
                self.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.dialogs.len()
    }
}

/// The first Contact's URI of `msg`.
fn contact_uri(msg: &Message) -> Option<&str> {
    msg.header_values("Contact")
        .next()
        .and_then(|c| sagw_sip::parse_name_addr(c).ok())
        .map(|na| na.uri)
}

/// A URI without its parameters, as the security core compares the client's From with it
/// ([`sagw_sip::uri_without_params`]: a user part with parameters is kept whole).
fn strip_params(uri: &str) -> &str {
    sagw_sip::uri_without_params(uri.trim())
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
    let _ = write!(
        buf,
        "\n{local_tag}\n{:?}\n{}\n{}",
        flow.transport, flow.remote, flow.id.0
    );
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::test_flow as flow;

    fn invite(to: &str) -> Message {
        Message::parse(
            format!(
                "INVITE {to} SIP/2.0\r\nVia: SIP/2.0/TCP gw;branch=z9hG4bK1\r\nFrom: <sip:pbx@example.com>;tag=p1\r\n\
To: <{to}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@192.0.2.5:5060>\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn answer(req: &Message, code: u16, tag: &str) -> Message {
        crate::edit::build_response(req, code, "x", Some(tag), &[]).unwrap()
    }

    fn in_dialog(method: &str, ruri: &str, from_tag: &str, to_tag: &str, contact: &str) -> Message {
        Message::parse(
            format!(
                "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP c;branch=z9hG4bK2\r\n\
From: <sip:bob@10.0.0.5:5060>;tag={from_tag}\r\nTo: <sip:pbx@example.com>;tag={to_tag}\r\n\
Call-ID: c1\r\nCSeq: 1 {method}\r\n{contact}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const PBX: &str = "sip:pbx@192.0.2.5:5060";

    #[test]
    fn a_dialog_delivered_under_another_address_lends_it_for_requests_to_the_caller() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:bob@10.0.0.5:5060;ob");
        d.answered(
            &req,
            &answer(&req, 180, "b1"),
            &flow(1),
            Some("sip:bob@example.com"),
            now,
            10,
        );
        let bye = in_dialog("BYE", PBX, "b1", "p1", "");
        assert_eq!(
            d.local_uri(&bye, &flow(1), now).as_deref(),
            Some("sip:bob@10.0.0.5:5060")
        );
        // Not another connection, tag of the client's or of the other party's, or target.
        assert_eq!(d.local_uri(&bye, &flow(2), now), None);
        assert_eq!(
            d.local_uri(&in_dialog("BYE", PBX, "b2", "p1", ""), &flow(1), now),
            None
        );
        assert_eq!(
            d.local_uri(&in_dialog("BYE", PBX, "b1", "p2", ""), &flow(1), now),
            None
        );
        let carol = "sip:carol@192.0.2.9:5060";
        let elsewhere = "sip:pbx@192.0.2.5:5060;maddr=192.0.2.9";
        for ruri in [carol, elsewhere] {
            assert_eq!(
                d.local_uri(&in_dialog("MESSAGE", ruri, "b1", "p1", ""), &flow(1), now),
                None
            );
        }
        // The caller's re-INVITE moves its target.
        let reinvite = Message::parse(
            "INVITE sip:bob@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/TCP gw;branch=z9hG4bK3\r\n\
From: <sip:pbx@example.com>;tag=p1\r\nTo: <sip:bob@10.0.0.5:5060>;tag=b1\r\nCall-ID: c1\r\n\
CSeq: 2 INVITE\r\nContact: <sip:pbx@192.0.2.6:5070>\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        )
        .unwrap();
        d.delivering(&reinvite, &flow(1));
        assert_eq!(d.local_uri(&bye, &flow(1), now), None);
        let bye = in_dialog("BYE", "sip:pbx@192.0.2.6:5070", "b1", "p1", "");
        assert!(d.local_uri(&bye, &flow(1), now).is_some());
        // Forgotten after IDLE without a request.
        assert!(d.local_uri(&bye, &flow(1), now + IDLE).is_none());
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_dialog_ends_with_a_decline_a_bye_or_its_connection() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:+4930123456@example.com");
        d.answered(&req, &answer(&req, 180, "b1"), &flow(1), None, now, 10);
        d.answered(&req, &answer(&req, 487, "b1"), &flow(1), None, now, 10);
        assert_eq!(d.len(), 0);
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        let from_caller = Message::parse(
            "BYE sip:bob@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/TCP gw;branch=z9hG4bK4\r\n\
From: <sip:pbx@example.com>;tag=p1\r\nTo: <sip:+4930123456@example.com>;tag=b1\r\nCall-ID: c1\r\n\
CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        )
        .unwrap();
        d.delivering(&from_caller, &flow(1));
        assert_eq!(d.len(), 0);
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        d.ended(&in_dialog("BYE", PBX, "b1", "p1", ""), &flow(1));
        assert_eq!(d.len(), 0);
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        d.flow_closed(FlowId(1));
        assert_eq!(d.len(), 0);
        assert!(d.by_flow.is_empty());
    }

    /// A DID with user parameters (RFC 4694's number portability) keeps them, as the core
    /// compares the client's From with it: cut at its first `;`, only a From of `sip:+4930123`
    /// matched, and the callee's BYE, copying the To, was refused. Its host parameters go, so
    /// that a client dropping `;user=phone` from its From is the same address.
    #[test]
    fn a_to_with_user_parameters_is_kept_as_the_core_reads_it() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let did = "sip:+4930123;npdi;rn=+4930000@trunk.example;user=phone";
        let req = invite(did);
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        let bye = in_dialog("BYE", PBX, "b1", "p1", "");
        assert_eq!(
            d.local_uri(&bye, &flow(1), now).as_deref(),
            Some("sip:+4930123;npdi;rn=+4930000@trunk.example")
        );
    }

    /// The client's own call, looped back to it through a proxy behind that passes To on as it
    /// came (its other device, or itself): the caller chose that To, and the client is that
    /// caller (its From is the identity the gateway enforced).
    #[test]
    fn a_call_from_the_client_itself_lends_nothing() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let text = String::from_utf8(invite("sip:+18005550100@example.com").to_bytes())
            .unwrap()
            .replace(
                "From: <sip:pbx@example.com>",
                "From: <sips:Bob@example.com>",
            );
        let looped = Message::parse(text.as_bytes()).unwrap();
        let aor = Some("sip:bob@example.com");
        d.answered(&looped, &answer(&looped, 200, "b1"), &flow(1), aor, now, 10);
        assert_eq!(d.len(), 0);
        let req = invite("sip:+18005550100@example.com");
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), aor, now, 10);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_decline_inside_the_dialog_keeps_it_unless_it_is_a_481() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:+4930123456@example.com");
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        let reinvite = Message::parse(
            "INVITE sip:bob@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/TCP gw;branch=z9hG4bK5\r\n\
From: <sip:pbx@example.com>;tag=p1\r\nTo: <sip:+4930123456@example.com>;tag=b1\r\nCall-ID: c1\r\n\
CSeq: 2 INVITE\r\nContact: <sip:pbx@192.0.2.5:5060>\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        )
        .unwrap();
        for declined in [491, 488, 603] {
            let no = answer(&reinvite, declined, "b1");
            d.answered(&reinvite, &no, &flow(1), None, now, 10);
            assert_eq!(d.len(), 1, "{declined}");
        }
        // A 2xx inside it makes nothing new.
        d.answered(
            &reinvite,
            &answer(&reinvite, 200, "b1"),
            &flow(1),
            None,
            now,
            10,
        );
        assert_eq!(d.len(), 1);
        d.answered(
            &reinvite,
            &answer(&reinvite, 481, "b1"),
            &flow(1),
            None,
            now,
            10,
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn the_callers_2xx_to_the_clients_refresh_moves_the_target() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:+4930123456@example.com");
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        let hold = in_dialog("INVITE", PBX, "b1", "p1", "");
        let moved = "sip:pbx@192.0.2.7:5080";
        let ok = crate::edit::build_response(
            &hold,
            200,
            "OK",
            None,
            &[("Contact", format!("<{moved}>"))],
        )
        .unwrap();
        // Another dialog's 2xx, or one from the other party's other tag, or to a re-INVITE the
        // client sent elsewhere than the caller (under its own From, to a party it chose, whose
        // 2xx would make that party the one the lent address reaches): nothing moves.
        let elsewhere = "sip:accomplice@198.51.100.66:5060";
        d.refreshed(
            &in_dialog("INVITE", elsewhere, "b1", "p1", ""),
            &ok,
            &flow(1),
        );
        d.refreshed(&in_dialog("INVITE", PBX, "b2", "p1", ""), &ok, &flow(1));
        d.refreshed(&in_dialog("INVITE", PBX, "b1", "p2", ""), &ok, &flow(1));
        d.refreshed(&in_dialog("MESSAGE", PBX, "b1", "p1", ""), &ok, &flow(1));
        let bye = in_dialog("BYE", moved, "b1", "p1", "");
        assert_eq!(d.local_uri(&bye, &flow(1), now), None);
        d.refreshed(&hold, &ok, &flow(1));
        assert!(d.local_uri(&bye, &flow(1), now).is_some());
        assert_eq!(
            d.local_uri(&in_dialog("BYE", PBX, "b1", "p1", ""), &flow(1), now),
            None
        );
    }

    #[test]
    fn answering_and_declining_in_a_loop_grows_nothing() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:+4930123456@example.com");
        for i in 0..1000 {
            let tag = format!("b{i}");
            d.answered(&req, &answer(&req, 180, &tag), &flow(1), None, now, 10);
            d.answered(&req, &answer(&req, 486, &tag), &flow(1), None, now, 10);
        }
        assert_eq!(d.len(), 0);
        assert!(d.order.len() <= 65, "{}", d.order.len());
        // Nor texts longer than a dialog's.
        let long = "x".repeat(MAX_TEXT);
        d.answered(&req, &answer(&req, 200, &long), &flow(1), None, now, 10);
        assert_eq!(d.len(), 0);
        d.answered(&req, &answer(&req, 200, "b1"), &flow(1), None, now, 10);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn only_dialogs_under_another_address_are_kept_and_so_many_a_flow() {
        let now = Instant::now();
        let mut d = DeliveredDialogs::default();
        let req = invite("sip:Bob@example.com");
        d.answered(
            &req,
            &answer(&req, 200, "b1"),
            &flow(1),
            Some("sip:bob@example.com"),
            now,
            10,
        );
        // A 100 (no dialog) or a MESSAGE: none either.
        let other = invite("sip:bob@10.0.0.5");
        d.answered(&other, &answer(&other, 100, "b1"), &flow(1), None, now, 10);
        assert_eq!(d.len(), 0);
        for i in 0..(PER_FLOW + 5) {
            d.answered(
                &other,
                &answer(&other, 180, &format!("t{i}")),
                &flow(1),
                None,
                now,
                1000,
            );
        }
        assert_eq!(d.len(), PER_FLOW);
        // Another flow has its own share, up to the cap.
        d.answered(
            &other,
            &answer(&other, 180, "u"),
            &flow(2),
            None,
            now,
            PER_FLOW + 1,
        );
        d.answered(
            &other,
            &answer(&other, 180, "v"),
            &flow(3),
            None,
            now,
            PER_FLOW + 1,
        );
        assert_eq!(d.len(), PER_FLOW + 1);
    }
}
