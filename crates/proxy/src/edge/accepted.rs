//! The 2xx answers to clients' INVITEs, found again by the ACK of each.
//!
//! The ACK of a 2xx is a transaction of its own (RFC 3261 §13.2.2.4, §17.1.1.3): another branch,
//! so it matches no server transaction, and it is judged like any request. But a Digest client
//! has nothing of its own to prove it with: PJSIP sends it without credentials, others copy the
//! INVITE's into it ("The ACK MUST contain the same credentials as the INVITE", whose method,
//! `uri` and nonce count are the INVITE's) and send that ACK again for each retransmitted 2xx.
//! Judged alone, each was dropped, and the callee, never acknowledged, hung up after 32 s.
//!
//! Each 2xx the gateway relays to a client's INVITE is kept here for 64×T1 (as long as the UAS
//! retransmits it) under what its ACK shares with it: Call-ID, CSeq number, From tag and the
//! client's flow (the connection; over UDP its address and port), with the 2xx's To tag and
//! Contact (the ACK's Request-URI, RFC 3261 §12.1.2). An ACK that names one of them takes one
//! ACK's worth of it: as many ACKs pass as 2xx were relayed, so nobody else gets ACKs through under
//! the client's name beyond the one a UA sends per 2xx. The stage is told what it said of the
//! INVITE ([`crate::hook::InboundContext::acknowledges`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sagw_sip::Message;

use crate::Map;
use crate::hook::AuthNote;
use crate::types::Flow;
use crate::uri::SipUri;

/// To tags kept a dialog (a forked INVITE answered 2xx by that many UAS); the rest go unrecorded.
const MAX_ANSWERS: usize = 16;

/// The longest To tag or Contact URI kept: a UA's are far shorter, and a callee choosing longer
/// ones would make each of the 16 answers a dialog hold that much for 32 s.
const MAX_TEXT: usize = 512;

/// ACKs owed a 2xx at most.
const MAX_UNACKED: u32 = 8;

/// The 2xx answers relayed to clients' INVITEs in the last 64×T1, by what their ACKs share with
/// them. At most `cap` dialogs (`max_transactions`: each came through a transaction).
#[derive(Default)]
pub(super) struct AcceptedInvites {
    dialogs: Map<String, Accepted>,
    /// Keys in the order they were last answered, with the expiry they had then: an entry
    /// answered again later has a later expiry than its older items, which pass over it.
    order: VecDeque<(Instant, String)>,
}

struct Accepted {
    /// What the stage said of the INVITE.
    note: AuthNote,
    /// One per To tag (a forked INVITE may be answered 2xx by several UAS).
    answers: Vec<Answer>,
    expires: Instant,
}

struct Answer {
    to_tag: String,
    /// The 2xx's Contact URI: where its ACK goes.
    target: String,
    /// 2xx relayed, less the ACKs that passed.
    unacked: u32,
}

impl std::fmt::Debug for AcceptedInvites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptedInvites")
            .field("dialogs", &self.dialogs.len())
            .finish()
    }
}

