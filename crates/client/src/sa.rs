//! The client's half of an MS-SIPAE security association: sign what we send (`response` in our
//! credentials header), verify what the server signs (`rspauth` in `Authentication-Info`).

use std::fmt;
use std::time::{Duration, SystemTime};

use sagw_auth::replay::{ReplayVerdict, ReplayWindow};
use sagw_auth::{BufferParams, Rng, SignatureBuffer};
use sagw_kerberos::initiator::ClientSession;
use sagw_ntlm::NtlmSession;
use sagw_sip::{AuthHeader, AuthHeaderBuilder, Message};
use serde::Serialize;

/// The two SA schemes of [MS-SIPAE].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SaScheme {
    Ntlm,
    Kerberos,
}

impl SaScheme {
    /// The scheme token on the wire.
    pub fn token(self) -> &'static str {
        match self {
            SaScheme::Ntlm => "NTLM",
            SaScheme::Kerberos => "Kerberos",
        }
    }
}

/// Which header family the server challenged with, and so which headers we answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    /// 401 / `WWW-Authenticate` / `Authorization`.
    Www,
    /// 407 / `Proxy-Authenticate` / `Proxy-Authorization`.
    Proxy,
}

impl Family {
    pub fn credentials_header(self) -> &'static str {
        match self {
            Family::Www => "Authorization",
            Family::Proxy => "Proxy-Authorization",
        }
    }
    pub fn challenge_header(self) -> &'static str {
        match self {
            Family::Www => "WWW-Authenticate",
            Family::Proxy => "Proxy-Authenticate",
        }
    }
    pub fn from_status(status: u16) -> Option<Family> {
        match status {
            401 => Some(Family::Www),
            407 => Some(Family::Proxy),
            _ => None,
        }
    }
    /// The challenge status of this family; the inverse of [`Family::from_status`].
    pub fn status(self) -> u16 {
        match self {
            Family::Www => 401,
            Family::Proxy => 407,
        }
    }
}

/// The signing context of the SA.
pub enum ClientMechanism {
    Ntlm(NtlmSession),
    Kerberos(ClientSession),
}

impl fmt::Debug for ClientMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both inner types redact their keys; say only which one this is.
        match self {
            ClientMechanism::Ntlm(_) => f.write_str("Ntlm(<session keys>)"),
            ClientMechanism::Kerberos(s) => write!(f, "Kerberos({s:?})"),
        }
    }
}

/// Why a server signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum BadSignature {
    #[error("signature header lacks `{0}`")]
    MissingParam(&'static str),
    #[error("signature header cannot be parsed: {0}")]
    Malformed(String),
    #[error("signature is for another SA (header {field} `{got}`, ours `{ours}`)")]
    OtherSa {
        field: &'static str,
        got: String,
        ours: String,
    },
    #[error("snum `{0}` is not a number")]
    BadSnum(String),
    #[error("snum {0} was already seen (replay)")]
    Replayed(u32),
    #[error("snum {0} is older than the 256-message window")]
    TooOld(u32),
    #[error("rspauth does not verify over the signature buffer {buffer}")]
    Mismatch { buffer: String },
    #[error("Kerberos: {0}")]
    Kerberos(String),
}

/// The outcome of checking one incoming message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SignatureCheck {
    /// Signed and verified; `num` is the server's `snum` (or Digest `nc`).
    Verified { num: u32 },
    /// No signature for our SA in the message.
    Unsigned,
    /// Signed, but it does not hold.
    Bad(BadSignature),
}

/// A client SA.
#[derive(Debug)]
pub struct ClientSa {
    scheme: SaScheme,
    mechanism: ClientMechanism,
    realm: String,
    targetname: String,
    /// Learned in the NTLM leg-2 challenge, or (Kerberos) in the final `Authentication-Info`.
    opaque: Option<String>,
    version: u8,
    cnum: u32,
    snums: ReplayWindow,
    family: Family,
    established: SystemTime,
    lifetime: Duration,
}

/// What `sign` needs to add besides the signature (final handshake legs of version 4).
#[derive(Debug, Default, Clone, Copy)]
pub struct LegParams<'a> {
    pub gssapi_data: Option<&'a str>,
    pub version: Option<u8>,
}

/// [MS-SIPAE] 3.2.2: the client renews before min(ticket, 8 h), at least five minutes early.
pub const CLIENT_SA_LIFETIME: Duration = Duration::from_secs(8 * 3600 - 5 * 60);

