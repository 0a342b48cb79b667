//! RFC 7616 Digest requests: the nonce, the response against the stored (or the decoy) HA1, the
//! nonce count, and the `Authentication-Info` of the answer.

use super::*;

impl SecurityCore {
    pub(super) fn digest_request(
        &self,
        msg: &Message,
        p: &PolicyState,
        presented: &Presented<'_>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        let (Some(d), Some(server)) = (&self.digest, self.digest_server(p)) else {
            return self.rechallenge(
                msg,
                p,
                presented.family,
                Reason::UnsupportedScheme,
                now,
                rng,
            );
        };
        let mut fail = |reason: Reason, stale: bool| {
            self.counters.handshake_failed(Scheme::Digest, reason);
            if is_ack_or_cancel(msg) {
                self.counters.discarded();
                return Decision::Discard(reason);
            }
            Decision::Challenge(self.challenge_with(
                p,
                presented.family,
                Some(reason),
                stale,
                now,
                rng,
            ))
        };
        let params = presented
            .header
            .params
            .iter()
            .map(|p| (p.name, p.value.as_ref()));
        let resp = match DigestResponse::from_params(params) {
            Ok(r) => r,
            Err(e) => return fail(Reason::from(&e), false),
        };
        let method = msg.method().unwrap_or("");
        let algorithm = match resp.algorithm {
            None => sagw_digest::Algorithm::Md5,
            Some(a) => match sagw_digest::Algorithm::from_token(a) {
                Some(a) => a,
                None => return fail(Reason::UnsupportedScheme, false),
            },
        };
        // -sess variants share the base algorithm's HA1. (userhash=true clients are not supported:
        // their username is a hash the store cannot index; they fail as an unknown user.)
        let stored = self
            .credentials
            .digest_ha1(resp.username, resp.realm, algorithm.base());
        let known = stored.is_some();
        // A user the store does not have is verified against the decoy HA1: the same nonce MAC,
        // HA1 parse and response computation as a known user with a wrong password, so the time
        // a refusal takes does not tell which users exist (it was refused before any hashing;
        // NTLM already does the same work for both). Counted unknown_user all the same.
        let Some(ha1) = stored.or_else(|| d.decoy_ha1(algorithm.base())) else {
            return fail(Reason::UnknownUser, false);
        };
        let verified = match server.verify(&resp, method, &ha1, now) {
            Ok(v) if known => v,
            // Only with the nonce key: the decoy is derived from it.
            Ok(_) => return fail(Reason::UnknownUser, false),
            Err(e) => {
                let reason = match e {
                    DigestError::WrongResponse if !known => Reason::UnknownUser,
                    e => Reason::from(&e),
                };
                return fail(reason, reason.is_stale());
            }
        };
        // Any other request must name its own Request-URI too (RFC 7616 §3.4.6): credentials
        // for alice's INVITE to bob, captured over UDP, carried an INVITE to a premium-rate
        // number sent ahead of it (the nonce count stops a second use, not a first use moved
        // elsewhere). See `names_the_request_uri` for the one exception (sipp's). An ACK that
        // gets here is not the ACK of a transaction the proxy matched on this flow
        // (those skip authentication: `belongs_to_open_transaction` in
        // crates/proxy/src/edge/request.rs), nor the ACK of a 2xx relayed to the client's own
        // Digest INVITE over this flow (the stage passes those: `acknowledging` in
        // crates/gateway/src/auth.rs); it is an ACK that stands alone, a transaction of its own
        // that goes end to end and gets no response. It once skipped the nonce-count check, and
        // the `uri` is checked for no method, so one captured ACK's credentials carried any number
        // of ACKs, to any target, while the nonce lived. Such an ACK must name its own
        // Request-URI (RFC 2617 §3.2.2.5; checked before the count, so a refused ACK does not use
        // one up) and use a fresh count like any request. The reason is SaMismatch: credentials
        // made for something else, like a realm mismatch.
        let uri_ok = if msg.method() == Some("ACK") {
            msg.request_uri() == Some(verified.uri)
        } else {
            msg.request_uri()
                .is_some_and(|ruri| names_the_request_uri(verified.uri, ruri))
        };
        if !uri_ok {
            return fail(Reason::SaMismatch, false);
        }
        // Counted against the identity the credentials proved, not the name as sent: one
        // account's nonces stay within its own share of the table, whatever case it writes.
        let identity = self.identity_of(resp.username);
        // Without its scheme, as identities compare (`same_identity`): `sips:` for `sip:` in the
        // credentials file is the same owner (the counter folds ASCII case itself).
        let owner = identity
            .split_once(':')
            .map_or(identity.as_str(), |(_, rest)| rest);
        if let Err(e) = d.counter.lock().check_verified(&verified, owner, now) {
            let reason = Reason::from(&e);
            return fail(reason, reason.is_stale());
        }
        let mut salt = [0u8; 8];
        rng.fill_bytes(&mut salt);
        let next = server.make_nonce(now, salt);
        let info = server.authentication_info(&verified, &ha1, Some(next.as_str()));
        self.counters.handshake_completed(Scheme::Digest);
        Decision::Authenticated(Authenticated {
            identity,
            scheme: Scheme::Digest,
            binding: Binding::Digest {
                family: presented.family,
                authentication_info: info,
            },
            credentials_at: presented.at,
            evicted: Vec::new(),
        })
    }
}

/// Whether a Digest `uri` names the request's Request-URI: the same text (every UA seen,
/// baresip, Linphone, PJSIP, sofia-sip, sipp, copies its Request-URI; parameters such as
/// `user=phone` or `maddr` change where a request goes, and a SIP user part is case-sensitive),
/// or a `sip:`/`sips:` URI without a user part and without parameters or headers (the server's
/// own address, as sipp writes it), taken for any. A `tel:` URI has no `@` but names a number:
/// never taken for another.
fn names_the_request_uri(uri: &str, request_uri: &str) -> bool {
    let uri = uri.trim();
    if uri == request_uri.trim() {
        return true;
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips"))
        && !rest.contains(['@', ';', '?'])
}
