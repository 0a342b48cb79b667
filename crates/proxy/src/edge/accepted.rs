//! The INVITEs of clients that a 2xx accepted, found again by the ACK of that 2xx.
//!
//! The ACK of a 2xx is a transaction of its own (RFC 3261 §13.2.2.4, §17.1.1.3): another branch,
//! so it matches no server transaction, and it is judged like any request. But a Digest client
//! has nothing of its own to prove it with: PJSIP sends it without credentials, others copy the
//! INVITE's into it ("The ACK MUST contain the same credentials as the INVITE", whose method,
//! `uri` and nonce count are the INVITE's) and send that ACK again for each retransmitted 2xx.
//! Judged alone, each was dropped, and the callee, never acknowledged, hung up after 32 s. An ACK
//! that names an INVITE this flow sent and a 2xx accepted (its Call-ID, CSeq number and From
//! tag), while that transaction is kept (RFC 6026 Accepted, 64×T1), is that INVITE's: the stage
//! is told what it said of the INVITE ([`crate::hook::InboundContext::acknowledges`]).

use sagw_sip::Message;

use crate::Map;

/// Accepted INVITE server transactions by the dialog key of their ACK: at most one entry per
/// server transaction, so bounded by `max_transactions`.
#[derive(Debug, Default)]
pub(super) struct AcceptedInvites(Map<String, String>);

impl AcceptedInvites {
    /// Remember that server transaction `server_key`, whose request had `dialog` as its key, was
    /// accepted. A later INVITE under the same key (a UA that reused its CSeq) takes it over.
    pub(super) fn insert(&mut self, dialog: String, server_key: &str) {
        self.0.insert(dialog, server_key.to_owned());
    }

    /// The server transaction accepted under `dialog`, if any.
    pub(super) fn get(&self, dialog: &str) -> Option<&str> {
        self.0.get(dialog).map(String::as_str)
    }

    /// Forget `dialog`, if it is still `server_key`'s (another INVITE may have taken it over).
    pub(super) fn remove(&mut self, dialog: &str, server_key: &str) {
        if self.0.get(dialog).is_some_and(|k| k == server_key) {
            self.0.remove(dialog);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// What an INVITE and the ACK of its 2xx share (RFC 3261 §13.2.2.4, §12.2.1.1): Call-ID, CSeq
/// number (as a number: `0002` is `2`) and From tag, written into `buf`. `None` when one is
/// missing, when the CSeq method is not `method`, or when the message has no From tag (no dialog
/// to find).
pub(super) fn dialog_key<'b>(buf: &'b mut String, msg: &Message, method: &str) -> Option<&'b str> {
    let cseq = msg.cseq().filter(|c| c.method == method)?;
    let number: u32 = cseq.number.parse().ok()?;
    let call_id = msg.call_id()?;
    let from = msg.from()?;
    let tag = from.tag()?;
    buf.clear();
    buf.push_str(call_id.trim());
    buf.push('\n');
    buf.push_str(itoa::Buffer::new().format(number));
    buf.push('\n');
    buf.push_str(tag);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(method: &str, cseq: &str, tag: &str) -> Message {
        Message::parse(
            format!(
                "{method} sip:b@x SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:a@x>{tag}\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn an_ack_and_its_invite_share_a_key_and_nothing_else_does() {
        let (mut a, mut b) = (String::new(), String::new());
        let invite = dialog_key(&mut a, &msg("INVITE", "2 INVITE", ";tag=t"), "INVITE")
            .unwrap()
            .to_owned();
        assert_eq!(
            dialog_key(&mut b, &msg("ACK", "0002 ACK", ";tag=t"), "ACK"),
            Some(invite.as_str())
        );
        assert_ne!(
            dialog_key(&mut b, &msg("ACK", "3 ACK", ";tag=t"), "ACK"),
            Some(invite.as_str())
        );
        assert_ne!(
            dialog_key(&mut b, &msg("ACK", "2 ACK", ";tag=u"), "ACK"),
            Some(invite.as_str())
        );
        // An ACK whose CSeq says INVITE, or without a From tag, names no INVITE.
        assert_eq!(
            dialog_key(&mut b, &msg("ACK", "2 INVITE", ";tag=t"), "ACK"),
            None
        );
        assert_eq!(dialog_key(&mut b, &msg("ACK", "2 ACK", ""), "ACK"), None);
    }

    #[test]
    fn a_transaction_forgets_only_its_own_entry() {
        let mut accepted = AcceptedInvites::default();
        accepted.insert("d".into(), "first");
        accepted.insert("d".into(), "second");
        accepted.remove("d", "first");
        assert_eq!(accepted.get("d"), Some("second"));
        accepted.remove("d", "second");
        assert_eq!(accepted.len(), 0);
    }
}