/// What the server's challenge fixed for an SA: the realm and targetname every signature
/// covers, the protocol version both sides agreed on, and the header family it answers in.
#[derive(Debug, Clone, Copy)]
pub struct SaTerms<'a> {
    pub realm: &'a str,
    pub targetname: &'a str,
    pub version: u8,
    pub family: Family,
}

impl ClientSa {
    pub fn new(
        scheme: SaScheme,
        mechanism: ClientMechanism,
        terms: SaTerms<'_>,
        opaque: Option<String>,
        now: SystemTime,
    ) -> Self {
        ClientSa {
            scheme,
            mechanism,
            realm: terms.realm.to_owned(),
            targetname: terms.targetname.to_owned(),
            opaque,
            version: terms.version,
            cnum: 0,
            snums: ReplayWindow::new(),
            family: terms.family,
            established: now,
            lifetime: CLIENT_SA_LIFETIME,
        }
    }

    pub fn scheme(&self) -> SaScheme {
        self.scheme
    }
    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }
    pub fn realm(&self) -> &str {
        &self.realm
    }
    pub fn targetname(&self) -> &str {
        &self.targetname
    }
    pub fn version(&self) -> u8 {
        self.version
    }
    pub fn family(&self) -> Family {
        self.family
    }
    pub fn set_family(&mut self, family: Family) {
        self.family = family;
    }
    pub fn established(&self) -> SystemTime {
        self.established
    }
    /// When the client must renew the SA (8 h less five minutes).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
    pub fn mechanism(&self) -> &ClientMechanism {
        &self.mechanism
    }
    /// Messages signed so far.
    pub fn cnum(&self) -> u32 {
        self.cnum
    }

    /// Whether signing is possible (a mutual Kerberos context waits for the AP-REP).
    pub fn can_sign(&self) -> bool {
        match &self.mechanism {
            ClientMechanism::Ntlm(_) => true,
            ClientMechanism::Kerberos(s) => s.is_established(),
        }
    }

    fn buffer(&self, msg: &Message, rand: &str, num: &str, realm: &str, target: &str) -> Vec<u8> {
        SignatureBuffer::build(
            msg,
            &BufferParams {
                scheme: self.scheme.token(),
                rand,
                num,
                realm,
                targetname: target,
                version: self.version,
            },
        )
        .into_bytes()
    }

    /// The MAC over a signature buffer as hex (NTLM: 16 bytes; Kerberos: the MIC token).
    pub fn mac_hex(&self, buffer: &[u8]) -> Result<String, String> {
        match &self.mechanism {
            ClientMechanism::Ntlm(s) => Ok(sagw_hex::encode(s.sign_as_client(buffer))),
            ClientMechanism::Kerberos(s) => s
                .get_mic(buffer)
                .map(sagw_hex::encode)
                .map_err(|e| e.to_string()),
        }
    }

    /// Signs `msg` with the next `cnum` and a fresh `crand`, adding our credentials header (the
    /// header carries the handshake token as well on a version-4 final leg).
    pub fn sign(
        &mut self,
        msg: &mut Message,
        leg: LegParams<'_>,
        rng: &mut dyn Rng,
    ) -> Result<(), String> {
        let mut r = [0u8; 4];
        rng.fill_bytes(&mut r);
        let crand = sagw_hex::encode(r);
        self.sign_with(msg, &crand, leg)
    }

    /// [`ClientSa::sign`] with a given `crand` (recorded-flow tests).
    pub fn sign_with(
        &mut self,
        msg: &mut Message,
        crand: &str,
        leg: LegParams<'_>,
    ) -> Result<(), String> {
        let cnum = self.cnum.wrapping_add(1);
        let cnum_text = cnum.to_string();
        let buffer = self.buffer(msg, crand, &cnum_text, &self.realm, &self.targetname);
        let response = self.mac_hex(&buffer)?;
        self.cnum = cnum;
        let mut b = AuthHeaderBuilder::new(self.scheme.token())
            .quoted("qop", "auth")
            .quoted("realm", &self.realm);
        if let Some(o) = &self.opaque {
            b = b.quoted("opaque", o);
        }
        b = b.quoted("targetname", &self.targetname);
        if let Some(v) = leg.version {
            b = b.token("version", &v.to_string());
        }
        if let Some(g) = leg.gssapi_data {
            b = b.quoted("gssapi-data", g);
        }
        let value = b
            .quoted("crand", crand)
            .quoted("cnum", &cnum_text)
            .quoted("response", &response)
            .build();
        msg.set_header(self.family.credentials_header(), &value);
        Ok(())
    }

    /// The server's signature header for our scheme: `Authentication-Info` first (what Lync-family
    /// servers use), then `Proxy-Authentication-Info`.
    fn signature_header<'m>(&self, msg: &'m Message) -> Option<Result<AuthHeader<'m>, String>> {
        ["Authentication-Info", "Proxy-Authentication-Info"]
            .iter()
            .flat_map(|name| msg.header_all(name))
            .find(|v| {
                v.trim_start()
                    .get(..self.scheme.token().len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(self.scheme.token()))
            })
            .map(|v| AuthHeader::parse(v).map_err(|e| e.to_string()))
    }

    /// Takes what a final `Authentication-Info` hands over: the opaque (Kerberos learns it here) and
    /// the AP-REP of mutual authentication.
    pub fn absorb_final(&mut self, msg: &Message) -> Result<(), BadSignature> {
        let Some(h) = self.signature_header(msg) else {
            return Ok(());
        };
        let h = h.map_err(BadSignature::Malformed)?;
        if self.opaque.is_none()
            && let Some(o) = h.param("opaque")
        {
            self.opaque = Some(o.to_owned());
        }
        if let (Some(token), ClientMechanism::Kerberos(session)) =
            (h.param("gssapi-data"), &mut self.mechanism)
            && !session.is_established()
        {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|e| BadSignature::Malformed(format!("AP-REP base64: {e}")))?;
            session
                .finish(&bytes)
                .map_err(|e| BadSignature::Kerberos(format!("AP-REP refused: {e}")))?;
        }
        Ok(())
    }

    /// Verifies the server's signature on `msg` and records its `snum`.
    pub fn verify(&mut self, msg: &Message) -> SignatureCheck {
        let Some(h) = self.signature_header(msg) else {
            return SignatureCheck::Unsigned;
        };
        match self.verify_header(msg, h) {
            Ok(num) => SignatureCheck::Verified { num },
            Err(e) => SignatureCheck::Bad(e),
        }
    }

    fn verify_header(
        &mut self,
        msg: &Message,
        h: Result<AuthHeader<'_>, String>,
    ) -> Result<u32, BadSignature> {
        let h = h.map_err(BadSignature::Malformed)?;
        let p = |n: &'static str| h.param(n).ok_or(BadSignature::MissingParam(n));
        // pidgin-sipe reads realm and targetname from this header; require both, and that they
        // name our SA ([MS-SIPAE] 3.2.5.2 looks the SA up by scheme, realm and targetname).
        let realm = p("realm")?;
        let target = p("targetname")?;
        for (field, got, ours) in [
            ("realm", realm, self.realm.as_str()),
            ("targetname", target, self.targetname.as_str()),
        ] {
            if got != ours {
                return Err(BadSignature::OtherSa {
                    field,
                    got: got.to_owned(),
                    ours: ours.to_owned(),
                });
            }
        }
        if let (Some(got), Some(ours)) = (h.param("opaque"), self.opaque.as_deref())
            && !got.eq_ignore_ascii_case(ours)
        {
            return Err(BadSignature::OtherSa {
                field: "opaque",
                got: got.to_owned(),
                ours: ours.to_owned(),
            });
        }
        let srand = p("srand")?;
        let snum_text = p("snum")?;
        let rspauth = p("rspauth")?;
        let snum: u32 = snum_text
            .parse()
            .map_err(|_| BadSignature::BadSnum(snum_text.to_owned()))?;
        match self.snums.check(snum) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replayed => return Err(BadSignature::Replayed(snum)),
            ReplayVerdict::TooOld => return Err(BadSignature::TooOld(snum)),
        }
        let buffer = self.buffer(msg, srand, snum_text, realm, target);
        let mismatch = || BadSignature::Mismatch {
            buffer: String::from_utf8_lossy(&buffer).into_owned(),
        };
        let sig = sagw_hex::decode(rspauth).map_err(|_| mismatch())?;
        let ok = match &self.mechanism {
            ClientMechanism::Ntlm(s) => s.verify_from_server(&buffer, &sig).is_ok(),
            ClientMechanism::Kerberos(s) => match s.verify_mic(&buffer, &sig) {
                Ok(()) => true,
                Err(sagw_kerberos::KerberosError::BadMic) => false,
                Err(e) => return Err(BadSignature::Kerberos(e.to_string())),
            },
        };
        if !ok {
            return Err(mismatch());
        }
        self.snums.accept(snum);
        Ok(snum)
    }
}
