//! Non-INVITE transactions answered here over UDP (the registrar's 200 to a REGISTER, a local
//! OPTIONS, an error made here), from their final response to the end of Timer J.
//!
//! RFC 3261 §17.2.2 keeps such a transaction Completed for 64*T1 (32 s) only so that a
//! retransmitted request gets the same answer again. For that the answer's bytes and the flow
//! that opened the transaction are all it needs; a full [`super::transaction::ServerTx`] kept
//! that long held five heap blocks (key, transaction, method, answer, the clean-up timer's copy
//! of the key), and at 4000 REGISTER/s that was 128 000 transactions whose blocks the allocator
//! handed out again, cold, 32 s later. Here an answer is one key shared by the table and the
//! expiry queue, and the answer's bytes; the transaction's own blocks are freed at once, while
//! they are warm (gateway CPU per Digest REGISTER flow over UDP −5 % at 4000/s and −9 % at
//! 8000/s, docs/BENCHMARKS.md).
//!
//! A proxied transaction (one that ever had a branch) keeps its full state instead: a late or
//! retransmitted 2xx from downstream is still relayed to the client it came for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::shares::ClientShares;
use crate::Map;
use crate::hook::ClientKey;
use crate::types::Flow;

/// What a completed transaction answered here keeps.
#[derive(Debug)]
pub(super) struct Answer {
    /// The flow the request came on: a copy of the request from anywhere else is not a
    /// retransmission.
    pub(super) upstream: Flow,
    /// The final response as sent, repeated to each retransmission.
    pub(super) response: Box<[u8]>,
    /// End of Timer J, on the clean-up grid.
    expires: Instant,
    /// Whose share of the transactions it is counted in (`super::shares`).
    client: Option<ClientKey>,
}

/// The answers, by server-transaction key, with their expiries in the order they were made.
#[derive(Debug, Default)]
pub(super) struct Answers {
    by_key: Map<Arc<str>, Answer>,
    /// Timer J is the same for every answer, so the order of insertion is the order of expiry,
    /// and a queue does what a timer heap would: the first due is at the front. (A reload that
    /// shortens T1 lets an answer wait behind older, later ones: it lingers at most the old
    /// 64*T1 instead of the new.)
    expiry: VecDeque<(Instant, Arc<str>)>,
}

impl Answers {
    /// Keeps `response` for the transaction `key` until `expires`.
    pub(super) fn insert(
        &mut self,
        key: &str,
        upstream: Flow,
        response: Box<[u8]>,
        expires: Instant,
        client: Option<ClientKey>,
    ) -> Option<ClientKey> {
        let key: Arc<str> = Arc::from(key);
        self.expiry.push_back((expires, key.clone()));
        self.by_key
            .insert(
                key,
                Answer {
                    upstream,
                    response,
                    expires,
                    client,
                },
            )
            .and_then(|old| old.client)
    }

    pub(super) fn get(&self, key: &str) -> Option<&Answer> {
        self.by_key.get(key)
    }

    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// When the oldest answer is due to go.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.front().map(|(at, _)| *at)
    }

    /// Forgets every answer whose Timer J has fired by `now`, giving its place in its client's
    /// share back.
    pub(super) fn expire(&mut self, now: Instant, shares: &mut ClientShares) {
        while let Some((at, _)) = self.expiry.front()
            && *at <= now
        {
            let Some((_, key)) = self.expiry.pop_front() else {
                break;
            };
            // An answer made again under the same key (not done today) keeps its own, later
            // expiry.
            if self.by_key.get(&key).is_some_and(|a| a.expires <= now)
                && let Some(gone) = self.by_key.remove(&key)
            {
                shares.give_back(gone.client);
            }
        }
        if self.by_key.is_empty() && self.expiry.capacity() > 1024 {
            // A burst's queue does not stay allocated for good.
            self.expiry.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::{FlowId, Transport};

    fn flow(port: u16) -> Flow {
        Flow {
            id: FlowId(1),
            transport: Transport::Udp,
            remote: ([192, 0, 2, 1], port).into(),
        }
    }

    #[test]
    fn answers_expire_in_order_and_not_before_their_time() {
        let t0 = Instant::now();
        let mut a = Answers::default();
        a.insert(
            "k1",
            flow(1),
            b"one".to_vec().into(),
            t0 + Duration::from_secs(32),
            None,
        );
        a.insert(
            "k2",
            flow(2),
            b"two".to_vec().into(),
            t0 + Duration::from_secs(33),
            None,
        );
        assert_eq!(a.next_expiry(), Some(t0 + Duration::from_secs(32)));
        a.expire(
            t0 + Duration::from_millis(31_999),
            &mut super::super::shares::ClientShares::default(),
        );
        assert_eq!(a.len(), 2);
        a.expire(
            t0 + Duration::from_secs(32),
            &mut super::super::shares::ClientShares::default(),
        );
        assert_eq!(a.len(), 1);
        assert!(a.get("k1").is_none());
        assert_eq!(a.get("k2").map(|x| &*x.response), Some(&b"two"[..]));
        assert_eq!(a.next_expiry(), Some(t0 + Duration::from_secs(33)));
        a.expire(
            t0 + Duration::from_secs(40),
            &mut super::super::shares::ClientShares::default(),
        );
        assert_eq!((a.len(), a.next_expiry()), (0, None));
    }

    #[test]
    fn an_answer_belongs_to_the_flow_it_was_made_for() {
        let mut a = Answers::default();
        a.insert("k", flow(1), b"x".to_vec().into(), Instant::now(), None);
        let owner = |key: &str, f: &Flow| {
            a.get(key)
                .map(|x| super::super::request::opened_by(x.upstream, f))
        };
        assert_eq!(owner("k", &flow(1)), Some(true));
        assert_eq!(owner("k", &flow(2)), Some(false));
        let tcp = Flow {
            transport: Transport::Tcp,
            ..flow(1)
        };
        assert_eq!(owner("k", &tcp), Some(false));
        assert_eq!(owner("other", &flow(1)), None);
    }

    #[test]
    fn an_answer_made_again_keeps_its_later_expiry() {
        let t0 = Instant::now();
        let mut a = Answers::default();
        a.insert("k", flow(1), b"old".to_vec().into(), t0, None);
        a.insert(
            "k",
            flow(1),
            b"new".to_vec().into(),
            t0 + Duration::from_secs(5),
            None,
        );
        a.expire(t0, &mut super::super::shares::ClientShares::default());
        assert_eq!(a.get("k").map(|x| &*x.response), Some(&b"new"[..]));
        a.expire(
            t0 + Duration::from_secs(5),
            &mut super::super::shares::ClientShares::default(),
        );
        assert_eq!(a.len(), 0);
    }
}
