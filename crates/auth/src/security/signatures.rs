//! Signatures of established SAs: what a client signs (its requests, its responses) is verified
//! against its SA and replay window; what is sent to it is signed with the same SA.

use std::borrow::Cow;
use std::ops::ControlFlow;

use super::*;

/// What a signed message's credentials header says about its signature: the first of each name
/// (the parser refuses duplicates, so the only one, as `AuthHeader::param` finds it), read in one
/// pass over the parameters.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct SignedParams<'h> {
    pub(super) opaque: Option<&'h str>,
    pub(super) realm: Option<&'h str>,
    targetname: Option<&'h str>,
    crand: Option<&'h str>,
    cnum: Option<&'h str>,
    response: Option<&'h str>,
}

impl<'h> SignedParams<'h> {
    pub(super) fn of(h: &'h AuthHeader<'_>) -> Self {
        let mut s = SignedParams::default();
        for p in &h.params {
            if let Some(slot) = s.slot(p.name)
                && slot.is_none()
            {
                *slot = Some(p.value.as_ref());
            }
        }
        s
    }

    /// Where the value of parameter `name` goes; `None` for a name verification does not read.
    /// Dispatched on length and first letter, so that most names are told apart without a
    /// comparison of their own.
    #[inline]
    fn slot(&mut self, name: &str) -> Option<&mut Option<&'h str>> {
        let first = name.as_bytes().first().map(|b| b | 0x20);
        let (slot, want) = match (name.len(), first) {
            (5, Some(b'r')) => (&mut self.realm, &REALM),
            (5, Some(b'c')) => (&mut self.crand, &CRAND),
            (4, Some(b'c')) => (&mut self.cnum, &CNUM),
            (6, Some(b'o')) => (&mut self.opaque, &OPAQUE),
            (8, Some(b'r')) => (&mut self.response, &RESPONSE),
            (10, Some(b't')) => (&mut self.targetname, &TARGETNAME),
            _ => return None,
        };
        want.is(name).then_some(slot)
    }

    /// The parameters of credentials `value` read as it is parsed, with no list of parameters
    /// built: `Continue` with the scheme as written when the value is a signed message's
    /// (`AuthHeader::parse` accepts it, and it has no `gssapi-data`), `Break` when it needs the
    /// whole header instead: a handshake leg (`gssapi-data`), or a value this reads with
    /// `\`-escapes (they would need an owned copy; no client escapes these).
    pub(super) fn scan(
        value: &'h str,
    ) -> Result<ControlFlow<(), (&'h str, Self)>, sagw_sip::AuthParseError> {
        let mut s = SignedParams::default();
        let scanned = AuthHeader::scan(value, |p| {
            if GSSAPI_DATA.is(p.name) {
                return ControlFlow::Break(());
            }
            if let Some(slot) = s.slot(p.name) {
                match p.value {
                    Cow::Borrowed(v) => *slot = Some(v),
                    Cow::Owned(_) => return ControlFlow::Break(()),
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(match scanned {
            ControlFlow::Continue(scheme) => ControlFlow::Continue((scheme, s)),
            ControlFlow::Break(()) => ControlFlow::Break(()),
        })
    }
}

/// A parameter name of 4 to 16 lower-case letters and `-`, compared with a name on the wire
/// ignoring ASCII case in two loads: its first and its last 4 bytes (names of up to 8 bytes) or
/// 8 bytes (longer ones), which may overlap and together cover it. A byte-wise
/// `eq_ignore_ascii_case` was ~17 instructions a byte, on every parameter of every signed
/// message.
struct Name {
    len: usize,
    /// The first and the last 4 or 8 bytes of the name, little-endian.
    words: [u64; 2],
    /// 0x20 in each byte of `words` that is a letter: OR-ed into the wire name's bytes, it folds
    /// exactly `A`-`Z` onto `a`-`z` there (`b | 0x20` is a given letter only for that letter's
    /// two cases), and leaves `-` to match only itself.
    fold: [u64; 2],
}

impl Name {
    const fn new(name: &str) -> Self {
        let b = name.as_bytes();
        assert!(b.len() >= 4 && b.len() <= 16);
        let k = if b.len() <= 8 { 4 } else { 8 };
        let mut words = [0u64; 2];
        let mut fold = [0u64; 2];
        let mut i = 0;
        while i < k {
            let (first, last) = (b[i], b[b.len() - k + i]);
            words[0] |= (first as u64) << (8 * i);
            words[1] |= (last as u64) << (8 * i);
            if first.is_ascii_lowercase() {
                fold[0] |= 0x20 << (8 * i);
            }
            if last.is_ascii_lowercase() {
                fold[1] |= 0x20 << (8 * i);
            }
            i += 1;
        }
        Name {
            len: b.len(),
            words,
            fold,
        }
    }

    #[inline]
    fn is(&self, name: &str) -> bool {
        self.is_bytes(name.as_bytes())
    }

    #[inline]
    fn is_bytes(&self, b: &[u8]) -> bool {
        if b.len() != self.len {
            return false;
        }
        let (first, last) = if self.len <= 8 {
            match (b.first_chunk::<4>(), b.last_chunk::<4>()) {
                (Some(f), Some(l)) => (
                    u64::from(u32::from_le_bytes(*f)),
                    u64::from(u32::from_le_bytes(*l)),
                ),
                _ => return false,
            }
        } else {
            match (b.first_chunk::<8>(), b.last_chunk::<8>()) {
                (Some(f), Some(l)) => (u64::from_le_bytes(*f), u64::from_le_bytes(*l)),
                _ => return false,
            }
        };
        first | self.fold[0] == self.words[0] && last | self.fold[1] == self.words[1]
    }
}

/// Credentials that do not mention `gssapi-data` cannot be a handshake leg, and are read by
/// [`SignedParams::scan`]; those that do are parsed whole at once, not scanned up to their token
/// first.
pub(super) use sagw_sip::mentions_gssapi_data;

const REALM: Name = Name::new("realm");
const CRAND: Name = Name::new("crand");
const CNUM: Name = Name::new("cnum");
const OPAQUE: Name = Name::new("opaque");
const RESPONSE: Name = Name::new("response");
const TARGETNAME: Name = Name::new("targetname");
const GSSAPI_DATA: Name = Name::new("gssapi-data");

/// The credentials of a signed message, read by [`SignedParams::scan`] without the parameter
/// list a handshake leg's [`Presented`] has.
pub(super) struct SignedPresented<'m> {
    pub(super) scheme: SaScheme,
    /// The scheme token as written (the signature buffer holds it).
    pub(super) token: &'m str,
    pub(super) params: SignedParams<'m>,
    pub(super) at: usize,
    pub(super) family: ChallengeFamily,
    pub(super) facts: MessageFacts<'m>,
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
        let h = &presented.header;
        // The opaque and the five parameters the signature needs, in one pass.
        let params = SignedParams::of(h);
        self.verify_signed_params(msg, &presented.facts, h.scheme, &params, scheme, dir, now)
    }

    /// [`verify_signed`](Self::verify_signed) with the credentials' parameters already read
    /// (`token` is the scheme as written).
    #[allow(clippy::too_many_arguments)]
    fn verify_signed_params(
        &self,
        msg: &Message,
        facts: &MessageFacts<'_>,
        token: &str,
        params: &SignedParams<'_>,
        scheme: SaScheme,
        dir: Direction,
        now: SystemTime,
    ) -> Result<SaHandle, Reason> {
        let label: Scheme = scheme.into();
        let result = (|| {
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
            self.verify_params(msg, facts, token, params, &sa, dir, now)?;
            self.sas.note_progress(&sa);
            Ok(sa)
        })();
        if let Err(reason) = result {
            self.counters.verify_failed(label, reason);
        }
        result
    }

    /// A signed request ([`find_credentials`](Self::find_credentials) read it without a
    /// parameter list): what [`ms_request`](Self::ms_request) decides for credentials without
    /// `gssapi-data`.
    pub(super) fn signed_request(
        &self,
        msg: &Message,
        p: &PolicyState,
        signed: &SignedPresented<'_>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Decision {
        match self.verify_signed_params(
            msg,
            &signed.facts,
            signed.token,
            &signed.params,
            signed.scheme,
            Direction::Request,
            now,
        ) {
            Ok(sa) => Decision::Authenticated(Authenticated {
                identity: sa.identity().to_owned(),
                scheme: sa.scheme().into(),
                binding: Binding::Sa {
                    sa,
                    family: signed.family,
                    established_now: false,
                },
                credentials_at: signed.at,
                evicted: Vec::new(),
            }),
            Err(reason) => self.rechallenge(msg, p, signed.family, reason, now, rng),
        }
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
        let h = &presented.header;
        let params = SignedParams::of(h);
        self.verify_params(msg, &presented.facts, h.scheme, &params, sa, dir, now)
    }

    /// [`verify_with`](Self::verify_with) with the header's parameters already read.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn verify_params(
        &self,
        msg: &Message,
        facts: &MessageFacts<'_>,
        token: &str,
        signed: &SignedParams<'_>,
        sa: &SecurityAssociation,
        dir: Direction,
        now: SystemTime,
    ) -> Result<(), Reason> {
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
        if endpoint_epid(facts, dir).unwrap_or("") != sa.epid() {
            return Err(Reason::SaMismatch);
        }
        let (Some(crand), Some(cnum_text), Some(response)) = (crand, cnum_text, response) else {
            return Err(Reason::Unsigned);
        };
        let cnum: u32 = cnum_text.parse().map_err(|_| Reason::MalformedHeader)?;
        // A 2xx to INVITE is retransmitted by the client's own UAS core until the ACK comes
        // (RFC 3261 §13.3.1.4, on every transport), the same signed message each time, and a
        // caller sends its ACK again for each copy (§13.2.2.4): each copy is relayed, as a proxy
        // relays every 2xx and 2xx ACK, when its signature verifies. A copy tells the other party
        // nothing the first did not.
        let retransmission = match sa.check_cnum(cnum) {
            ReplayVerdict::Fresh => false,
            ReplayVerdict::Replayed if repeated_by_design(msg, dir) => true,
            ReplayVerdict::Replayed => return Err(Reason::Replay),
            ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
        };
        let params = BufferParams {
            scheme: token,
            rand: crand,
            num: cnum_text,
            realm,
            targetname,
            version: sa.version(),
        };
        with_scratch(|scratch| {
            let buffer = &mut scratch.buffer;
            write_facts(msg, facts, &params, buffer);
            match sa.mechanism() {
                Mechanism::Ntlm(session) => session
                    .verify_from_client_hex(buffer, response)
                    .map_err(|_| Reason::BadSignature),
                Mechanism::Kerberos(session) => {
                    let token = sagw_hex::decode(response).map_err(|_| Reason::BadSignature)?;
                    session
                        .verify_mic(buffer, &token)
                        .map_err(|_| Reason::BadSignature)
                }
            }
        })?;
        // Two copies of one message racing each other: only one wins the number.
        if !retransmission {
            match sa.accept_cnum(cnum) {
                ReplayVerdict::Fresh => {}
                ReplayVerdict::Replayed if repeated_by_design(msg, dir) => {}
                ReplayVerdict::Replayed => return Err(Reason::Replay),
                ReplayVerdict::TooOld => return Err(Reason::OutsideWindow),
            }
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
        let verified = match self.find_credentials(msg, self.policy(PolicyId::DEFAULT), facts) {
            Ok(Some(Found::Signed(s))) => self.verify_signed_params(
                msg,
                &s.facts,
                s.token,
                &s.params,
                s.scheme,
                Direction::Response,
                now,
            ),
            Ok(Some(Found::Full(presented))) => {
                let Some(scheme) = SaScheme::from_token(presented.header.scheme) else {
                    return ResponseVerdict::Unsigned;
                };
                self.verify_signed(msg, &presented, scheme, Direction::Response, now)
            }
            Ok(None) => return ResponseVerdict::Unsigned,
            Err(reason) => {
                self.counters.dropped_response();
                return ResponseVerdict::Drop(reason);
            }
        };
        match verified {
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
    ///
    /// Never carries the Kerberos AP-REP: only the final response to the final leg does
    /// ([`finish_response`](Self::finish_response)).
    pub fn sign(
        &self,
        msg: &mut Message,
        sa: &SecurityAssociation,
        client_family: ChallengeFamily,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<(), SignError> {
        self.sign_with(msg, sa, client_family, now, rng, ApRep::Leave)
    }

    fn sign_with(
        &self,
        msg: &mut Message,
        sa: &SecurityAssociation,
        client_family: ChallengeFamily,
        now: SystemTime,
        rng: &mut dyn Rng,
        ap_rep: ApRep,
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
                    kerberos_hex = sagw_hex::encode_upper(&mic);
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
            // The AP-REP (mutual authentication) belongs to the final response to the final leg:
            // a request to the client signed first (a NOTIFY arriving before the registrar's 200),
            // a provisional response, or a late 2xx of another transaction relayed meanwhile,
            // took it, and the 200 went without it, so the client's mutual authentication failed.
            // So did the 200 to a CANCEL of that request, signed with its note and sent before
            // its own final response.
            if let Some(token) = (ap_rep == ApRep::Attach
                && msg.status_code().is_some_and(|code| code >= 200)
                && msg.cseq().is_none_or(|c| c.method != "CANCEL"))
            .then(|| sa.take_final_token())
            .flatten()
            {
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
            Binding::Sa {
                sa,
                family,
                established_now,
            } => {
                let ap_rep = if *established_now {
                    ApRep::Attach
                } else {
                    ApRep::Leave
                };
                match self.sign_with(msg, sa, *family, now, rng, ap_rep) {
                    // A new handshake of the same endpoint replaced the SA while the request
                    // was served (Lync signs in again every 8 hours, and after a 401 to its
                    // REGISTER): the client holds the new SA now and drops what the old one
                    // would sign, or an unsigned response. Requests to it take the new one too.
                    Err(SignError::Expired(_)) => {
                        match self.sa_for_endpoint(sa.identity(), sa.epid(), now) {
                            Some(current) if current.opaque() != sa.opaque() => {
                                self.sign_with(msg, &current, *family, now, rng, ApRep::Leave)
                            }
                            _ => Err(SignError::Expired(sa.opaque())),
                        }
                    }
                    signed => signed,
                }
            }
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

/// Whether a signed message carries the AP-REP of the Kerberos handshake that made its SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ApRep {
    /// The final response to the final leg: it carries the AP-REP, once.
    Attach,
    /// Anything else.
    Leave,
}

/// A message its sender sends again unchanged as the protocol asks: a 2xx response to INVITE,
/// an ACK.
fn repeated_by_design(msg: &Message, dir: Direction) -> bool {
    match dir {
        Direction::Response => {
            msg.status_code().is_some_and(|c| (200..300).contains(&c))
                && msg.cseq().is_some_and(|c| c.method == "INVITE")
        }
        Direction::Request => msg.method() == Some("ACK"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scan` agrees with the whole-header path: `AuthHeader::parse`, then (no `gssapi-data`)
    /// `SignedParams::of`; and the `gssapi-data` prefilter never misses a handshake leg.
    fn check(value: &str) -> usize {
        let whole = AuthHeader::parse(value);
        let leg = whole
            .as_ref()
            .is_ok_and(|h| h.param("gssapi-data").is_some());
        if leg {
            assert!(mentions_gssapi_data(value), "{value:?}");
        }
        match (SignedParams::scan(value), &whole) {
            (Ok(ControlFlow::Continue((scheme, params))), Ok(h)) => {
                assert!(!leg, "{value:?}");
                assert_eq!(scheme, h.scheme, "{value:?}");
                assert_eq!(params, SignedParams::of(h), "{value:?}");
                return 0;
            }
            // A handshake leg, or escapes in a value verification reads: the whole header.
            (Ok(ControlFlow::Break(())), Ok(h)) => {
                let escaped = h.params.iter().any(|p| {
                    matches!(p.value, Cow::Owned(_))
                        && SignedParams::default().slot(p.name).is_some()
                });
                assert!(leg || escaped, "{value:?}");
                return 1;
            }
            // Stopped early: the rest, read whole, may still be refused.
            (Ok(ControlFlow::Break(())), Err(_)) => {}
            (Err(e), Err(want)) => assert_eq!(&e, want, "{value:?}"),
            (got, want) => panic!("{value:?}: scan {got:?}, parse {want:?}"),
        }
        2
    }

    #[test]
    fn scan_reads_what_the_whole_header_gives_verification() {
        const NAMES: &[&str] = &[
            "realm",
            "REALM",
            "Realm",
            "opaque",
            "OPAQUE",
            "crand",
            "cRand",
            "cnum",
            "CNUM",
            "response",
            "Response",
            "targetname",
            "TargetName",
            "gssapi-data",
            "GSSAPI-DATA",
            "Gssapi-Data",
            "gssapi_data",
            "gssapi-dat",
            "qop",
            "version",
            "realn",
            "crane",
            "cnup",
            "opaquf",
            "responsf",
            "targetnamf",
            "srand",
            "x",
            "reALM",
            "",
        ];
        const VALUES: &[&str] = &[
            "\"SIP Communications Service\"",
            "\"2BDBAC9D\"",
            "\"1\"",
            "4",
            "\"\"",
            "\"a\\\"b\"",
            "\"unterminated",
            "\"gssapi-data=x\"",
            "\"GSSAPI-data\"",
            "tok",
            "\"0100000029618e9651b65a7764000000\"",
            "\"\\\\\"",
            "",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut seen = [0usize; 3];
        for _ in 0..100_000 {
            let mut v = String::from(["NTLM", "Kerberos", "ntlm", "NTLM,"][below(4)]);
            for i in 0..below(9) {
                v.push_str(if i == 0 {
                    " "
                } else {
                    [", ", ",", " , "][below(3)]
                });
                v.push_str(NAMES[below(NAMES.len())]);
                v.push('=');
                v.push_str(VALUES[below(VALUES.len())]);
            }
            seen[check(&v)] += 1;
        }
        // Read by scan, left to the whole header, refused: each case well covered.
        assert!(seen.iter().all(|&n| n > 5_000), "{seen:?}");
        check(
            r#"NTLM qop="auth", realm="SIP Communications Service", opaque="2BDBAC9D", targetname="cosmo-ocs-r2.cosmo.local", crand="13317733", cnum="1", response="0100000029618e9651b65a7764000000""#,
        );
        check(r#"NTLM opaque="2BDBAC9D", gssapi-data="TlRMTVNTUAADAAAA""#);
        check(r#"NTLM realm="a\"b", opaque="2BDBAC9D""#);
    }

    #[test]
    fn names_match_ignoring_ascii_case_only() {
        for name in [
            "realm",
            "crand",
            "cnum",
            "opaque",
            "response",
            "targetname",
            "gssapi-data",
        ] {
            let n = Name::new(name);
            assert!(n.is(name));
            assert!(n.is(&name.to_ascii_uppercase()));
            // Every single-byte change of every position: equal only to the other case.
            for at in 0..name.len() {
                for b in 0..=255u8 {
                    let mut v = name.as_bytes().to_vec();
                    v[at] = b;
                    assert_eq!(
                        n.is_bytes(&v),
                        v.eq_ignore_ascii_case(name.as_bytes()),
                        "{name} {at} {b}"
                    );
                }
            }
            assert!(!n.is(&name[1..]));
            assert!(!n.is(&format!("{name}x")));
        }
        assert!(mentions_gssapi_data("NTLM GSSAPI-Data=\"\""));
        assert!(mentions_gssapi_data("x=\"gssapi-dataX\""));
        assert!(!mentions_gssapi_data(
            "NTLM gssapi_data=x, -gssapi, ssapi-data"
        ));
        assert!(!mentions_gssapi_data("-"));
        assert!(!mentions_gssapi_data("gssapi-dat"));
    }
}