impl AcceptedInvites {
    /// `ok`, a 2xx to the INVITE that `flow` sent and the stage noted `note`, is on its way to the
    /// client: one more ACK may pass for it until `expires`. `invite` is that INVITE's key
    /// ([`dialog_key`], kept by its server transaction): a 2xx that names another Call-ID, CSeq or
    /// From tag (a callee may relay any 2xx it likes on the branch) is not kept, nor one that
    /// lacks what its ACK must name, nor more than [`MAX_ANSWERS`] To tags a dialog.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answered(
        &mut self,
        invite: &str,
        ok: &Message,
        flow: &Flow,
        note: &AuthNote,
        now: Instant,
        expires: Instant,
        cap: usize,
    ) {
        self.expire(now);
        let mut key = String::new();
        if dialog_key(&mut key, ok, "INVITE", flow) != Some(invite) {
            return;
        }
        let (Some(to_tag), Some(target)) = (
            ok.to()
                .and_then(|t| t.tag())
                .filter(|t| t.len() <= MAX_TEXT)
                .map(str::to_owned),
            ok.header_values("Contact")
                .next()
                .and_then(|c| sagw_sip::parse_name_addr(c).ok())
                .filter(|na| na.uri.len() <= MAX_TEXT)
                .map(|na| na.uri.to_owned()),
        ) else {
            return;
        };
        if !self.dialogs.contains_key(invite) && self.dialogs.len() >= cap {
            return;
        }
        let dialog = self
            .dialogs
            .entry(invite.to_owned())
            .or_insert_with(|| Accepted {
                note: note.clone(),
                answers: Vec::new(),
                expires: now,
            });
        let full = dialog.answers.len() >= MAX_ANSWERS;
        match dialog.answers.iter_mut().find(|a| a.to_tag == to_tag) {
            Some(a) => {
                // A UA sends one ACK a 2xx it gets; more than a few unanswered means the 2xx
                // are not for a UA that is there.
                a.unacked = (a.unacked + 1).min(MAX_UNACKED);
                a.target = target;
            }
            None if !full => dialog.answers.push(Answer {
                to_tag,
                target,
                unacked: 1,
            }),
            None => {}
        }
        // The queue gets an item when the expiry moves by a second or more (a 2xx retransmitted
        // every 500 ms adds none in between), so that it holds a bounded number per dialog.
        if expires >= dialog.expires + Duration::from_secs(1) {
            dialog.expires = expires;
            self.order.push_back((expires, invite.to_owned()));
        }
    }

    /// The note of the INVITE that `ack`, from `flow`, acknowledges: one of its 2xx had the
    /// ACK's To tag and a Contact that is the ACK's Request-URI, and was not acknowledged yet.
    /// Nothing is taken until the stage lets the ACK pass ([`take`](Self::take)): one it drops
    /// (another From) leaves the 2xx to the client's own ACK.
    pub(super) fn acknowledged(
        &mut self,
        ack: &Message,
        flow: &Flow,
        now: Instant,
    ) -> Option<AuthNote> {
        self.expire(now);
        self.find(ack, flow).map(|(dialog, _)| dialog.note.clone())
    }

    /// `ack` passed: its 2xx's worth is taken.
    pub(super) fn take(&mut self, ack: &Message, flow: &Flow) {
        if let Some((dialog, i)) = self.find(ack, flow)
            && let Some(answer) = dialog.answers.get_mut(i)
        {
            answer.unacked -= 1;
        }
    }

    fn find(&mut self, ack: &Message, flow: &Flow) -> Option<(&mut Accepted, usize)> {
        let mut key = String::new();
        let key = dialog_key(&mut key, ack, "ACK", flow)?;
        let to_tag = ack.to()?.tag()?;
        let ruri = SipUri::parse(ack.request_uri()?)?;
        let dialog = self.dialogs.get_mut(key)?;
        let i = dialog.answers.iter().position(|a| {
            a.unacked > 0
                && a.to_tag == to_tag
                && SipUri::parse(&a.target).is_some_and(|t| t.same_target(&ruri))
        })?;
        Some((dialog, i))
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

/// What an INVITE, its 2xx and the ACK of that 2xx share (RFC 3261 §13.2.2.4, §12.2.1.1): Call-ID,
/// CSeq number (as a number: `0002` is `2`) and From tag, and the client's flow (the connection,
/// or over UDP the address and port), written into `buf`. `None` when one is missing, or when the
/// CSeq method is not `method`.
pub(super) fn dialog_key<'b>(
    buf: &'b mut String,
    msg: &Message,
    method: &str,
    flow: &Flow,
) -> Option<&'b str> {
    let cseq = msg.cseq().filter(|c| c.method == method)?;
    let number: u32 = cseq.number.parse().ok()?;
    let call_id = msg.call_id()?;
    let from = msg.from()?;
    let tag = from.tag()?;
    buf.clear();
    buf.push_str(call_id.trim());
    // A connection is its own flow: a new one from the same address (a NAT's reused port) is
    // someone else. Datagrams share their listener's flow id: the address says who.
    let id = if flow.transport.is_reliable() {
        flow.id.0
    } else {
        0
    };
    let _ = write!(
        buf,
        "\n{number}\n{tag}\n{:?}\n{}\n{id}",
        flow.transport, flow.remote
    );
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::test_flow as flow;
    use std::sync::Arc;
    use std::time::Duration;

    fn ok(to_tag: &str) -> Message {
        Message::parse(
            format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=t\r\n\
To: <sip:b@x>;tag={to_tag}\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\nContact: <sip:b@10.0.0.6:5060;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn ack(ruri: &str, cseq: &str, from_tag: &str, to_tag: &str) -> Message {
        Message::parse(
            format!(
                "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK2\r\n\
From: <sip:a@x>;tag={from_tag}\r\nTo: <sip:b@x>;tag={to_tag}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// `ok` answered under its own key: the INVITE it answers had its Call-ID, CSeq and From tag.
    fn answer(
        accepted: &mut AcceptedInvites,
        ok: &Message,
        f: &Flow,
        note: &AuthNote,
        now: Instant,
        expires: Instant,
        cap: usize,
    ) {
        let mut k = String::new();
        let key = dialog_key(&mut k, ok, "INVITE", f).unwrap().to_owned();
        accepted.answered(&key, ok, f, note, now, expires, cap);
    }

    /// Only a 2xx that names the INVITE is kept (a callee relays what it likes on the branch),
    /// and a dialog keeps a bounded number of To tags.
    #[test]
    fn a_2xx_is_kept_only_for_its_invite_and_a_dialog_for_so_many_to_tags() {
        let now = Instant::now();
        let later = now + Duration::from_secs(32);
        let note: AuthNote = Arc::new("invite");
        let mut accepted = AcceptedInvites::default();
        let mut k = String::new();
        let invite = dialog_key(&mut k, &ok("b1"), "INVITE", &flow(1))
            .unwrap()
            .to_owned();
        let other_call = Message::parse(
            ok("b1")
                .to_bytes()
                .as_slice()
                .to_vec()
                .iter()
                .map(|b| *b as char)
                .collect::<String>()
                .replace("Call-ID: c1", "Call-ID: c2")
                .as_bytes(),
        )
        .unwrap();
        accepted.answered(&invite, &other_call, &flow(1), &note, now, later, 10);
        assert_eq!(accepted.len(), 0);
        for i in 0..(MAX_ANSWERS + 10) {
            accepted.answered(
                &invite,
                &ok(&format!("b{i}")),
                &flow(1),
                &note,
                now,
                later,
                10,
            );
        }
        assert_eq!(
            accepted.dialogs.get(&invite).map(|d| d.answers.len()),
            Some(MAX_ANSWERS)
        );
        // One queue item a second of expiry, not one a 2xx.
        assert_eq!(accepted.order.len(), 1);
        // Nor a To tag longer than a UA's.
        let mut k = String::new();
        let long = "b".repeat(MAX_TEXT + 1);
        let fresh = ok(&long).to_bytes();
        let fresh = Message::parse(
            String::from_utf8(fresh)
                .unwrap()
                .replace("Call-ID: c1", "Call-ID: c3")
                .as_bytes(),
        )
        .unwrap();
        let key = dialog_key(&mut k, &fresh, "INVITE", &flow(1))
            .unwrap()
            .to_owned();
        accepted.answered(&key, &fresh, &flow(1), &note, now, later, 10);
        assert!(!accepted.dialogs.contains_key(&key));
    }

    #[test]
    fn an_ack_passes_once_for_each_2xx_it_names_and_nothing_else_does() {
        let now = Instant::now();
        let later = now + Duration::from_secs(32);
        let note: AuthNote = Arc::new("invite");
        let mut accepted = AcceptedInvites::default();
        answer(&mut accepted, &ok("b1"), &flow(1), &note, now, later, 10);
        let good = "sip:b@10.0.0.6:5060;TRANSPORT=TCP";
        for wrong in [
            ack(good, "3 ACK", "t", "b1"),
            ack(good, "2 ACK", "u", "b1"),
            ack(good, "2 ACK", "t", "b2"),
            ack(good, "2 INVITE", "t", "b1"),
            ack("sip:premium@10.0.0.6:5060", "2 ACK", "t", "b1"),
            ack("sip:b@10.0.0.7:5060", "2 ACK", "t", "b1"),
            // Sent on elsewhere than the callee by a server that honours `maddr`.
            ack(
                "sip:b@10.0.0.6:5060;transport=tcp;maddr=192.0.2.66",
                "2 ACK",
                "t",
                "b1",
            ),
        ] {
            assert!(
                accepted.acknowledged(&wrong, &flow(1), now).is_none(),
                "{wrong:?}"
            );
        }
        // Another connection from the same address is someone else.
        assert!(
            accepted
                .acknowledged(&ack(good, "0002 ACK", "t", "b1"), &flow(2), now)
                .is_none()
        );
        let first = ack(good, "0002 ACK", "t", "b1");
        assert!(accepted.acknowledged(&first, &flow(1), now).is_some());
        // Until it is taken, the 2xx is still there to acknowledge.
        assert!(accepted.acknowledged(&first, &flow(1), now).is_some());
        accepted.take(&first, &flow(1));
        // One ACK a 2xx: the second waits for the 2xx to come again.
        assert!(
            accepted
                .acknowledged(&ack(good, "2 ACK", "t", "b1"), &flow(1), now)
                .is_none()
        );
        answer(&mut accepted, &ok("b1"), &flow(1), &note, now, later, 10);
        assert!(
            accepted
                .acknowledged(&ack(good, "2 ACK", "t", "b1"), &flow(1), now)
                .is_some()
        );
        // Gone after 64×T1 from the last 2xx.
        answer(&mut accepted, &ok("b1"), &flow(1), &note, now, later, 10);
        assert!(
            accepted
                .acknowledged(&ack(good, "2 ACK", "t", "b1"), &flow(1), later)
                .is_none()
        );
        assert_eq!(accepted.len(), 0);
    }

    #[test]
    fn no_more_dialogs_than_the_cap_are_kept() {
        let now = Instant::now();
        let note: AuthNote = Arc::new("invite");
        let mut accepted = AcceptedInvites::default();
        answer(
            &mut accepted,
            &ok("b1"),
            &flow(1),
            &note,
            now,
            now + Duration::from_secs(32),
            1,
        );
        answer(
            &mut accepted,
            &ok("b1"),
            &flow(2),
            &note,
            now,
            now + Duration::from_secs(32),
            1,
        );
        assert_eq!(accepted.len(), 1);
        // The one kept is still answered again.
        answer(
            &mut accepted,
            &ok("b2"),
            &flow(1),
            &note,
            now,
            now + Duration::from_secs(32),
            1,
        );
        assert_eq!(
            accepted.dialogs.values().next().map(|d| d.answers.len()),
            Some(2)
        );
    }
}
