//! The SA handshakes of the core: NTLM's legs (the empty first one, the AUTHENTICATE of the
//! last) and Kerberos's AP-REQ, each up to the SA it establishes and the 401/407 or 200 that
//! carries its token. The deferred halves of the same sign-ins are in `deferred.rs`.

use super::*;

/// The `WWW-Authenticate` / `Proxy-Authenticate` value of an NTLM leg 2, written with
/// [`AuthHeaderBuilder`]: `<scheme> qop="auth", opaque="…", gssapi-data="…", targetname="…",
/// realm="…", version=N`. What [`NtlmChallengeHeader`] writes, for the configurations it cannot
/// (and to check it against).
pub(super) fn ntlm_challenge_header_built(
    scheme: &str,
    opaque: Opaque,
    pending: &sagw_ntlm::PendingHandshake,
    target: &str,
    realm: &str,
    version: u8,
) -> String {
    let gssapi = B64.encode(pending.challenge_message());
    // The opaque and the version written without `fmt`, as `{:08X}` and `{}` would.
    let mut opaque_text = [0u8; 8];
    let mut version_text = itoa::Buffer::new();
    // The parameters' names, quotes and separators, the `version` and the scheme take under 128
    // bytes.
    let room = 128 + scheme.len() + gssapi.len() + target.len() + realm.len();
    AuthHeaderBuilder::with_capacity(scheme, room)
        .quoted("qop", "auth")
        .quoted(
            "opaque",
            upper_hex_into(&opaque.0.to_be_bytes(), &mut opaque_text),
        )
        .quoted("gssapi-data", &gssapi)
        .quoted("targetname", target)
        .quoted("realm", realm)
        .token("version", version_text.format(version))
        .build()
}

/// [`ntlm_challenge_header_built`]'s value cut, once per core, around its only parts that change
/// per handshake: the opaque and the CHALLENGE (whose base64 is itself mostly constant,
/// [`sagw_ntlm::PendingHandshake::write_challenge_base64`]). A leg 2 then copies the constant
/// parts instead of quoting, scanning and encoding them again.
pub(super) struct NtlmChallengeHeader {
    /// ` qop="auth", opaque="`: what follows the scheme up to the opaque.
    head: Box<str>,
    /// `", gssapi-data="`.
    mid: Box<str>,
    /// `", targetname="…", realm="…", version=N`.
    tail: Box<str>,
    /// Bytes of a value besides its scheme.
    len: usize,
}

impl NtlmChallengeHeader {
    /// The cut of the value for `acceptor`'s challenges; `None` if the builder did not write the
    /// opaque and the CHALLENGE as they are (it never escapes hex digits or base64).
    pub(super) fn new(
        acceptor: &NtlmAcceptor,
        target: &str,
        realm: &str,
        version: u8,
    ) -> Option<Self> {
        const SCHEME: &str = "NTLM";
        const OPAQUE: &str = "00000000";
        let pending = acceptor.challenge([0; 8], std::time::UNIX_EPOCH);
        let gssapi = B64.encode(pending.challenge_message());
        let mut version_text = itoa::Buffer::new();
        let b = AuthHeaderBuilder::new(SCHEME)
            .quoted("qop", "auth")
            .quoted("opaque", OPAQUE);
        // Each value ends before the closing quote.
        let opaque_end = b.as_str().len().checked_sub(1)?;
        let opaque_at = opaque_end.checked_sub(OPAQUE.len())?;
        let b = b.quoted("gssapi-data", &gssapi);
        let gssapi_end = b.as_str().len().checked_sub(1)?;
        let gssapi_at = gssapi_end.checked_sub(gssapi.len())?;
        let value = b
            .quoted("targetname", target)
            .quoted("realm", realm)
            .token("version", version_text.format(version))
            .build();
        if value.get(opaque_at..opaque_end) != Some(OPAQUE)
            || value.get(gssapi_at..gssapi_end) != Some(gssapi.as_str())
        {
            return None;
        }
        let head = value.get(SCHEME.len()..opaque_at)?;
        let mid = value.get(opaque_end..gssapi_at)?;
        let tail = value.get(gssapi_end..)?;
        Some(NtlmChallengeHeader {
            len: head.len() + OPAQUE.len() + mid.len() + gssapi.len() + tail.len(),
            head: head.into(),
            mid: mid.into(),
            tail: tail.into(),
        })
    }

