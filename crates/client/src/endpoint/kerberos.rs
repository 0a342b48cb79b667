//! The Kerberos leg: sending the driver's AP-REQ and setting up the SA.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::Rng;
use sagw_kerberos::KerberosError;
use sagw_kerberos::initiator::ClientSession;
use sagw_sip::AuthHeaderBuilder;

use super::register::RegStage;
use super::{AuthScheme, Endpoint, Event, Failure, Step};
use crate::sa::{ClientMechanism, ClientSa, Family, LegParams, SaScheme, SaTerms};

/// The pending Kerberos offer while the driver gets a ticket.
#[derive(Debug, Clone)]
pub(super) struct KerberosOffer {
    pub(super) realm: String,
    pub(super) targetname: String,
    pub(super) version: u8,
    pub(super) family: Family,
}

impl Endpoint {
    pub(super) fn kerberos_leg2(
        &mut self,
        ticket: Result<(Vec<u8>, ClientSession), KerberosError>,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offer = self
            .waiting
            .take_kerberos_offer()
            .ok_or_else(|| Failure::Protocol("no Kerberos offer pending".into()))?;
        let (token, session) = ticket.map_err(|e| Failure::Kerberos(e.to_string()))?;
        let established = session.is_established();
        let enctype = session.enctype().map(|e| format!("{e:?}"));
        let service = offer.targetname.clone();
        let mutual = self.cfg.mutual;
        self.event(|| Event::KerberosTicket {
            service,
            enctype,
            mutual,
        });
        let token = B64.encode(&token);
        let mut sa = ClientSa::new(
            SaScheme::Kerberos,
            ClientMechanism::Kerberos(session),
            SaTerms {
                realm: &offer.realm,
                targetname: &offer.targetname,
                version: offer.version,
                family: offer.family,
            },
            None,
            now,
        );
        let mut m = self.next_register(RegStage::Final(AuthScheme::Kerberos), rng)?;
        let signed = offer.version >= 4 && established;
        if signed {
            sa.sign(
                &mut m,
                LegParams {
                    gssapi_data: Some(&token),
                    version: Some(offer.version),
                },
                rng,
            )
            .map_err(Failure::Kerberos)?;
        } else {
            let value = AuthHeaderBuilder::new("Kerberos")
                .quoted("qop", "auth")
                .quoted("realm", &offer.realm)
                .quoted("targetname", &offer.targetname)
                .quoted("gssapi-data", &token)
                .token("version", &offer.version.to_string())
                .build();
            m.set_header(offer.family.credentials_header(), &value);
        }
        self.sa = Some(sa);
        self.record_sent(&m, || {
            format!(
                "Kerberos AP-REQ{}",
                if signed {
                    ", signed (version 4)"
                } else {
                    ", unsigned"
                }
            )
        });
        Ok(Step::Send(m))
    }
}
