//! The binding types, and the keys a binding is filed under: its device within the AOR and its
//! Contact.

use std::time::Instant;

use crate::hook::SaEndpoint;
use crate::types::Flow;
use crate::uri::{SipUri, push_decimal};

/// What the authentication stage and routing need to know about a registered endpoint.
#[derive(Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// Address-of-record, normalised (`sip:user@host`, host lower-cased).
    pub aor: String,
    /// The `epid` parameter of the REGISTER's From header ([MS-SIPAE] endpoint id).
    pub epid: Option<String>,
    /// The Contact's `+sip.instance` (RFC 5626), unquoted.
    pub instance: Option<String>,
    /// The Contact URI as the client wrote it.
    pub contact: String,
    /// The endpoint the REGISTER proved to come from, when it was authenticated with an SA:
    /// requests to this binding are signed for it.
    pub endpoint: Option<SaEndpoint>,
}

// Written out for `clone_from`: every REGISTER from another user over a shared flow (all UDP
// clients share the socket's) overwrites the flow's identity with it, and the derived one
// allocates every String again where their buffers can be reused. clone_from destructures the
// source so that a new field cannot be left out (nor can clone's struct literal leave one out).
impl Clone for BindingInfo {
    fn clone(&self) -> Self {
        BindingInfo {
            aor: self.aor.clone(),
            epid: self.epid.clone(),
            instance: self.instance.clone(),
            contact: self.contact.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let BindingInfo {
            aor,
            epid,
            instance,
            contact,
            endpoint,
        } = source;
        self.aor.clone_from(aor);
        self.epid.clone_from(epid);
        self.instance.clone_from(instance);
        self.contact.clone_from(contact);
        self.endpoint.clone_from(endpoint);
    }
}

/// One registered contact.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Identity and contact.
    pub info: BindingInfo,
    /// The flow the registration arrived on: requests for this contact go back over it.
    pub flow: Flow,
    /// When the binding lapses.
    pub expires_at: Instant,
    pub(super) call_id: String,
    pub(super) cseq: u32,
    /// Registration order, for "most recent binding first".
    pub(super) seq: u64,
    /// [`contact_key`] of `info.contact`, kept so that a refresh or a removal need not rebuild it.
    pub(super) contact_key: Option<String>,
}

impl Binding {
    /// Whether a REGISTER with `call_id` and `cseq` comes too late for this binding (RFC 3261
    /// §10.3 steps 6 and 7): the same Call-ID with a CSeq not above the one that made it.
    pub(super) fn outranks(&self, call_id: &str, cseq: u32) -> bool {
        self.call_id == call_id && self.cseq >= cseq
    }
}

/// The binding key of a device: its instance id, else its MS endpoint id, else its Contact URI.
pub(super) fn device_key(instance: Option<&str>, epid: Option<&str>, contact: &str) -> String {
    match (instance, epid) {
        (Some(i), _) => ["i:", i].concat(),
        (None, Some(e)) => ["e:", e].concat(),
        (None, None) => ["u:", contact].concat(),
    }
}

/// `user@host:port` with the host lower-cased: how a Request-URI is matched to a Contact.
pub(super) fn contact_key(uri: &str) -> Option<String> {
    let u = SipUri::parse(uri)?;
    let user = u.user.unwrap_or("");
    let mut key = String::with_capacity(user.len() + u.host.len() + 7);
    key.push_str(user);
    key.push('@');
    key.push_str(u.host);
    // Only the host part is lower-cased (the user part is case-sensitive).
    if let Some(host) = key.get_mut(user.len() + 1..) {
        host.make_ascii_lowercase();
    }
    key.push(':');
    if let Some(p) = u.port {
        push_decimal(&mut key, u64::from(p));
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_info_clone_from_is_clone() {
        let info =
            |aor: &str, epid: Option<&str>, instance: Option<&str>, endpoint: bool| BindingInfo {
                aor: aor.to_owned(),
                epid: epid.map(str::to_owned),
                instance: instance.map(str::to_owned),
                contact: format!("<{aor};transport=udp>"),
                endpoint: endpoint.then(|| SaEndpoint {
                    identity: aor.to_owned(),
                    epid: "e1".to_owned(),
                }),
            };
        let all = [
            info("sip:u00001@example.com", None, None, false),
            info("sip:a@b", Some("e1"), Some("urn:uuid:1"), true),
            info("sip:a.much.longer.user@example.com", Some(""), None, true),
            info("sip:b@c", None, Some("urn:uuid:2"), false),
        ];
        for from in &all {
            for to in &all {
                let mut copy = to.clone();
                copy.clone_from(from);
                assert_eq!(&copy, from);
                assert_eq!(&from.clone(), from);
            }
        }
        // What it is for: another user's identity of the same length takes no new buffer.
        let mut flow = info("sip:u00001@example.com", None, None, false);
        let buffers = (flow.aor.as_ptr(), flow.contact.as_ptr());
        flow.clone_from(&info("sip:u00002@example.com", None, None, false));
        assert_eq!((flow.aor.as_ptr(), flow.contact.as_ptr()), buffers);
        assert_eq!(flow.aor, "sip:u00002@example.com");
    }
}
