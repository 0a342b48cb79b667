//! MIT krb5 behind the core's Kerberos seam: `sagw_kerberos::KerberosAcceptor` as a
//! [`KerberosBackend`], its sessions as [`GssSession`]s, and its errors as reasons an operator can
//! act on.

use sagw_kerberos::{KerberosAcceptor, KerberosError, KerberosSession};

use crate::counters::Reason;
use crate::kerberos::{KerberosAccepted, KerberosBackend, KerberosRejection};
use crate::sa::GssSession;

/// An MIT acceptor for `sip/<fqdn>` from a keytab.
pub struct MitKerberos {
    acceptor: KerberosAcceptor,
}

impl MitKerberos {
    /// The backend over an acceptor already loaded with its keytab and `sip/<fqdn>` principal.
    pub fn new(acceptor: KerberosAcceptor) -> Self {
        MitKerberos { acceptor }
    }
}

struct MitSession(KerberosSession);

impl GssSession for MitSession {
    fn get_mic(&self, buffer: &[u8]) -> Result<Vec<u8>, String> {
        self.0.get_mic(buffer).map_err(|e| e.to_string())
    }

    fn verify_mic(&self, buffer: &[u8], token: &[u8]) -> Result<(), String> {
        self.0.verify_mic(buffer, token).map_err(|e| e.to_string())
    }

    fn export(&self) -> Result<Vec<u8>, String> {
        // The caller (SaRecord) keeps it in a Zeroizing buffer and seals it.
        self.0
            .export()
            .map(|token| token.to_vec())
            .map_err(|e| e.to_string())
    }
}

/// What an AP-REQ failure means for metrics; the error's text (MIT's own words, no key material)
/// goes to the log.
pub fn reason_for(e: &KerberosError) -> Reason {
    match e {
        KerberosError::Malformed { .. } | KerberosError::Unsupported { .. } => {
            Reason::MalformedToken
        }
        KerberosError::WrongService { .. } => Reason::WrongService,
        KerberosError::TicketExpired { .. } | KerberosError::TicketNotYetValid { .. } => {
            Reason::TicketExpired
        }
        KerberosError::Replay => Reason::ReplayedToken,
        KerberosError::ClockSkew { .. } => Reason::ClockSkew,
        KerberosError::WrongRealm { .. } => Reason::WrongRealm,
        KerberosError::NoKey { .. } | KerberosError::Integrity { .. } => Reason::GatewayKeytab,
        _ => Reason::KerberosRejected,
    }
}

impl KerberosBackend for MitKerberos {
    fn targetname(&self) -> &str {
        self.acceptor.targetname()
    }

    fn accept(&self, ap_req: &[u8]) -> Result<KerberosAccepted, KerberosRejection> {
        match self.acceptor.accept(ap_req) {
            Ok(a) => Ok(KerberosAccepted {
                session: Box::new(MitSession(a.session)),
                client_principal: a.client_principal,
                ticket_end: a.ticket_end,
                ap_rep: a.ap_rep,
            }),
            Err(e) => Err(KerberosRejection {
                reason: reason_for(&e),
                detail: e.to_string(),
            }),
        }
    }

    fn import_session(&self, exported: &[u8]) -> Result<Box<dyn GssSession>, String> {
        KerberosSession::import(exported)
            .map(|s| Box::new(MitSession(s)) as Box<dyn GssSession>)
            .map_err(|e| e.to_string())
    }

    fn well_formed(&self, ap_req: &[u8]) -> bool {
        // What the acceptor checks first (the framing, and an authenticator it can find).
        sagw_kerberos::authenticator_ciphertext(ap_req).is_ok()
    }

    fn replay_key(&self, ap_req: &[u8]) -> Option<[u8; 32]> {
        sagw_kerberos::authenticator_ciphertext(ap_req)
            .ok()
            .map(crate::kerberos::sha256)
    }

    fn clock_skew(&self) -> std::time::Duration {
        self.acceptor.effective_clock_skew()
    }
}
