//! Signatures of established SAs: what a client signs (its requests, its responses) is verified
//! against its SA and replay window; what is sent to it is signed with the same SA.

use super::*;

/// What a signed message's credentials header says about its signature: the first of each name
/// (the parser refuses duplicates, so the only one, as `AuthHeader::param` finds it), read in one
/// pass over the parameters.
#[derive(Clone, Copy, Default)]
struct SignedParams<'h> {
    opaque: Option<&'h str>,
    realm: Option<&'h str>,
    targetname: Option<&'h str>,
    crand: Option<&'h str>,
    cnum: Option<&'h str>,
    response: Option<&'h str>,
}

impl<'h> SignedParams<'h> {
    fn of(h: &'h AuthHeader<'_>) -> Self {
        let mut s = SignedParams::default();
        for p in &h.params {
            let slot = match p.name.len() {
                5 if p.name.eq_ignore_ascii_case("realm") => &mut s.realm,
                5 if p.name.eq_ignore_ascii_case("crand") => &mut s.crand,
                4 if p.name.eq_ignore_ascii_case("cnum") => &mut s.cnum,
                6 if p.name.eq_ignore_ascii_case("opaque") => &mut s.opaque,
                8 if p.name.eq_ignore_ascii_case("response") => &mut s.response,
                10 if p.name.eq_ignore_ascii_case("targetname") => &mut s.targetname,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(p.value.as_ref());
            }
        }
        s
    }
}

impl SecurityCore {
    pub(super) fn verify_signed(
        &self,
        msg: &Message,
        presented: &Presented<'_>,
        scheme: SaScheme,
        dir: Direction,
        now: SystemTime,
    ) -> Result<SaHandle, Reason> {
        let label: Scheme = scheme.into();
        let result = (|| {
            // The opaque and the five parameters the signature needs, in one pass.
            let params = SignedParams::of(&presented.header);
            let opaque = params
                .opaque
                .ok_or(Reason::Unsigned)
                .and_then(|o| Opaque::parse(o).ok_or(Reason::MalformedHeader))?;
            let sa = match self.sas.lookup(opaque, unix_secs(now), &self.counters) {
                SaLookup::Live(sa) => sa,
                SaLookup::Expired => return Err(Reason::ExpiredSa),
                SaLookup::Unknown => return Err(Reason::UnknownSa),
            };
            if sa.scheme() != scheme {
                return Err(Reason::SaMismatch);
            }
            self.verify_params(msg, presented, &params, &sa, dir, now)?;
            self.sas.note_progress(&sa);
            Ok(sa)
        })();
        if let Err(reason) = result {
            self.counters.verify_failed(label, reason);
        }
        result
    }

    /// Checks one client signature against `sa` and records its `cnum`.
    pub(super) fn verify_with(
        &self,
        msg: &Message,
        presented: &Presented<'_>,
        sa: &SecurityAssociation,
        dir: Direction,
        now: SystemTime,
    ) -> Result<(), Reason> {
        let params = SignedParams::of(&presented.header);
        self.verify_params(msg, presented, &params, sa, dir, now)
    }

