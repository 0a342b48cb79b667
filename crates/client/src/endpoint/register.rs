//! Sign-in: reading the challenge, choosing a scheme, and judging the final response to REGISTER.

use std::time::SystemTime;

use sagw_auth::Rng;
use sagw_digest::client::Challenge as DigestChallenge;
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message, parse_challenges};

use super::digest::digest_state;
use super::kerberos::KerberosOffer;
use super::{
    AuthScheme, Completed, Endpoint, Event, Failure, Offer, Registration, Step, Waiting, reason_of,
};
use crate::sa::{Family, SignatureCheck};
use crate::util::{parse_http_date, signed_secs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RegStage {
    /// Sent without credentials; expecting the offer.
    Offer,
    /// Sent NTLM `gssapi-data=""`; expecting the CHALLENGE.
    NtlmChallenge,
    /// Sent the final leg of this scheme.
    Final(AuthScheme),
}

impl Endpoint {
    pub(super) fn note_date(&mut self, msg: &Message, now: SystemTime) {
        match msg.header("Date") {
            Some(d) => {
                if let Some(t) = parse_http_date(d) {
                    let skew = signed_secs(t, now);
                    self.last_skew = Some(skew);
                    let date = d.to_owned();
                    self.event(|| Event::ServerDate {
                        date,
                        skew_secs: skew,
                    });
                } else {
                    let text = format!("unreadable Date header `{d}`");
                    self.event(|| Event::Warning { text });
                }
            }
            None => self.event(|| Event::NoServerDate),
        }
    }

    pub(super) fn offers<'m>(msg: &'m Message, family: Family) -> Vec<AuthHeader<'m>> {
        msg.header_all(family.challenge_header())
            .filter_map(|v| parse_challenges(v).ok())
            .flatten()
            .collect()
    }

    pub(super) fn rejection_hints(&self, scheme: AuthScheme, msg: &Message) -> Vec<String> {
        let mut hints = Vec::new();
        if let (Some(skew), Some(tol)) = (self.last_skew, scheme.skew_tolerance_secs())
            && skew.abs() > tol
        {
            hints.push(format!(
                "clock skew {skew}s exceeds the {tol}s {} tolerance",
                scheme.token()
            ));
        }
        for w in msg.header_all("Warning") {
            hints.push(format!("Warning: {w}"));
        }
        if hints.is_empty() {
            hints.push(match scheme {
                AuthScheme::Ntlm => {
                    "wrong password, unknown user or wrong domain (the server does not say which)"
                        .into()
                }
                AuthScheme::Kerberos => {
                    "ticket refused: check the SPN sip/<fqdn>, the gateway keytab and clocks".into()
                }
                AuthScheme::Digest => "wrong password or unknown user".into(),
            });
        }
        hints
    }

    pub(super) fn register_response(
        &mut self,
        stage: RegStage,
        msg: &Message,
        status: u16,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let family = Family::from_status(status);
        if let Some(family) = family {
            self.note_date(msg, now);
            return match stage {
                RegStage::Offer => self.choose_scheme(msg, family, rng),
                RegStage::NtlmChallenge => self.ntlm_leg3(msg, family, now, rng),
                RegStage::Final(scheme) => {
                    let hints = self.rejection_hints(scheme, msg);
                    Err(Failure::Rejected {
                        scheme: scheme.token().into(),
                        status,
                        hints,
                    })
                }
            };
        }
        if !(200..300).contains(&status) {
            return Err(Failure::Status {
                status,
                reason: reason_of(msg),
            });
        }
        let RegStage::Final(scheme) = stage else {
            // Registered without credentials: the server does not authenticate.
            self.event(|| Event::Warning {
                text: "the server accepted REGISTER without any credentials".into(),
            });
            return Err(Failure::Protocol(
                "REGISTER accepted without authentication (the gateway has no auth configured?)"
                    .into(),
            ));
        };
        self.finish_register(scheme, msg, status)
    }

    fn finish_register(
        &mut self,
        scheme: AuthScheme,
        msg: &Message,
        status: u16,
    ) -> Result<Step, Failure> {
        let what = format!("{status} to REGISTER");
        let check = match scheme {
            AuthScheme::Digest => self.verify_digest_info(msg),
            _ => {
                let sa = self
                    .sa
                    .as_mut()
                    .ok_or_else(|| Failure::Protocol("no SA after the final leg".into()))?;
                sa.absorb_final(msg).map_err(Failure::BadServerSignature)?;
                sa.verify(msg)
            }
        };
        self.record_check(&what, &check);
        match &check {
            SignatureCheck::Verified { .. } => {}
            SignatureCheck::Unsigned => return Err(Failure::Unsigned { what }),
            SignatureCheck::Bad(b) => return Err(Failure::BadServerSignature(b.clone())),
        }
        match msg.expires().and_then(|e| e.trim().parse::<u32>().ok()) {
            Some(e) if e > 0 => {}
            _ => self.event(|| Event::Warning {
                text: "the 200 OK has no Expires header > 0 (pidgin-sipe hangs without one)".into(),
            }),
        }
        let reg = match &self.sa {
            Some(sa) => Registration {
                scheme,
                opaque: sa.opaque().map(str::to_owned),
                version: sa.version(),
                lifetime_secs: sa.lifetime().as_secs(),
            },
            None => Registration {
                scheme,
                opaque: None,
                version: 0,
                lifetime_secs: u64::from(self.cfg.expires.unwrap_or(0)),
            },
        };
        let r = reg.clone();
        self.event(|| Event::Established {
            scheme: r.scheme,
            opaque: r.opaque,
            version: r.version,
            lifetime_secs: r.lifetime_secs,
        });
        self.registered = Some(reg);
        Ok(Step::Done(Completed {
            status,
            reason: reason_of(msg),
            signature: check,
        }))
    }

    fn choose_scheme(
        &mut self,
        msg: &Message,
        family: Family,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offers = Self::offers(msg, family);
        let listed: Vec<Offer> = offers
            .iter()
            .map(|h| Offer {
                scheme: h.scheme.to_owned(),
                realm: h.param("realm").map(str::to_owned),
                targetname: h.param("targetname").map(str::to_owned),
                version: h.param("version").map(str::to_owned),
                algorithm: h.param("algorithm").map(str::to_owned),
            })
            .collect();
        let shown = listed.clone();
        self.event(|| Event::Offered { offers: shown });
        let chosen = self.cfg.schemes.iter().copied().find_map(|want| {
            offers
                .iter()
                .find(|h| AuthScheme::from_token(h.scheme) == Some(want) && usable(want, h))
                .map(|h| (want, h))
        });
        let Some((scheme, offer)) = chosen else {
            return Err(Failure::NoCommonScheme {
                offered: listed.iter().map(|o| o.scheme.clone()).collect(),
                allowed: self
                    .cfg
                    .schemes
                    .iter()
                    .map(|s| s.token().to_owned())
                    .collect(),
            });
        };
        self.event(|| Event::Chose { scheme });
        let realm = offer.param("realm").unwrap_or("").to_owned();
        let targetname = offer.param("targetname").unwrap_or("").to_owned();
        let server_version = offer
            .param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2);
        let version = self.cfg.version.min(server_version).max(3);
        match scheme {
            AuthScheme::Ntlm => {
                if self.cfg.password.is_none() {
                    return Err(Failure::NoPassword {
                        scheme: "NTLM".into(),
                    });
                }
                let mut m = self.next_register(RegStage::NtlmChallenge, rng)?;
                let value = AuthHeaderBuilder::new("NTLM")
                    .quoted("qop", "auth")
                    .quoted("realm", &realm)
                    .quoted("targetname", &targetname)
                    .quoted("gssapi-data", "")
                    .token("version", &version.to_string())
                    .build();
                m.set_header(family.credentials_header(), &value);
                self.record_sent(&m, || {
                    "NTLM gssapi-data=\"\" (stands in for NEGOTIATE)".into()
                });
                Ok(Step::Send(m))
            }
            AuthScheme::Kerberos => {
                let service_fqdn = targetname
                    .strip_prefix("sip/")
                    .unwrap_or(&targetname)
                    .to_owned();
                self.waiting = Waiting::KerberosTicket(KerberosOffer {
                    realm,
                    targetname,
                    version,
                    family,
                });
                Ok(Step::NeedKerberosTicket {
                    service_fqdn,
                    ccache: self.cfg.ccache.clone(),
                    mutual: self.cfg.mutual,
                })
            }
            AuthScheme::Digest => {
                let Some(password) = self.cfg.password.clone() else {
                    return Err(Failure::NoPassword {
                        scheme: "Digest".into(),
                    });
                };
                let d = digest_state(offer, &self.cfg.user, &password, family)?;
                self.digest = Some(d);
                let mut m = self.next_register(RegStage::Final(AuthScheme::Digest), rng)?;
                let registrar = self.cfg.registrar.clone();
                self.add_credentials(&mut m, "REGISTER", &registrar, rng)?;
                let alg = self
                    .digest
                    .as_ref()
                    .map(|d| d.algorithm.token())
                    .unwrap_or("");
                let summary = format!("Digest algorithm={alg} (realm {})", offer_realm(offer));
                self.record_sent(&m, || summary);
                Ok(Step::Send(m))
            }
        }
    }
}

fn offer_realm<'a>(h: &'a AuthHeader<'_>) -> &'a str {
    h.param("realm").unwrap_or("")
}

/// Whether we can answer this offer at all (Digest: a known algorithm and qop=auth).
pub(super) fn usable(scheme: AuthScheme, h: &AuthHeader<'_>) -> bool {
    match scheme {
        AuthScheme::Digest => {
            DigestChallenge::from_params(h.params.iter().map(|p| (p.name, p.value.as_ref())))
                .is_ok()
        }
        _ => true,
    }
}
