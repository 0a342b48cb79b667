//! Challenges: the 401/407 headers a policy offers (one per scheme, and `Date`), and the
//! re-challenge of a request or handshake leg that failed.

use super::*;

/// The NTLM and Kerberos challenge values (`NTLM qop="auth", realm=…, targetname=…, version=…`):
/// constant for a core, so built with [`AuthHeaderBuilder`] (its quoting) once, when the scheme
/// is enabled, not on every challenge.
#[derive(Default)]
pub(super) struct MsChallenges {
    pub(super) ntlm: Option<String>,
    pub(super) kerberos: Option<String>,
}

impl MsChallenges {
    pub(super) fn value(scheme: &str, realm: &str, targetname: &str, version: u8) -> String {
        AuthHeaderBuilder::new(scheme)
            .quoted("qop", "auth")
            .quoted("realm", realm)
            .quoted("targetname", targetname)
            .token("version", itoa::Buffer::new().format(version))
            .build()
    }
}

impl SecurityCore {
    pub(super) fn family_for(policy: &ChallengePolicy, msg: &Message) -> ChallengeFamily {
        if msg.method().is_some_and(|m| m == "REGISTER") {
            policy.register
        } else {
            policy.other
        }
    }

    pub(super) fn ntlm_targetname(&self) -> Option<&str> {
        self.config.ntlm.as_ref().map(|n| n.targetname.as_str())
    }

    pub(super) fn kerberos_targetname(&self) -> Option<&str> {
        self.kerberos.as_ref().map(|k| k.targetname())
    }

    /// A fresh challenge: one header per enabled scheme (Kerberos, NTLM, Digest) and `Date`.
    pub fn challenge(
        &self,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        self.challenge_under(PolicyId::DEFAULT, family, cause, stale, now, rng)
    }

    /// A fresh challenge with what policy `id` offers.
    pub fn challenge_under(
        &self,
        id: PolicyId,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        self.challenge_with(self.policy(id), family, cause, stale, now, rng)
    }

    pub(super) fn challenge_with(
        &self,
        p: &PolicyState,
        family: ChallengeFamily,
        cause: Option<Reason>,
        stale: bool,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Challenge {
        let name = family.challenge_header();
        let kerberos =
            (self.ms_challenges.kerberos.as_ref()).filter(|_| p.schemes.contains(Scheme::Kerberos));
        let ntlm = (self.ms_challenges.ntlm.as_ref()).filter(|_| p.schemes.contains(Scheme::Ntlm));
        let digest = self.digest_server(p);
        // Sized once for every header it gets, rather than grown as they are pushed.
        let mut headers = Vec::with_capacity(
            1 + usize::from(kerberos.is_some())
                + usize::from(ntlm.is_some())
                + digest.map_or(0, |d| d.config().algorithms.len()),
        );
        headers.push(("Date", http_date(now)));
        if let Some(value) = kerberos {
            headers.push((name, value.clone()));
        }
        if let Some(value) = ntlm {
            headers.push((name, value.clone()));
        }
        if let Some(server) = digest {
            let mut salt = [0u8; 8];
            rng.fill_bytes(&mut salt);
            headers.extend(
                server
                    .challenge_values(now, salt, stale)
                    .map(|value| (name, value)),
            );
        }
        self.counters.challenge();
        Challenge {
            status: family.status(),
            reason_phrase: family.reason_phrase(),
            headers,
            cause,
        }
    }

    pub(super) fn rechallenge(
        &self,
        msg: &Message,
        p: &PolicyState,
        family: ChallengeFamily,
        cause: Reason,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        if is_ack_or_cancel(msg) {
            self.counters.discarded();
            return Decision::Discard(cause);
        }
        Decision::Challenge(self.challenge_with(p, family, Some(cause), false, now, rng))
    }

    pub(super) fn rechallenge_leg(&self, leg: &mut Leg<'_>, cause: Reason) -> Decision {
        self.rechallenge(
            leg.msg,
            leg.p,
            leg.presented.family,
            cause,
            leg.now,
            leg.rng,
        )
    }

    /// A handshake leg that failed: counted against its scheme's handshakes, then challenged
    /// again.
    pub(super) fn fail_leg(&self, leg: &mut Leg<'_>, scheme: Scheme, reason: Reason) -> Decision {
        self.counters.handshake_failed(scheme, reason);
        self.rechallenge_leg(leg, reason)
    }
}
