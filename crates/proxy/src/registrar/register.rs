//! REGISTER handling: a request is validated whole, then each Contact adds a binding or refreshes
//! its device's in place; expiry 0 and the wildcard remove them, and the per-AOR limit evicts the
//! oldest.

use std::time::{Duration, Instant};

use sagw_sip::{Message, parse_name_addr};

use super::binding::{contact_key, device_key};
use super::index::{point_contact, unindex_flow, unpoint_contact};
use super::{Binding, BindingInfo, RegisterOutcome, Registrar};
use crate::hook::SaEndpoint;
use crate::types::{BindingChange, Flow};
use crate::uri::{SipUri, list_elements, push_decimal};

/// A validated Contact of a REGISTER, borrowed from the request.
struct Update<'r> {
    key: String,
    contact: &'r str,
    instance: Option<String>,
    secs: u64,
}

/// What one REGISTER says of every binding it adds or refreshes: who sent it, over which flow,
/// and its place in the client's sequence (Call-ID, CSeq).
struct Registration<'r> {
    epid: Option<&'r str>,
    endpoint: Option<&'r SaEndpoint>,
    flow: Flow,
    call_id: &'r str,
    cseq: u32,
}

impl Registrar {
    /// Apply a REGISTER received over `flow` at `now`, from `endpoint` when the authentication
    /// stage proved one.
    pub(crate) fn register(
        &mut self,
        req: &Message,
        flow: Flow,
        endpoint: Option<&SaEndpoint>,
        now: Instant,
    ) -> RegisterOutcome {
        let mut aor_buf = std::mem::take(&mut self.aor_buf);
        let outcome = self.register_with(req, flow, endpoint, now, &mut aor_buf);
        self.aor_buf = aor_buf;
        outcome
    }

    fn register_with(
        &mut self,
        req: &Message,
        flow: Flow,
        endpoint: Option<&SaEndpoint>,
        now: Instant,
        aor_buf: &mut String,
    ) -> RegisterOutcome {
        self.expire(now);
        let bad = |why: &'static str| RegisterOutcome::Error(400, why, Vec::new());
        let Some(to) = req.to() else {
            return bad("Bad To");
        };
        let Some(aor_uri) = SipUri::parse(to.uri) else {
            return RegisterOutcome::Error(416, "Unsupported URI Scheme", Vec::new());
        };
        aor_uri.write_aor(aor_buf);
        let aor = aor_buf.as_str();
        let epid = req
            .from()
            .and_then(|f| f.param("epid"))
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        let Some(call_id) = req.call_id() else {
            return bad("Missing Call-ID");
        };
        let Some(cseq) = req.cseq().and_then(|c| c.value()) else {
            return bad("Bad CSeq");
        };
        let header_expires = req.expires().and_then(|e| e.trim().parse::<u64>().ok());
        let contacts: Vec<&str> = req.header_all("Contact").flat_map(list_elements).collect();

        if contacts.contains(&"*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return bad("Invalid wildcard");
            }
            // RFC 3261 §10.3 step 6 holds for `*` too: a binding made on the same Call-ID with
            // this CSeq or a later one outranks it, and the request fails whole. Without this, an
            // unregistration that arrived late over UDP (or was held back and released within
            // its nonce's life) removed the binding a later REGISTER had made.
            let bindings = self.aors.get(aor);
            if bindings.is_some_and(|m| m.values().any(|b| b.outranks(call_id, cseq))) {
                return RegisterOutcome::Error(500, "Out Of Order", Vec::new());
            }
            let keys: Vec<String> = bindings
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for key in keys {
                self.remove(aor, &key);
            }
            return RegisterOutcome::Ok {
                headers: Vec::new(),
            };
        }