    /// The value for a leg 1 that named `scheme` (in the client's spelling), byte for byte what
    /// [`ntlm_challenge_header_built`] writes.
    pub(super) fn value(
        &self,
        scheme: &str,
        opaque: Opaque,
        pending: &sagw_ntlm::PendingHandshake,
    ) -> String {
        // The scheme as the builder writes it (a token, made one if it is not).
        let mut out = AuthHeaderBuilder::with_capacity(scheme, scheme.len() + self.len).build();
        let mut opaque_text = [0u8; 8];
        out.push_str(&self.head);
        out.push_str(upper_hex_into(&opaque.0.to_be_bytes(), &mut opaque_text));
        out.push_str(&self.mid);
        pending.write_challenge_base64(&mut out);
        out.push_str(&self.tail);
        out
    }
}

impl SecurityCore {
    pub(super) fn accept_kerberos(
        &self,
        backend: &dyn KerberosBackend,
        ap_req: &[u8],
    ) -> KerberosOutcome {
        let accepted = match backend.accept(ap_req) {
            Ok(a) => a,
            Err(rejection) => {
                return KerberosOutcome {
                    result: Err(rejection),
                    registry_unavailable: false,
                    identity: None,
                };
            }
        };
        let Some(key) = backend.replay_key(ap_req) else {
            return KerberosOutcome {
                result: Ok(accepted),
                registry_unavailable: false,
                identity: None,
            };
        };
        match self
            .kerberos_replay
            .first_use(&key, backend.clock_skew().saturating_mul(2))
        {
            ReplayCheck::First => KerberosOutcome {
                result: Ok(accepted),
                registry_unavailable: false,
                identity: None,
            },
            ReplayCheck::Replayed => KerberosOutcome {
                result: Err(KerberosRejection {
                    reason: Reason::ReplayedToken,
                    detail: "authenticator already used in the pool".into(),
                }),
                registry_unavailable: false,
                identity: None,
            },
            ReplayCheck::Unavailable => {
                self.kerberos_replay_unavailable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                KerberosOutcome {
                    result: Ok(accepted),
                    registry_unavailable: true,
                    identity: None,
                }
            }
        }
    }

    pub(super) fn ms_request(&self, leg: &mut Leg<'_>, scheme: SaScheme) -> Decision {
        match (leg.presented.header.param("gssapi-data"), scheme) {
            (Some(token), SaScheme::Ntlm) => self.ntlm_leg(leg, token),
            (Some(token), SaScheme::Kerberos) => self.kerberos_leg(leg, token),
            (None, _) => {
                match self.verify_signed(
                    leg.msg,
                    leg.presented,
                    scheme,
                    Direction::Request,
                    leg.now,
                ) {
                    Ok(sa) => Decision::Authenticated(Authenticated {
                        identity: sa.identity().to_owned(),
                        scheme: sa.scheme().into(),
                        binding: Binding::Sa {
                            sa,
                            family: leg.presented.family,
                            established_now: false,
                        },
                        credentials_at: leg.presented.at,
                        evicted: Vec::new(),
                    }),
                    Err(reason) => self.rechallenge_leg(leg, reason),
                }
            }
        }
    }