    /// [`verify_with`](Self::verify_with) with the header's parameters already read.
    fn verify_params(
        &self,
        msg: &Message,
        presented: &Presented<'_>,
        signed: &SignedParams<'_>,
        sa: &SecurityAssociation,
        dir: Direction,
        now: SystemTime,
    ) -> Result<(), Reason> {
        let h = &presented.header;
        let SignedParams {
            realm,
            targetname,
            crand,
            cnum: cnum_text,
            response,
            ..
        } = *signed;
        let realm = realm.unwrap_or(&self.config.realm);
        let targetname = targetname.ok_or(Reason::MalformedHeader)?;
        if realm != self.config.realm || Some(targetname) != self.targetname_for(sa.scheme()) {
            return Err(Reason::SaMismatch);
        }
        if endpoint_epid(&presented.facts, dir).unwrap_or("") != sa.epid() {
            return Err(Reason::SaMismatch);
        }
        let (Some(crand), Some(cnum_text), Some(response)) = (crand, cnum_text, response) else {
            return Err(Reason::Unsigned);
        };
        let cnum: u32 = cnum_text.parse().map_err(|_| Reason::MalformedHeader)?;
        match sa.check_cnum(cnum) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replayed => return Err(Reason::Replay),
            ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
        }
        let params = BufferParams {
            scheme: h.scheme,
            rand: crand,
            num: cnum_text,
            realm,
            targetname,
            version: sa.version(),
        };
        with_scratch(|scratch| {
            let buffer = &mut scratch.buffer;
            write_facts(msg, &presented.facts, &params, buffer);
            match sa.mechanism() {
                Mechanism::Ntlm(session) => session
                    .verify_from_client_hex(buffer, response)
                    .map_err(|_| Reason::BadSignature),
                Mechanism::Kerberos(session) => {
                    let token = hex::decode(response).map_err(|_| Reason::BadSignature)?;
                    session
                        .verify_mic(buffer, &token)
                        .map_err(|_| Reason::BadSignature)
                }
            }
        })?;
        // Two copies of one message racing each other: only one wins the number.
        match sa.accept_cnum(cnum) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replayed => return Err(Reason::Replay),
            ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
        }
        sa.touch(unix_secs(now));
        self.counters.verified(sa.scheme().into());
        Ok(())
    }

    /// Judges a response a client sent to a request the gateway sent it.
    pub fn on_response(&self, msg: &Message, now: SystemTime) -> ResponseVerdict {
        // Responses are judged under the default policy (every scheme served): a response is
        // signed with the SA its endpoint has, whatever policy the SA was made under.
        let facts = MessageFacts::of(msg);
        let presented = match self.find_credentials(msg, self.policy(PolicyId::DEFAULT), facts) {
            Ok(Some(c)) => c,
            Ok(None) => return ResponseVerdict::Unsigned,
            Err(reason) => {
                self.counters.dropped_response();
                return ResponseVerdict::Drop(reason);
            }
        };
        let Some(scheme) = SaScheme::from_token(presented.header.scheme) else {
            return ResponseVerdict::Unsigned;
        };
        match self.verify_signed(msg, &presented, scheme, Direction::Response, now) {
            Ok(sa) => ResponseVerdict::Verified(sa),
            Err(reason) => {
                self.counters.dropped_response();
                ResponseVerdict::Drop(reason)
            }
        }
    }

    /// Signs a message to the client of `sa`: fresh `srand`, next `snum`, the buffer from the message's
    /// final header values, and `Authentication-Info` (or `Proxy-Authentication-Info` where configured
    /// and the client used that family). An existing header of that name is replaced in place.
    pub fn sign(
        &self,
        msg: &mut Message,
        sa: &SecurityAssociation,
        client_family: ChallengeFamily,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<(), SignError> {
        let secs = unix_secs(now);
        if !sa.is_live(secs) {
            return Err(SignError::Expired(sa.opaque()));
        }
        let header = match self.config.signature_header {
            SignatureHeader::AuthenticationInfo => "Authentication-Info",
            SignatureHeader::FollowClient => client_family.info_header(),
        };
        let mut r = [0u8; 4];
        rng.fill_bytes(&mut r);
        // Every text of the header is written into stack buffers, without `fmt` or the heap.
        let mut srand_text = [0u8; 8];
        let srand = upper_hex_into(&r, &mut srand_text);
        let mut snum_text = itoa::Buffer::new();
        let snum = snum_text.format(sa.next_snum());
        let mut opaque_text = [0u8; 8];
        let opaque = upper_hex_into(&sa.opaque().0.to_be_bytes(), &mut opaque_text);
        let scheme = sa.scheme().token();
        let targetname = self.targetname_for(sa.scheme()).unwrap_or("");
        let params = BufferParams {
            scheme,
            rand: srand,
            num: snum,
            realm: &self.config.realm,
            targetname,
            version: sa.version(),
        };
        with_scratch(|scratch| {
            write_facts(msg, &MessageFacts::of(msg), &params, &mut scratch.buffer);
            let mut rspauth_text = [0u8; 32];
            let kerberos_hex;
            let rspauth = match sa.mechanism() {
                Mechanism::Ntlm(session) => {
                    upper_hex_into(&session.sign_as_server(&scratch.buffer), &mut rspauth_text)
                }
                Mechanism::Kerberos(session) => {
                    let mic = session.get_mic(&scratch.buffer).map_err(SignError::Gss)?;
                    kerberos_hex = hex::encode_upper(&mic);
                    kerberos_hex.as_str()
                }
            };
            // What `AuthHeaderBuilder` writes, written directly: the scheme, names and these
            // values (hex digits, decimal, base64) are clean tokens that need no quoting checks,
            // and the constant rest (qop, targetname, realm) was built once by the builder.
            let v = &mut scratch.text;
            v.clear();
            v.push_str(scheme);
            for (i, (name, value)) in [
                ("rspauth", rspauth),
                ("srand", srand),
                ("snum", snum),
                ("opaque", opaque),
            ]
            .into_iter()
            .enumerate()
            {
                v.push_str(if i == 0 { " " } else { ", " });
                v.push_str(name);
                v.push_str("=\"");
                v.push_str(value);
                v.push('"');
            }
            v.push_str(self.info_tails.get(sa.scheme()));
            if let Some(token) = sa.take_final_token() {
                v.push_str(", gssapi-data=\"");
                B64.encode_string(token, v);
                v.push('"');
            }
            msg.set_header(header, v);
            Ok::<(), SignError>(())
        })?;
        // No `touch`: a message to the client proves nothing about it, and anyone can make the
        // gateway send one (a call to the user). Only the client's own verified signatures, and
        // the registrations granted to it, keep its SA alive.
        self.counters.signed(sa.scheme().into());
        Ok(())
    }

    /// Adds what an authenticated request's final response needs: the signature (SA schemes) or the
    /// Digest `Authentication-Info`.
    pub fn finish_response(
        &self,
        msg: &mut Message,
        auth: &Authenticated,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<(), SignError> {
        match &auth.binding {
            Binding::Sa { sa, family, .. } => self.sign(msg, sa, *family, now, rng),
            Binding::Digest {
                family,
                authentication_info,
            } => {
                msg.set_header(family.info_header(), authentication_info);
                Ok(())
            }
        }
    }
}