        // Validate everything before changing anything: a REGISTER is applied whole or not at all.
        let mut updates = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Ok(na) = parse_name_addr(c) else {
                return bad("Bad Contact");
            };
            if SipUri::parse(na.uri).is_none() {
                return RegisterOutcome::Error(416, "Unsupported URI Scheme", Vec::new());
            }
            let secs = match na.param("expires") {
                Some(e) => match e.trim().parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => return bad("Bad expires"),
                },
                None => header_expires.unwrap_or(self.config.default_expires.as_secs()),
            };
            if secs != 0 && secs < self.config.min_expires.as_secs() {
                return RegisterOutcome::Error(
                    423,
                    "Interval Too Brief",
                    vec![("Min-Expires", self.config.min_expires.as_secs().to_string())],
                );
            }
            let secs = secs.min(self.config.max_expires.as_secs());
            let instance = na
                .param("+sip.instance")
                .map(|i| i.trim_matches(|c| c == '<' || c == '>').to_owned());
            // One binding per device: the instance id, else the MS endpoint id, else the URI.
            let key = device_key(instance.as_deref(), epid.as_deref(), na.uri);
            if let Some(old) = self.aors.get(aor).and_then(|m| m.get(&key))
                && old.outranks(call_id, cseq)
            {
                return RegisterOutcome::Error(500, "Out Of Order", Vec::new());
            }
            updates.push(Update {
                key,
                contact: na.uri,
                instance,
                secs,
            });
        }

        let reg = Registration {
            epid: epid.as_deref(),
            endpoint,
            flow,
            call_id,
            cseq,
        };
        for update in updates {
            if update.secs == 0 {
                self.remove(aor, &update.key);
                continue;
            }
            self.seq += 1;
            let seq = self.seq;
            let expires_at = crate::types::later(now, Duration::from_secs(update.secs));
            let existed = self.refresh(aor, &update, &reg, expires_at, seq);
            if !existed {
                let Update {
                    key,
                    contact,
                    instance,
                    ..
                } = update;
                let binding = Binding {
                    info: BindingInfo {
                        aor: aor.to_owned(),
                        epid: reg.epid.map(str::to_owned),
                        instance,
                        contact: contact.to_owned(),
                        endpoint: reg.endpoint.cloned(),
                    },
                    flow,
                    expires_at,
                    call_id: call_id.to_owned(),
                    cseq,
                    seq,
                    contact_key: contact_key(contact),
                };
                self.expiry
                    .insert((expires_at, seq), (aor.to_owned(), key.clone()));
                self.index(aor, &key, &binding);
                let map = self.aors.entry(aor.to_owned()).or_default();
                map.insert(key, binding);
            }
            self.changes.push((
                aor.to_owned(),
                if existed {
                    BindingChange::Refreshed
                } else {
                    BindingChange::Added
                },
            ));
            self.evict_over_limit(aor);
        }

        let bindings = self.lookup(aor, now);
        let mut headers = Vec::with_capacity(bindings.len() + 1);
        headers.extend(bindings.into_iter().map(|b| {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            let mut c = String::with_capacity(b.info.contact.len() + 40);
            c.push('<');
            c.push_str(&b.info.contact);
            c.push_str(">;expires=");
            push_decimal(&mut c, left);
            if let Some(i) = &b.info.instance {
                c.push_str(";+sip.instance=\"<");
                c.push_str(i);
                c.push_str(">\"");
            }
            ("Contact", c)
        }));
        RegisterOutcome::Ok { headers }
    }

    /// Refresh the binding `aor`/`key` in place with a new REGISTER: what removing it and
    /// inserting the new one did, without rebuilding its index entries or moving its keys.
    /// False when there is no such binding.
    fn refresh(
        &mut self,
        aor: &str,
        update: &Update<'_>,
        reg: &Registration<'_>,
        expires_at: Instant,
        seq: u64,
    ) -> bool {
        let Registration {
            epid,
            endpoint,
            flow,
            call_id,
            cseq,
        } = *reg;
        let key = update.key.as_str();
        let Some(b) = self.aors.get_mut(aor).and_then(|m| m.get_mut(key)) else {
            return false;
        };
        // The expiry entry moves to the new deadline with the same (aor, key) strings.
        let slot = self
            .expiry
            .remove(&(b.expires_at, b.seq))
            .unwrap_or_else(|| (aor.to_owned(), key.to_owned()));
        self.expiry.insert((expires_at, seq), slot);
        // The identity registered over the old flow goes if it was this binding's (as a removal
        // would do); over the new flow it is set below.
        if b.flow != flow && self.flows.get(&b.flow).is_some_and(|i| *i == b.info) {
            self.flows.remove(&b.flow);
        }
        if b.flow.transport.is_reliable() && (b.flow.id != flow.id || !flow.transport.is_reliable())
        {
            unindex_flow(&mut self.by_flow, b.flow.id, aor, key);
        }
        if flow.transport.is_reliable() && (b.flow.id != flow.id || !b.flow.transport.is_reliable())
        {
            self.by_flow
                .entry(flow.id)
                .or_default()
                .insert((aor.to_owned(), key.to_owned()));
        }
        if b.info.contact != update.contact {
            if let Some(ck) = &b.contact_key {
                unpoint_contact(&mut self.by_contact, ck, aor, key);
            }
            b.info.contact = update.contact.to_owned();
            b.contact_key = contact_key(update.contact);
        }
        // Re-pointed even when unchanged: another binding with the same contact may have taken
        // it since, and the latest registration wins.
        if let Some(ck) = &b.contact_key {
            point_contact(&mut self.by_contact, ck, aor, key);
        }
        if b.info.epid.as_deref() != epid {
            b.info.epid = epid.map(str::to_owned);
        }
        if b.info.instance != update.instance {
            b.info.instance.clone_from(&update.instance);
        }
        if b.info.endpoint.as_ref() != endpoint {
            b.info.endpoint = endpoint.cloned();
        }
        if b.call_id != call_id {
            b.call_id.clear();
            b.call_id.push_str(call_id);
        }
        b.flow = flow;
        b.expires_at = expires_at;
        b.cseq = cseq;
        b.seq = seq;
        self.flows.set(flow, &b.info);
        true
    }

    pub(super) fn evict_over_limit(&mut self, aor: &str) {
        loop {
            let Some(map) = self.aors.get(aor) else {
                return;
            };
            if map.len() <= self.config.max_bindings_per_aor.max(1) {
                return;
            }
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, b)| b.seq)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.remove(aor, &oldest);
            self.evictions += 1;
        }
    }

    pub(super) fn remove_if_lapsed(&mut self, aor: &str, key: &str, now: Instant) {
        let lapsed = self
            .aors
            .get(aor)
            .and_then(|m| m.get(key))
            .is_some_and(|b| b.expires_at <= now);
        if lapsed {
            self.remove(aor, key);
        }
    }

    pub(super) fn remove(&mut self, aor: &str, key: &str) -> Option<Binding> {
        let map = self.aors.get_mut(aor)?;
        let b = map.remove(key)?;
        if map.is_empty() {
            self.aors.remove(aor);
        }
        self.expiry.remove(&(b.expires_at, b.seq));
        self.unindex(aor, key, &b);
        self.changes.push((aor.to_owned(), BindingChange::Removed));
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::RegistrarConfig;
    use crate::types::{FlowId, Transport};

    fn flow(id: u64) -> Flow {
        Flow {
            id: FlowId(id),
            transport: Transport::Tcp,
            remote: "192.0.2.1:40000".parse().unwrap(),
        }
    }

    fn register(contact: &str, expires: Option<&str>, cseq: u32, epid: &str) -> Message {
        let mut s = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK{cseq}\r\n\
From: <sip:alice@Example.com>;tag=1;epid={epid}\r\nTo: <sip:alice@Example.com>\r\n\
Call-ID: reg1\r\nCSeq: {cseq} REGISTER\r\n"
        );
        if !contact.is_empty() {
            s.push_str(&format!("Contact: {contact}\r\n"));
        }
        if let Some(e) = expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        Message::parse(s.as_bytes()).unwrap()
    }

    /// `Contact: *` that comes after a later REGISTER on the same Call-ID (reordered over UDP, or
    /// held back and released) is out of order, as any other would be: the binding stays.
    #[test]
    fn a_wildcard_unregistration_older_than_a_binding_is_out_of_order() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        r.register(
            &register("<sip:alice@10.0.0.1>", Some("600"), 6, "e1"),
            flow(1),
            None,
            t0,
        );
        assert!(matches!(
            r.register(&register("*", Some("0"), 5, "e1"), flow(1), None, t0),
            RegisterOutcome::Error(500, ..)
        ));
        assert_eq!(r.lookup("sip:alice@example.com", t0).len(), 1);
        // A later one removes it.
        assert!(matches!(
            r.register(&register("*", Some("0"), 7, "e1"), flow(1), None, t0),
            RegisterOutcome::Ok { .. }
        ));
        assert!(r.lookup("sip:alice@example.com", t0).is_empty());
    }

    #[test]
    fn bind_refresh_expire() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        let out = r.register(
            &register(
                "<sip:alice@10.0.0.1:5060;transport=tcp>",
                Some("600"),
                1,
                "e1",
            ),
            flow(1),
            None,
            t0,
        );
        assert_eq!(
            out,
            RegisterOutcome::Ok {
                headers: vec![(
                    "Contact",
                    "<sip:alice@10.0.0.1:5060;transport=tcp>;expires=600".into()
                )]
            }
        );
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].info.epid.as_deref(), Some("e1"));
        assert_eq!(b[0].flow, flow(1));
        assert_eq!(
            r.flow_identity(&flow(1)).unwrap().aor,
            "sip:alice@example.com"
        );
        assert!(r.lookup_contact("sip:alice@10.0.0.1:5060", t0).is_some());
        assert!(r.lookup_contact("sip:alice@10.0.0.2:5060", t0).is_none());
        // Same epid again: the binding is replaced, not duplicated.
        r.register(
            &register("<sip:alice@10.0.0.9>", Some("600"), 2, "e1"),
            flow(2),
            None,
            t0,
        );
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].flow, flow(2));
        // Replays and reordering are refused.
        assert!(matches!(
            r.register(
                &register("<sip:alice@10.0.0.9>", Some("600"), 2, "e1"),
                flow(2),
                None,
                t0
            ),
            RegisterOutcome::Error(500, ..)
        ));
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(600)));
        r.expire(t0 + Duration::from_secs(599));
        assert_eq!(r.len(), 1);
        r.expire(t0 + Duration::from_secs(600));
        assert_eq!(r.len(), 0);
        assert!(r.lookup("sip:alice@example.com", t0).is_empty());
    }

    #[test]
    fn interval_wildcard_and_flow_close() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            r.register(
                &register("<sip:a@h>", Some("10"), 1, "e1"),
                flow(1),
                None,
                t0
            ),
            RegisterOutcome::Error(
                423,
                "Interval Too Brief",
                vec![("Min-Expires", "60".into())]
            )
        );
        assert!(r.is_empty());
        r.register(
            &register("<sip:a@h>;expires=99999", None, 2, "e1"),
            flow(1),
            None,
            t0,
        );
        assert_eq!(
            r.lookup("sip:alice@example.com", t0)[0].expires_at,
            t0 + Duration::from_secs(7200)
        );
        r.register(&register("<sip:a@h2>", None, 3, "e2"), flow(2), None, t0);
        assert_eq!(r.len(), 2);
        // Query: no Contact, no change.
        let RegisterOutcome::Ok { headers } =
            r.register(&register("", None, 4, "e1"), flow(1), None, t0)
        else {
            panic!()
        };
        assert_eq!(headers.len(), 2);
        r.flow_closed(FlowId(2));
        assert_eq!(r.len(), 1);
        assert!(matches!(
            r.register(&register("*", None, 5, "e1"), flow(1), None, t0),
            RegisterOutcome::Error(400, ..)
        ));
        r.register(&register("*", Some("0"), 6, "e1"), flow(1), None, t0);
        assert!(r.is_empty());
    }

    #[test]
    fn refresh_in_place_keeps_every_index() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        let udp = Flow {
            id: FlowId(0),
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().unwrap(),
        };
        r.register(
            &register("<sip:alice@10.0.0.1:5060>", Some("600"), 1, "e1"),
            flow(1),
            None,
            t0,
        );
        assert_eq!(r.by_flow.len(), 1);
        // Same device, new contact, over UDP: the old contact, flow and flow index are gone.
        let t1 = t0 + Duration::from_secs(10);
        r.register(
            &register("<sip:alice@10.0.0.2:5070>", Some("900"), 2, "e1"),
            udp,
            None,
            t1,
        );
        assert_eq!(r.len(), 1);
        assert!(r.lookup_contact("sip:alice@10.0.0.1:5060", t1).is_none());
        assert_eq!(
            r.lookup_contact("sip:alice@10.0.0.2:5070", t1)
                .unwrap()
                .1
                .flow,
            udp
        );
        assert!(r.flow_identity(&flow(1)).is_none());
        assert_eq!(r.flow_identity(&udp).unwrap().aor, "sip:alice@example.com");
        assert!(r.by_flow.is_empty(), "UDP bindings are not indexed by flow");
        assert_eq!(r.next_expiry(), Some(t1 + Duration::from_secs(900)));
        r.flow_closed(FlowId(1));
        r.flow_closed(FlowId(0));
        assert_eq!(r.len(), 1);
        // Back to a stream flow: indexed again, and closing it removes the binding.
        r.register(
            &register("<sip:alice@10.0.0.2:5070>", Some("900"), 3, "e1"),
            flow(3),
            None,
            t1,
        );
        assert_eq!(r.by_flow.len(), 1);
        assert_eq!(r.expiry.len(), 1);
        r.flow_closed(FlowId(3));
        assert!(r.is_empty());
        assert!(r.by_contact.is_empty() && r.flows.is_empty() && r.expiry.is_empty());
    }

    #[test]
    fn per_aor_limit_evicts_the_oldest() {
        let mut r = Registrar::new(RegistrarConfig {
            max_bindings_per_aor: 2,
            ..RegistrarConfig::default()
        });
        let t0 = Instant::now();
        for (i, e) in ["e1", "e2", "e3"].iter().enumerate() {
            r.register(
                &register(&format!("<sip:a@h{i}>"), None, i as u32 + 1, e),
                flow(i as u64),
                None,
                t0,
            );
        }
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].info.epid.as_deref(), Some("e3"));
        assert_eq!(b[1].info.epid.as_deref(), Some("e2"));
    }
}