    pub(super) fn client_version(h: &AuthHeader<'_>) -> u8 {
        // No version parameter at all is an LCS 2005-era client: protocol version 2.
        h.param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2)
    }

    pub(super) fn ntlm_leg(&self, leg: &mut Leg<'_>, token: &str) -> Decision {
        let (Some(acceptor), Some(target)) = (&self.ntlm, self.ntlm_targetname()) else {
            return self.rechallenge_leg(leg, Reason::UnsupportedScheme);
        };
        let h = &leg.presented.header;
        let epid = endpoint_epid(&leg.presented.facts, Direction::Request).unwrap_or("");
        if token.is_empty() {
            // Leg 1 of connectionless NTLM: the empty token stands in for NEGOTIATE.
            if is_ack_or_cancel(leg.msg) {
                self.counters.discarded();
                return Decision::Discard(Reason::NoCredentials);
            }
            self.counters.handshake_started(Scheme::Ntlm);
            // Nothing is stored: the final leg recomputes this challenge from its opaque and epid.
            let issued = self
                .ntlm_handshakes
                .issue(&self.sas, epid, leg.now, leg.rng);
            let pending = acceptor.challenge(issued.server_challenge, issued.timestamp);
            let value = match &self.ntlm_challenge_header {
                Some(t) => t.value(h.scheme, issued.opaque, &pending),
                None => ntlm_challenge_header_built(
                    h.scheme,
                    issued.opaque,
                    &pending,
                    target,
                    &self.config.realm,
                    self.config.version,
                ),
            };
            self.counters.challenge();
            return Decision::Continue(Challenge {
                status: leg.presented.family.status(),
                reason_phrase: leg.presented.family.reason_phrase(),
                headers: vec![
                    ("Date", http_date(leg.now)),
                    (leg.presented.family.challenge_header(), value),
                ],
                cause: None,
            });
        }
        // Leg 3: AUTHENTICATE for the challenge named by opaque.
        let Some(opaque) = h.param("opaque").and_then(Opaque::parse) else {
            return self.fail_leg(leg, Scheme::Ntlm, Reason::MalformedHeader);
        };
        // The challenge of this opaque and epid, if it is of the current or the previous window.
        // For another epid, or an opaque this gateway never issued, it is a challenge the client
        // never saw, and the NTLMv2 proof below fails.
        let Some(challenge) = self.ntlm_handshakes.recompute(opaque, epid, leg.now) else {
            return self.fail_leg(leg, Scheme::Ntlm, Reason::UnknownHandshake);
        };
        // An AUTHENTICATE is a few hundred bytes: decoded on the stack unless it is unusually long.
        let mut on_stack = [0u8; 1024];
        let on_heap: Vec<u8>;
        let decoded = if token.len() / 4 * 3 < on_stack.len() - 3 {
            B64.decode_slice(token, &mut on_stack)
                .ok()
                .and_then(|n| on_stack.get(..n))
        } else {
            match B64.decode(token) {
                Ok(v) => {
                    on_heap = v;
                    Some(on_heap.as_slice())
                }
                Err(_) => None,
            }
        };
        let Some(bytes) = decoded else {
            return self.fail_leg(leg, Scheme::Ntlm, Reason::MalformedToken);
        };
        let auth = match AuthenticateMessage::parse(bytes) {
            Ok(a) => a,
            Err(e) => return self.fail_leg(leg, Scheme::Ntlm, Reason::from(&e)),
        };
        // Signed, under version 4 (notes §6.1): an AUTHENTICATE proves the password for the
        // server challenge only, and an attacker can have the victim's computer compute one for
        // ours at any service it reaches (NTLM relay). The signature proves the sender holds the
        // session key. A version-3 client signs from its next request only, so a gateway set to
        // version 3 takes an unsigned final leg, with the target check as its defence.
        if self.unsigned_under_version_4(leg) {
            return self.fail_leg(leg, Scheme::Ntlm, Reason::Unsigned);
        }
        let user = auth.user();
        // An unknown user costs the same work as a wrong password, so response times do not tell
        // which account names exist.
        let (nt_hash, sip_identity, known) = match self.credentials.ntlm_user(user) {
            Some(u) => (u.nt_hash, u.sip_identity, true),
            None if self.domain_ntlm.is_some() => {
                // Not in the store: the domain's to verify (the store is asked first).
                let pending = acceptor.challenge(challenge.server_challenge, challenge.timestamp);
                let final_leg = NtlmFinalLeg {
                    opaque,
                    challenge: &challenge,
                    pending: &pending,
                    bytes,
                    auth: &auth,
                };
                return self.domain_ntlm_leg(leg, &final_leg);
            }
            None => (sagw_ntlm::NtHash::from_bytes([0x5A; 16]), None, false),
        };
        let accepted = acceptor
            .challenge(challenge.server_challenge, challenge.timestamp)
            .accept(&auth, &nt_hash, leg.now);
        let session = match accepted {
            Ok(s) if known => s,
            Ok(_) => return self.fail_leg(leg, Scheme::Ntlm, Reason::UnknownUser),
            Err(_) if !known => return self.fail_leg(leg, Scheme::Ntlm, Reason::UnknownUser),
            Err(e) => return self.fail_leg(leg, Scheme::Ntlm, Reason::from(&e)),
        };
        // In a pool, the final leg's one use is recorded in the store first, on a worker: the
        // challenge key is the pool's, so the record of this gateway alone let a captured final
        // leg sign in once more at each other gateway.
        if self.final_legs_pooled {
            let job = crate::jobs::NtlmFinalLegJob::new(&challenge.server_challenge);
            let seen = self.finished.lock().take(job.key(), unix_secs(leg.now));
            match seen {
                Some(Finished::NtlmFinalLeg(ReplayCheck::Replayed)) => {
                    return self.fail_leg(leg, Scheme::Ntlm, Reason::ReplayedToken);
                }
                Some(Finished::NtlmFinalLeg(_)) => {}
                _ => return Decision::Deferred(AuthJob::NtlmFinalLeg(job)),
            }
        }
        let identity = sip_identity.unwrap_or_else(|| self.default_identity(user));
        self.establish_ntlm(leg, opaque, &challenge, session, identity)
    }

    /// The end of an NTLM final leg whose proof verified (locally or by the domain): one SA per
    /// challenge, then the SA.
    pub(super) fn establish_ntlm(
        &self,
        leg: &mut Leg<'_>,
        opaque: Opaque,
        challenge: &Recomputed,
        session: sagw_ntlm::NtlmSession,
        identity: String,
    ) -> Decision {
        // One SA per challenge: a replayed final leg, or a second one for the same opaque, is
        // refused. Only a final leg whose proof verified gets here, so a flood cannot fill this.
        match self
            .sas
            .claim_final_leg(opaque, challenge.accepted_until, unix_secs(leg.now))
        {
            Ok(()) => {}
            Err(FinalLegRefusal::AlreadyUsed) => {
                return self.fail_leg(leg, Scheme::Ntlm, Reason::ReplayedToken);
            }
            Err(FinalLegRefusal::Full) => {
                self.counters
                    .handshake_failed(Scheme::Ntlm, Reason::HandshakeLimit);
                return Decision::Reject {
                    status: 503,
                    reason_phrase: "Service Unavailable",
                    reason: Reason::HandshakeLimit,
                };
            }
        }
        let sa = self.new_sa(leg, opaque, identity, Mechanism::Ntlm(session), None, None);
        self.finish_handshake(leg, sa, Scheme::Ntlm)
    }

    /// The SA a handshake leg establishes, kept under the leg's epid, at the protocol version the
    /// leg asks for (within this gateway's).
    pub(super) fn new_sa(
        &self,
        leg: &Leg<'_>,
        opaque: Opaque,
        identity: String,
        mechanism: Mechanism,
        ticket_end: Option<SystemTime>,
        final_token: Option<Vec<u8>>,
    ) -> SecurityAssociation {
        // An NTLM final leg repeats the version (pidgin-sipe and Microsoft clients send it on
        // every leg); without one it is an LCS 2005-era client, as on the first leg.
        let version = Self::client_version(&leg.presented.header).min(self.config.version);
        let epid = endpoint_epid(&leg.presented.facts, Direction::Request).unwrap_or("");
        let secs = unix_secs(leg.now);
        let mut hard = secs.saturating_add(self.config.effective_sa_lifetime().as_secs());
        if let Some(end) = ticket_end {
            hard = hard.min(unix_secs(end));
        }
        SecurityAssociation::new(NewSa {
            opaque,
            version,
            identity,
            epid: epid.to_owned(),
            mechanism,
            now: secs,
            hard_expiry: hard,
            idle_ttl: u32::try_from(self.config.sa_idle_ttl.as_secs()).unwrap_or(u32::MAX),
            final_token,
        })
    }

    /// A final leg that completes the client's context without the signature a version-4
    /// client sends with it (notes §6.1), at a gateway asking for version 4: refused, as it may
    /// be another service's token relayed or captured.
    fn unsigned_under_version_4(&self, leg: &Leg<'_>) -> bool {
        self.config.version >= 4 && leg.presented.header.param("response").is_none()
    }

    /// Verifies the signature a version-4 final leg already carries, then makes the SA live.
    pub(super) fn finish_handshake(
        &self,
        leg: &mut Leg<'_>,
        sa: SecurityAssociation,
        scheme: Scheme,
    ) -> Decision {
        // Verify the version-4 signature before the SA replaces the endpoint's old one: a final leg
        // whose own signature fails proves nothing and must not disturb a working SA.
        if leg.presented.header.param("response").is_some()
            && let Err(reason) =
                self.verify_with(leg.msg, leg.presented, &sa, Direction::Request, leg.now)
        {
            return self.fail_leg(leg, scheme, reason);
        }
        // Another thread's handshake installed an SA under this opaque since it was drawn: this
        // sign-in fails, and the client signs in again under a fresh challenge.
        let Ok(established) = self.sas.establish(sa, &self.counters) else {
            return self.fail_leg(leg, scheme, Reason::ReplayedToken);
        };
        self.counters.handshake_completed(scheme);
        let sa = established.handle;
        Decision::Authenticated(Authenticated {
            identity: sa.identity().to_owned(),
            scheme,
            binding: Binding::Sa {
                sa,
                family: leg.presented.family,
                established_now: true,
            },
            credentials_at: leg.presented.at,
            evicted: established.evicted,
        })
    }

    pub(super) fn kerberos_leg(&self, leg: &mut Leg<'_>, token: &str) -> Decision {
        let Some(backend) = &self.kerberos else {
            return self.rechallenge_leg(leg, Reason::UnsupportedScheme);
        };
        let ap_req = if leg.presented.header.param("targetname") != Some(backend.targetname()) {
            Err(Reason::SaMismatch)
        } else {
            match B64.decode(token) {
                Ok(t) if !t.is_empty() && backend.well_formed(&t) => Ok(t),
                _ => Err(Reason::MalformedToken),
            }
        };
        // Offloaded: the outcome a worker filed for this very token, else the job to run. Nothing
        // is counted until the outcome is here, so the counters read as they do inline.
        type KerberosResult = Result<KerberosAccepted, KerberosRejection>;
        let finished: Option<(KerberosResult, Option<Result<String, Reason>>)> = match &ap_req {
            Ok(ap_req) if self.kerberos_offload => {
                let job = KerberosJob::new(ap_req.clone());
                match self.finished.lock().take(job.key(), unix_secs(leg.now)) {
                    Some(Finished::Kerberos { result, identity }) => Some((result, identity)),
                    Some(Finished::DomainNtlm(_) | Finished::NtlmFinalLeg(_)) | None => {
                        return Decision::Deferred(AuthJob::Kerberos(job));
                    }
                }
            }
            _ => None,
        };
        self.counters.handshake_started(Scheme::Kerberos);
        let ap_req = match ap_req {
            Ok(t) => t,
            Err(reason) => return self.fail_leg(leg, Scheme::Kerberos, reason),
        };
        let (result, directory_identity) = match finished {
            Some(f) => f,
            None => (self.accept_kerberos(backend.as_ref(), &ap_req).result, None),
        };
        let accepted = match result {
            Ok(a) => a,
            Err(rejection) => return self.fail_leg(leg, Scheme::Kerberos, rejection.reason),
        };
        // MIT takes a ticket up to its clock skew past its end: an SA bounded by that end would
        // be over before its first message (the final response unsigned, every request after it
        // challenged).
        if accepted.ticket_end.is_some_and(|end| end <= leg.now) {
            return self.fail_leg(leg, Scheme::Kerberos, Reason::TicketExpired);
        }
        // Under version 4 an AP-REQ that completes the client's context (no AP-REP to send) comes
        // signed (notes §6.1): unsigned, nothing ties the ticket to the request around it, and a
        // captured AP-REQ carried any request as its owner's (the same rule as NTLM's final leg).
        if accepted.ap_rep.is_none() && self.unsigned_under_version_4(leg) {
            return self.fail_leg(leg, Scheme::Kerberos, Reason::Unsigned);
        }
        let mapped = match principal_to_identity(
            &accepted.client_principal,
            self.kerberos_domain.as_deref(),
        ) {
            Ok(mapped) => mapped,
            Err(reason) => return self.fail_leg(leg, Scheme::Kerberos, reason),
        };
        // With a directory, the principal's SIP identity is the directory's (asked on the
        // worker; inline only when this core does not offload Kerberos).
        let directory_identity = directory_identity.or_else(|| {
            let directory = self.directory.as_ref()?;
            self.kerberos_identity(directory.as_ref(), &accepted)
        });
        let identity = match directory_identity {
            None => mapped,
            Some(Ok(identity)) => identity,
            Some(Err(reason)) if is_unavailable(reason) => {
                return self.unavailable(leg.msg, Scheme::Kerberos, reason);
            }
            Some(Err(reason)) => return self.fail_leg(leg, Scheme::Kerberos, reason),
        };
        // With the domain's or the directory's accounts beside the credentials file, a
        // principal is one of theirs, as over NTLM (`domain::run`): it never takes an identity a
        // file user signs in as. (A KDC alone serves the file's own users under their names.)
        if (self.domain_ntlm.is_some() || self.directory.is_some())
            && self
                .credentials
                .owns_identity(&identity, &self.config.sip_domain)
        {
            return self.fail_leg(leg, Scheme::Kerberos, Reason::IdentityTaken);
        }
        let opaque = self.sas.fresh_opaque(leg.rng);
        let sa = self.new_sa(
            leg,
            opaque,
            identity,
            Mechanism::Kerberos(accepted.session),
            accepted.ticket_end,
            accepted.ap_rep,
        );
        self.finish_handshake(leg, sa, Scheme::Kerberos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagw_ntlm::{AcceptorConfig, ServerIdentity};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_cut_challenge_header_is_the_built_one() {
        for include_timestamp in [false, true] {
            let mut config = AcceptorConfig::new(ServerIdentity {
                netbios_domain: "EXAMPLE".into(),
                netbios_computer: "GW".into(),
                dns_domain: "example.com".into(),
                dns_computer: "gw.example.com".into(),
                dns_tree: "example.com".into(),
            });
            config.include_timestamp = include_timestamp;
            let acceptor = NtlmAcceptor::new(config);
            for (target, realm, version) in [
                ("gw.example.com", "SIP Communications Service", 4),
                ("sip/gw \"1\"", "realm \\ with \"quotes\"", 3),
            ] {
                let cut =
                    NtlmChallengeHeader::new(&acceptor, target, realm, version).expect("a cut");
                for (i, scheme) in ["NTLM", "ntlm", "NtLm", "NT LM"].into_iter().enumerate() {
                    let opaque = Opaque(0x0a0b_c0de_u32.wrapping_mul(i as u32 + 1));
                    let pending = acceptor.challenge(
                        [i as u8, 0xFF, 2, 3, 4, 5, 6, 0x80],
                        UNIX_EPOCH + Duration::from_secs(1_767_603_600 + 30 * i as u64),
                    );
                    let built = ntlm_challenge_header_built(
                        scheme, opaque, &pending, target, realm, version,
                    );
                    let value = cut.value(scheme, opaque, &pending);
                    assert_eq!(value, built);
                    assert_eq!(value.len(), value.capacity(), "sized exactly");
                }
            }
        }
    }
}
