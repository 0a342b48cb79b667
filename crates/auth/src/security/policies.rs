//! The policy registry: what each named policy offers, and which schemes this core can serve.

use super::*;

impl SecurityCore {
    /// Registers a policy a caller can name per request ([`SecurityCore::on_request_under`]).
    /// Refused when it offers nothing, or a scheme this core has no acceptor for (call
    /// [`SecurityCore::with_kerberos`] first for Kerberos).
    pub fn add_policy(&mut self, policy: AuthPolicy) -> Result<PolicyId, PolicyError> {
        if policy.schemes.is_empty() {
            return Err(PolicyError::Empty);
        }
        if let Some(s) = policy.schemes.iter().find(|s| !self.serves(*s)) {
            return Err(PolicyError::NotServed(s));
        }
        let digest = match (&policy.digest, &self.digest) {
            (Some(offer), Some(d)) if policy.schemes.contains(Scheme::Digest) => {
                let mut cfg = d.server.config().clone();
                cfg.realm = offer.realm.clone();
                cfg.algorithms = offer.algorithms.clone();
                cfg.validate()
                    .map_err(|e| PolicyError::Digest(e.to_string()))?;
                Some(DigestServer::new(cfg, NonceKey::new(d.key)))
            }
            _ => None,
        };
        let id = u16::try_from(self.policies.len()).map_err(|_| PolicyError::TooMany)?;
        self.policies.push(PolicyState {
            schemes: policy.schemes,
            digest,
        });
        Ok(PolicyId(id))
    }

    /// What a policy offers, as the core will challenge with it (for logs and probes).
    pub fn policy_offer(&self, id: PolicyId) -> Option<PolicyOffer<'_>> {
        let p = self.policies.get(id.index())?;
        let digest = self.digest_server(p).map(|d| d.config());
        Some(PolicyOffer {
            schemes: p.schemes.iter().filter(|s| self.serves(*s)).collect(),
            digest_realm: digest.map(|c| c.realm.as_str()),
            digest_algorithms: digest.map_or(&[], |c| c.algorithms.as_slice()),
        })
    }

    pub(super) fn serves(&self, s: Scheme) -> bool {
        match s {
            Scheme::Kerberos => self.kerberos.is_some(),
            Scheme::Ntlm => self.ntlm.is_some(),
            Scheme::Digest => self.digest.is_some(),
        }
    }

    pub(super) fn offers(&self, p: &PolicyState, s: Scheme) -> bool {
        p.schemes.contains(s) && self.serves(s)
    }

    /// The Digest server of a policy, when it offers Digest.
    pub(super) fn digest_server<'a>(&'a self, p: &'a PolicyState) -> Option<&'a DigestServer> {
        if !p.schemes.contains(Scheme::Digest) {
            return None;
        }
        let core = &self.digest.as_ref()?.server;
        Some(p.digest.as_ref().unwrap_or(core))
    }

    /// The policy `id` names; an id this core did not hand out means the default (ids come from
    /// [`SecurityCore::add_policy`], so that is a caller bug, not an input error).
    pub(super) fn policy(&self, id: PolicyId) -> &PolicyState {
        self.policies
            .get(id.index())
            .or_else(|| self.policies.first())
            .unwrap_or(&DEFAULT_POLICY)
    }
}
