//! What the security core is told by its operator. The gateway fills this from its TOML file; the
//! defaults are what a Microsoft front end does unless there is a reason to differ.

use std::time::Duration;

/// The hard ceiling of [MS-SIPAE] 3.2.2 on an SA's life. Configuration may shorten it, never extend it.
pub const MAX_SA_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Which header family a challenge uses: 401 + `WWW-Authenticate`, or 407 + `Proxy-Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeFamily {
    /// 401 Unauthorized / `WWW-Authenticate` / `Authorization` / `Authentication-Info`.
    Www,
    /// 407 Proxy Authentication Required / `Proxy-Authenticate` / `Proxy-Authorization`.
    Proxy,
}

impl ChallengeFamily {
    /// The challenge's status code: 401 or 407.
    pub fn status(self) -> u16 {
        match self {
            ChallengeFamily::Www => 401,
            ChallengeFamily::Proxy => 407,
        }
    }
    /// The challenge's reason phrase.
    pub fn reason_phrase(self) -> &'static str {
        match self {
            ChallengeFamily::Www => "Unauthorized",
            ChallengeFamily::Proxy => "Proxy Authentication Required",
        }
    }
    /// The header the challenge goes in: `WWW-Authenticate` or `Proxy-Authenticate`.
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeFamily::Www => "WWW-Authenticate",
            ChallengeFamily::Proxy => "Proxy-Authenticate",
        }
    }
    /// The header the client answers in: `Authorization` or `Proxy-Authorization`.
    pub fn credentials_header(self) -> &'static str {
        match self {
            ChallengeFamily::Www => "Authorization",
            ChallengeFamily::Proxy => "Proxy-Authorization",
        }
    }
    /// The header of the server's signature or Digest `rspauth` in this family:
    /// `Authentication-Info` or `Proxy-Authentication-Info` (where the signature actually goes is
    /// [`SignatureHeader`]'s call).
    pub fn info_header(self) -> &'static str {
        match self {
            ChallengeFamily::Www => "Authentication-Info",
            ChallengeFamily::Proxy => "Proxy-Authentication-Info",
        }
    }
}

/// Which challenge family each kind of request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengePolicy {
    /// REGISTER: 401 by default, because pidgin-sipe fails against a 407 (notes §9).
    pub register: ChallengeFamily,
    /// Every other request: 407 when the gateway acts as a proxy (the default), 401 as a registrar/UAS.
    pub other: ChallengeFamily,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        ChallengePolicy {
            register: ChallengeFamily::Www,
            other: ChallengeFamily::Proxy,
        }
    }
}

/// Where server signatures go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureHeader {
    /// Always `Authentication-Info`: the only header real Lync-family clients read (notes §4.3, §9).
    #[default]
    AuthenticationInfo,
    /// Follow the family of the client's credentials header (`Proxy-Authentication-Info` for clients
    /// that sent `Proxy-Authorization`), for clients known to read it.
    FollowClient,
}

/// NTLM scheme settings.
#[derive(Debug, Clone)]
pub struct NtlmSettings {
    /// `targetname` for NTLM: the gateway's FQDN.
    pub targetname: String,
    /// Names in the CHALLENGE TargetInfo.
    pub identity: sagw_ntlm::ServerIdentity,
    /// Client timestamp tolerance ([MS-SIP]: 15 minutes for NTLM).
    pub max_clock_skew: Duration,
    /// Put MsvAvTimestamp in the challenge (modern clients then add a MIC). OCS 2007 R2 did not.
    pub include_timestamp: bool,
    /// The VERSION field of the CHALLENGE (major, minor, build LE16, 3 reserved, NTLM revision 15).
    pub version: [u8; 8],
    /// Secret for server challenges (32 bytes from a CSPRNG at start; gateways that must take each
    /// other's final legs share it). `None`: drawn from the caller's randomness at the first
    /// first leg, so challenges issued before a restart no longer verify.
    pub challenge_key: Option<[u8; 32]>,
}

impl NtlmSettings {
    /// Settings with Microsoft's defaults: 15 minutes of skew, no timestamp, Windows 6.1.7601.
    pub fn new(targetname: impl Into<String>, identity: sagw_ntlm::ServerIdentity) -> Self {
        NtlmSettings {
            targetname: targetname.into(),
            identity,
            max_clock_skew: Duration::from_secs(15 * 60),
            include_timestamp: false,
            version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
            challenge_key: None,
        }
    }
}

/// Digest scheme settings.
#[derive(Debug, Clone)]
pub struct DigestSettings {
    /// Realm, algorithms, nonce lifetime and uses per nonce (defaults of
    /// [`sagw_digest::DigestConfig::new`]: SHA-256 then MD5, 300 s, 1000 uses). Its `node_id` is
    /// overridden by [`CoreConfig::node_id`].
    pub config: sagw_digest::DigestConfig,
    /// Secret for stateless nonces (32 bytes from the operator's key file or a CSPRNG at start).
    pub nonce_key: [u8; 32],
    /// How many nonces the nonce-count tracker remembers at most.
    pub max_tracked_nonces: usize,
    /// How many of those one identity may hold ([`sagw_digest::NonceCounter::with_owner_share`]).
    pub max_tracked_nonces_per_identity: usize,
    /// When this server started: its nonces issued before are stale
    /// ([`sagw_digest::NonceCounter::stale_before`]). `None`: none are (tests).
    pub started: Option<std::time::SystemTime>,
}

/// NTLM handshakes. Nothing is kept for a first leg (see [`crate::handshake`]), so there is no
/// table of handshakes in progress to bound, and no per-source cap.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// The coarse time window of a challenge: its final leg is taken in the window it was issued
    /// in and in the next (so for between one and two windows). Default 30 s.
    pub window: Duration,
    /// `opaque`s of successful final legs remembered for one-time use (those of the last two
    /// windows); when full, further final legs get 503 until entries expire. Only a final leg with
    /// the right password adds one. Default 2^20.
    pub max_recent_final_legs: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            window: Duration::from_secs(30),
            max_recent_final_legs: 1 << 20,
        }
    }
}

/// Everything the security core needs to know.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// `realm` of NTLM/Kerberos challenges; default Microsoft's, `SIP Communications Service`.
    pub realm: String,
    /// SIP domain for identities when the credential store gives none (`user` -> `sip:user@domain`).
    pub sip_domain: String,
    /// The `version` advertised in NTLM/Kerberos challenges (3 or 4; default 4). An SA runs at the
    /// lower of this and the client's.
    pub version: u8,
    /// NTLM, when enabled (default: off).
    pub ntlm: Option<NtlmSettings>,
    /// Digest, when enabled (default: off). Kerberos is enabled on the core itself
    /// ([`crate::SecurityCore::with_kerberos`]).
    pub digest: Option<DigestSettings>,
    /// Which challenge family REGISTER and other requests get, unless a caller passes its own
    /// (default: 401 for REGISTER, 407 for the rest).
    pub policy: ChallengePolicy,
    /// Where server signatures go (default: always `Authentication-Info`).
    pub signature_header: SignatureHeader,
    /// Absolute SA life; clamped to [`MAX_SA_LIFETIME`] (the default, 8 hours).
    pub sa_lifetime: Duration,
    /// An SA unused this long expires; every verified signed message from its client, and every
    /// registration granted to it (plus a margin, [`crate::SecurityCore::register_granted`]),
    /// pushes the deadline out. Default 15 minutes.
    pub sa_idle_ttl: Duration,
    /// The NTLM handshake window and final-leg table size (default: 30 s, 2^20 entries).
    pub handshakes: HandshakeLimits,
    /// SAs one identity may hold at once (one per device, `epid`); a new one beyond this ends the
    /// identity's least recently used SA. Bounds what one set of credentials can make the gateway
    /// keep.
    pub max_sas_per_identity: usize,
    /// Longest `epid` accepted, in bytes; longer ones are refused (400) before any state is kept.
    pub max_epid_len: usize,
    /// This gateway's number in its pool, 0 for a single gateway. Written into Digest nonces
    /// (it overrides `digest.config.node_id`): another node answers them with `stale=true`.
    pub node_id: u16,
}

/// Default of [`CoreConfig::max_sas_per_identity`]: twice what a Lync registrar lets one user
/// register (`MaxEndpointsPerUser`, 8), so a re-installed device's stale SA never locks a user out.
pub const DEFAULT_MAX_SAS_PER_IDENTITY: usize = 16;

/// Default of [`CoreConfig::max_epid_len`]: Lync-family clients send 10 hex digits; generous room
/// for other clients, nowhere near the 8 KB a header line may hold.
pub const DEFAULT_MAX_EPID_LEN: usize = 64;

impl CoreConfig {
    /// A configuration with Microsoft's defaults and no scheme enabled.
    pub fn new(sip_domain: impl Into<String>) -> Self {
        CoreConfig {
            realm: "SIP Communications Service".to_owned(),
            sip_domain: sip_domain.into(),
            version: 4,
            ntlm: None,
            digest: None,
            policy: ChallengePolicy::default(),
            signature_header: SignatureHeader::default(),
            sa_lifetime: MAX_SA_LIFETIME,
            sa_idle_ttl: Duration::from_secs(15 * 60),
            handshakes: HandshakeLimits::default(),
            max_sas_per_identity: DEFAULT_MAX_SAS_PER_IDENTITY,
            max_epid_len: DEFAULT_MAX_EPID_LEN,
            node_id: 0,
        }
    }

    /// The SA lifetime actually enforced.
    pub fn effective_sa_lifetime(&self) -> Duration {
        self.sa_lifetime.min(MAX_SA_LIFETIME)
    }
}
