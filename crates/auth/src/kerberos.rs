//! The Kerberos seam: the core drives any acceptor that turns an AP-REQ into a GSS session. The gateway
//! plugs in MIT krb5 (crate `sagw-kerberos`); keeping C libraries out of this crate keeps it buildable
//! and testable on its own.

use std::time::SystemTime;

use crate::counters::Reason;
use crate::sa::GssSession;

/// A Kerberos context the acceptor established.
pub struct KerberosAccepted {
    pub session: Box<dyn GssSession>,
    /// `alice@EXAMPLE.TEST`.
    pub client_principal: String,
    pub ticket_end: Option<SystemTime>,
    /// AP-REP for clients that asked for mutual authentication.
    pub ap_rep: Option<Vec<u8>>,
}

/// Why an AP-REQ was refused, for logs (no secrets in `detail`) and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosRejection {
    pub reason: Reason,
    pub detail: String,
}

/// A Kerberos acceptor for `sip/<fqdn>`.
pub trait KerberosBackend: Send + Sync {
    /// `sip/<fqdn>`, as challenges and signature buffers carry it.
    fn targetname(&self) -> &str;
    fn accept(&self, ap_req: &[u8]) -> Result<KerberosAccepted, KerberosRejection>;
    /// A session exported by [`GssSession::export`] (on this node or another node of the pool),
    /// made usable again. Backends that cannot move sessions refuse.
    fn import_session(&self, exported: &[u8]) -> Result<Box<dyn GssSession>, String> {
        let _ = exported;
        Err("this Kerberos backend cannot import sessions".into())
    }
}

/// Default mapping of a client principal to a SIP identity: `alice@EXAMPLE.TEST` ->
/// `sip:alice@example.test`; with `domain` set, `sip:alice@<domain>`.
///
/// A principal with an instance component (`bob/admin@REALM`, `host/pc1@REALM`) maps to nothing:
/// it is a different principal from `bob@REALM`, with its own key, often held by someone else
/// (an administrator's second identity, a service or machine). Dropping the instance would let it
/// speak as `sip:bob@…`; mapping it to `sip:bob/admin@…` would make a SIP user nobody provisions.
/// SIP users are user principals, so these are refused.
pub fn principal_to_identity(principal: &str, domain: Option<&str>) -> Option<String> {
    let (user, realm) = principal.rsplit_once('@').unwrap_or((principal, ""));
    if user.is_empty() || user.contains('/') {
        return None;
    }
    let host = domain.map_or_else(|| realm.to_ascii_lowercase(), str::to_owned);
    Some(format!("sip:{}@{}", user.to_ascii_lowercase(), host))
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_principals() {
        assert_eq!(
            super::principal_to_identity("alice@EXAMPLE.TEST", None).as_deref(),
            Some("sip:alice@example.test")
        );
        assert_eq!(
            super::principal_to_identity("Bob@CORP.EXAMPLE", Some("example.com")).as_deref(),
            Some("sip:bob@example.com")
        );
    }

    #[test]
    fn refuses_principals_with_an_instance() {
        for p in [
            "bob/admin@EXAMPLE.TEST",
            "host/pc1.example.test@EXAMPLE.TEST",
            "@EXAMPLE.TEST",
        ] {
            assert_eq!(super::principal_to_identity(p, None), None, "{p}");
        }
    }
}
