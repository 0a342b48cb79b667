//! The pool hand-over: SAs exported as records, adopted from another gateway (or the last
//! run), forgotten or revoked when the pool says so.

use super::signatures::SignedParams;
use super::*;

impl SecurityCore {
    /// SAs made, moved on and ended since the last call.
    pub fn drain_pool_journal(&self) -> crate::pool::PoolJournal {
        self.sas.drain_journal()
    }

    /// The SA as a record another gateway (or the next start) can take in with
    /// [`adopt_sa`](Self::adopt_sa). Key material: seal it.
    pub fn export_sa(&self, sa: &SecurityAssociation) -> Result<SaRecord, RecordError> {
        let secret = match sa.mechanism() {
            Mechanism::Ntlm(session) => {
                let (key, flags) = session
                    .export()
                    .ok_or_else(|| RecordError::NotExportable("NTLM session without ESS".into()))?;
                SaSecret::Ntlm {
                    exported_session_key: *key.as_bytes(),
                    negotiate_flags: flags,
                }
            }
            Mechanism::Kerberos(session) => SaSecret::Kerberos(zeroize::Zeroizing::new(
                session.export().map_err(RecordError::NotExportable)?,
            )),
        };
        Ok(SaRecord {
            opaque: sa.opaque(),
            version: sa.version(),
            identity: sa.identity().to_owned(),
            epid: sa.epid().to_owned(),
            created: sa.created(),
            hard_expiry: sa.hard_expiry(),
            idle_ttl: sa.idle_ttl(),
            secret,
            final_token: sa.peek_final_token(),
        })
    }

    /// Takes in an SA made elsewhere in the pool (or before a restart), going on from `resume`.
    /// It replaces whatever this gateway held for the same opaque or endpoint. Refused when its
    /// time is up or its keys cannot be used here (a Kerberos SA on a gateway without Kerberos).
    pub fn adopt_sa(
        &self,
        record: SaRecord,
        resume: &SaResume,
        now: SystemTime,
    ) -> Result<SaHandle, RecordError> {
        let sa = self.sa_from_record(&record, resume, now)?;
        Ok(self.sas.adopt(sa, &self.counters).handle)
    }

    /// Whether `msg` is signed with the SA `record` describes, and the signature holds under
    /// `resume`'s replay window: judged on a copy of the SA that is then dropped, so nothing here
    /// changes. A gateway of a pool claims an SA only for a held message that passes this, so a
    /// made-up signature cannot move an SA between gateways (docs/security.md B11c).
    pub fn verifies_with_record(
        &self,
        record: &SaRecord,
        resume: &SaResume,
        msg: &Message,
        now: SystemTime,
    ) -> bool {
        let Ok(sa) = self.sa_from_record(record, resume, now) else {
            return false;
        };
        let dir = if msg.is_request() {
            Direction::Request
        } else {
            Direction::Response
        };
        // Every credentials header of the record's scheme and opaque, whatever policy would meet
        // the message (the default one may not offer the scheme: a policy chosen by listener or
        // client rule does); that policy is applied when the message itself is judged.
        let facts = MessageFacts::of(msg);
        ["Authorization", "Proxy-Authorization"]
            .iter()
            .flat_map(|name| msg.header_all(name))
            .filter_map(|value| AuthHeader::parse(value).ok())
            .any(|h| {
                let params = SignedParams::of(&h);
                SaScheme::from_token(h.scheme) == Some(sa.scheme())
                    && params.opaque.and_then(Opaque::parse) == Some(record.opaque)
                    && self
                        .verify_params(msg, &facts, h.scheme, &params, &sa, dir, now)
                        .is_ok()
            })
    }

    /// The SA `record` describes, going on from `resume`, not (yet) among this core's SAs.
    fn sa_from_record(
        &self,
        record: &SaRecord,
        resume: &SaResume,
        now: SystemTime,
    ) -> Result<SecurityAssociation, RecordError> {
        let secs = unix_secs(now);
        let idle_deadline = resume
            .idle_deadline
            .unwrap_or_else(|| secs.saturating_add(u64::from(record.idle_ttl)));
        if secs >= record.hard_expiry || secs >= idle_deadline {
            return Err(RecordError::Ended);
        }
        let mechanism = match &record.secret {
            SaSecret::Ntlm {
                exported_session_key,
                negotiate_flags,
            } => Mechanism::Ntlm(
                sagw_ntlm::NtlmSession::from_exported_session_key(
                    &sagw_ntlm::Key16::from_bytes(*exported_session_key),
                    *negotiate_flags,
                )
                .map_err(|e| RecordError::NotImportable(e.to_string()))?,
            ),
            SaSecret::Kerberos(ctx) => {
                let backend = self.kerberos.as_ref().ok_or_else(|| {
                    RecordError::NotImportable("Kerberos is not enabled here".into())
                })?;
                Mechanism::Kerberos(
                    backend
                        .import_session(ctx)
                        .map_err(RecordError::NotImportable)?,
                )
            }
        };
        let window = match resume.window {
            Some(bytes) => Some(ReplayWindow::from_bytes(&bytes).ok_or(RecordError::Malformed)?),
            None => None,
        };
        let sa = SecurityAssociation::new(NewSa {
            opaque: record.opaque,
            version: record.version,
            identity: record.identity.clone(),
            epid: record.epid.clone(),
            mechanism,
            now: record.created,
            hard_expiry: record.hard_expiry,
            idle_ttl: record.idle_ttl,
            final_token: record.final_token.clone(),
        });
        sa.resume(resume.snum_after, window, idle_deadline);
        Ok(sa)
    }

    /// Drops an SA another gateway of the pool took over (it lives on there).
    pub fn forget_sa(&self, opaque: Opaque) -> bool {
        self.sas.forget(opaque)
    }

    /// Ends `identity`'s SA under `opaque`, which the pool refused because the opaque names
    /// another identity's SA there: the client's next message meets no SA and is challenged, so
    /// it signs in again under a new opaque (docs/security.md B11e). An SA of another identity
    /// held here under the opaque stays.
    pub fn forget_taken_sa(&self, opaque: Opaque, identity: &str) -> bool {
        self.sas.forget_taken(opaque, identity)
    }

    /// Ends an SA revoked on another gateway of the pool.
    pub fn revoke_from_pool(&self, opaque: Opaque) -> bool {
        self.sas.revoke_from_pool(opaque, &self.counters)
    }

    /// Ends every SA of an identity revoked on another gateway of the pool.
    pub fn revoke_identity_from_pool(&self, identity: &str) -> usize {
        self.sas.revoke_identity_from_pool(identity, &self.counters)
    }
}
