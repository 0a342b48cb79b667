//! Which credentials header of a message is meant for this gateway, and how much of it is read:
//! a signed message's only as far as verifying it needs.

use std::ops::ControlFlow;

use super::signatures::{SignedParams, mentions_gssapi_data};
use super::*;

/// What [`SecurityCore::find_credentials`] found: the whole header, or (a signed message) only
/// what verifying its signature reads.
pub(super) enum Found<'m> {
    Full(Presented<'m>),
    Signed(SignedPresented<'m>),
}

impl SecurityCore {
    /// The first Authorization / Proxy-Authorization header meant for this gateway under policy
    /// `p` (a scheme it offers, our realm); other realms' headers belong to servers further on and
    /// are left alone, and so are schemes the policy does not offer (the request is then challenged
    /// with what it does offer).
    pub(super) fn find_credentials<'m>(
        &self,
        msg: &'m Message,
        p: &PolicyState,
        facts: MessageFacts<'m>,
    ) -> Result<Option<Found<'m>>, Reason> {
        let mut malformed = false;
        for (name, family) in [
            ("Authorization", ChallengeFamily::Www),
            ("Proxy-Authorization", ChallengeFamily::Proxy),
        ] {
            for (at, value) in msg.header_all_indexed(name) {
                // Only headers of a scheme we serve are parsed: `Basic` token68 credentials or
                // another proxy's parameters are none of our business, malformed or not.
                let scheme = value.trim_start().split([' ', '\t']).next().unwrap_or("");
                let sa_scheme = SaScheme::from_token(scheme);
                let served = match sa_scheme {
                    Some(s) => self.offers(p, s.into()),
                    None => self.serves_scheme(p, scheme),
                };
                if !served {
                    continue;
                }
                // A signed message (most of an SA's traffic) is read without a parameter list.
                // Its parsed scheme is `scheme` (a value that parses starts with its scheme
                // token, which ends at the space `scheme` was split at): what `is_ours` checks
                // of an SA scheme is then only the realm.
                if let Some(sa_scheme) = sa_scheme
                    && !mentions_gssapi_data(value)
                {
                    match SignedParams::scan(value) {
                        Err(_) => {
                            malformed = true;
                            continue;
                        }
                        Ok(ControlFlow::Continue((token, params))) => {
                            if params.realm.is_none_or(|r| r == self.config.realm) {
                                return Ok(Some(Found::Signed(SignedPresented {
                                    scheme: sa_scheme,
                                    token,
                                    params,
                                    at,
                                    family,
                                    facts,
                                })));
                            }
                            continue;
                        }
                        // `\`-escapes in a value verification reads (no client sends them):
                        // parsed whole below.
                        Ok(ControlFlow::Break(())) => {}
                    }
                }
                let header = match AuthHeader::parse(value) {
                    Ok(h) => h,
                    Err(_) => {
                        malformed = true;
                        continue;
                    }
                };
                if self.is_ours(p, &header) {
                    return Ok(Some(Found::Full(Presented {
                        header,
                        at,
                        family,
                        facts,
                    })));
                }
            }
        }
        if malformed {
            Err(Reason::MalformedHeader)
        } else {
            Ok(None)
        }
    }

    fn serves_scheme(&self, p: &PolicyState, scheme: &str) -> bool {
        if scheme.eq_ignore_ascii_case("Digest") {
            return self.offers(p, Scheme::Digest);
        }
        match SaScheme::from_token(scheme) {
            Some(s) => self.offers(p, s.into()),
            None => false,
        }
    }

    /// Whether a credentials header's scheme (its first token) is one some policy of this gateway
    /// serves, whatever else the header holds.
    pub(super) fn serves_scheme_of(&self, value: &str) -> bool {
        let token = value
            .trim_start()
            .split(|c: char| c.is_ascii_whitespace() || c == ',')
            .next()
            .unwrap_or_default();
        self.policies.iter().any(|p| self.serves_scheme(p, token))
    }

    pub(super) fn is_ours(&self, p: &PolicyState, h: &AuthHeader<'_>) -> bool {
        if !self.serves_scheme(p, h.scheme) {
            return false;
        }
        let realm = h.param("realm");
        if h.scheme.eq_ignore_ascii_case("Digest") {
            return self
                .digest_server(p)
                .is_some_and(|d| realm == Some(d.config().realm.as_str()));
        }
        // Clients omit realm on signed messages only rarely; an opaque without realm is still ours if
        // it names one of our SAs, which verification checks.
        realm.is_none_or(|r| r == self.config.realm)
    }
}
