//! The NTLM leg: answering the server's CHALLENGE with an AUTHENTICATE and setting up the SA.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sagw_auth::Rng;
use sagw_ntlm::NtHash;
use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
use sagw_sip::{AuthHeaderBuilder, Message};
use zeroize::Zeroizing;

use super::register::RegStage;
use super::{AuthScheme, Endpoint, Event, Failure, Step};
use crate::sa::{ClientMechanism, ClientSa, Family, LegParams, SaScheme, SaTerms};

impl Endpoint {
    pub(super) fn ntlm_leg3(
        &mut self,
        msg: &Message,
        family: Family,
        now: SystemTime,
        rng: &mut dyn Rng,
    ) -> Result<Step, Failure> {
        let offers = Self::offers(msg, family);
        let Some(h) = offers
            .iter()
            .find(|h| h.is_scheme("NTLM") && h.param("gssapi-data").is_some_and(|g| !g.is_empty()))
        else {
            let hints = self.rejection_hints(AuthScheme::Ntlm, msg);
            return Err(Failure::Rejected {
                scheme: "NTLM".into(),
                status: family.status(),
                hints,
            });
        };
        let opaque = h
            .param("opaque")
            .ok_or_else(|| Failure::Protocol("NTLM CHALLENGE without opaque".into()))?
            .to_owned();
        let realm = h.param("realm").unwrap_or("").to_owned();
        let targetname = h.param("targetname").unwrap_or("").to_owned();
        let server_version = h
            .param("version")
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(2);
        let version = self.cfg.version.min(server_version).max(3);
        let challenge = B64
            .decode(h.param("gssapi-data").unwrap_or(""))
            .map_err(|e| Failure::Ntlm(format!("CHALLENGE is not base64: {e}")))?;
        let flags = challenge
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0);
        let ti_len = challenge
            .get(40..42)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let o = opaque.clone();
        self.event(|| Event::NtlmChallenge {
            opaque: o,
            flags: format!("0x{flags:08X}"),
            target_info_bytes: usize::from(ti_len),
        });
        let password = self
            .cfg
            .password
            .clone()
            .ok_or_else(|| Failure::NoPassword {
                scheme: "NTLM".into(),
            })?;
        let nt = NtHash::from_password(password.expose());
        let mut client_challenge = [0u8; 8];
        rng.fill_bytes(&mut client_challenge);
        let mut rsk = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(&mut rsk[..]);
        let auth = authenticate(
            &challenge,
            &Credentials {
                user: &self.cfg.user,
                domain: &self.cfg.domain,
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: &self.cfg.workstation,
                client_challenge,
                timestamp: now,
                random_session_key: *rsk,
                version: self.cfg.ntlm_version,
                mic: MicPolicy::Omit,
            },
        )
        .map_err(|e| Failure::Ntlm(format!("cannot answer the CHALLENGE: {e}")))?;
        let token = B64.encode(&auth.message);
        let mut sa = ClientSa::new(
            SaScheme::Ntlm,
            ClientMechanism::Ntlm(auth.session),
            SaTerms {
                realm: &realm,
                targetname: &targetname,
                version,
                family,
            },
            Some(opaque.clone()),
            now,
        );
        let mut m = self.next_register(RegStage::Final(AuthScheme::Ntlm), rng)?;
        if version >= 4 {
            sa.sign(
                &mut m,
                LegParams {
                    gssapi_data: Some(&token),
                    version: Some(version),
                },
                rng,
            )
            .map_err(Failure::Ntlm)?;
        } else {
            let value = AuthHeaderBuilder::new("NTLM")
                .quoted("qop", "auth")
                .quoted("realm", &realm)
                .quoted("opaque", &opaque)
                .quoted("targetname", &targetname)
                .token("version", &version.to_string())
                .quoted("gssapi-data", &token)
                .build();
            m.set_header(family.credentials_header(), &value);
        }
        self.sa = Some(sa);
        let len = auth.message.len();
        self.record_sent(&m, || {
            format!(
                "NTLM AUTHENTICATE ({len} bytes, flags 0x{:08X}){}",
                auth.flags,
                if version >= 4 {
                    ", signed (version 4)"
                } else {
                    ", unsigned (version 3)"
                }
            )
        });
        Ok(Step::Send(m))
    }
}
