//! One security association: the keys of a finished handshake, bound to one user's endpoint.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::replay::{ReplayVerdict, ReplayWindow};

/// Mechanisms that produce MS-SIPAE security associations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaScheme {
    /// Connectionless NTLM (NTLMv2 with extended session security).
    Ntlm,
    /// Kerberos through GSS-API (`sip/<fqdn>` service tickets).
    Kerberos,
}

impl SaScheme {
    /// The scheme token on the wire (and in signature buffers).
    pub fn token(self) -> &'static str {
        match self {
            SaScheme::Ntlm => "NTLM",
            SaScheme::Kerberos => "Kerberos",
        }
    }

    /// The scheme of a header's scheme token, in any case; `None` for any other scheme (Digest,
    /// TLS-DSK...).
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("NTLM") {
            Some(SaScheme::Ntlm)
        } else if token.eq_ignore_ascii_case("Kerberos") {
            Some(SaScheme::Kerberos)
        } else {
            None
        }
    }
}

/// `opaque`: the SA's name on the wire. Eight upper-case hex digits, as Microsoft servers send and as
/// every known client has seen. It is an index, not a secret: authority comes from the signature keys,
/// and a lookup also checks the sender's epid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opaque(pub u32);

impl Opaque {
    /// Exactly eight hex digits, either case: the big-endian bytes of the number.
    pub fn parse(s: &str) -> Option<Self> {
        // Digit by digit into the number, kept by hand: `sagw_hex::decode_to_array` into four
        // big-endian bytes (after a length check, as it strips a `0x` prefix) costs some 35
        // instructions more per call under callgrind, for eight digits its SIMD set-up does not
        // pay for (once per signed message and per final leg). Accepts what the `hex` crate did.
        let digits: &[u8; 8] = s.as_bytes().try_into().ok()?;
        digits
            .iter()
            .try_fold(0u32, |n, &d| {
                let v = match d {
                    b'0'..=b'9' => d - b'0',
                    b'a'..=b'f' => d - b'a' + 10,
                    b'A'..=b'F' => d - b'A' + 10,
                    _ => return None,
                };
                Some(n << 4 | u32::from(v))
            })
            .map(Opaque)
    }
}

impl fmt::Display for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opaque({self})")
    }
}

/// A GSS security context (Kerberos) as the core uses it; implemented over MIT krb5 by the gateway's
/// Kerberos adapter, so this crate stays free of C libraries.
pub trait GssSession: Send + Sync {
    /// MIC token over `buffer` (server to client).
    fn get_mic(&self, buffer: &[u8]) -> Result<Vec<u8>, String>;
    /// Checks the client's MIC token; sequencing warnings are not errors (cnum does replay).
    fn verify_mic(&self, buffer: &[u8], token: &[u8]) -> Result<(), String>;
    /// The context as bytes another node's [`KerberosBackend::import_session`](crate::kerberos::KerberosBackend::import_session)
    /// takes (GSS `gss_export_sec_context`): key material, to be sealed before it leaves the process.
    /// The session stays usable here.
    fn export(&self) -> Result<Vec<u8>, String> {
        Err("this GSS session cannot be exported".into())
    }
}

/// The keys of an SA.
pub enum Mechanism {
    /// The NTLM session keys (signing and sealing) derived at the final leg.
    Ntlm(sagw_ntlm::NtlmSession),
    /// The accepted GSS context.
    Kerberos(Box<dyn GssSession>),
}

impl Mechanism {
    /// The scheme these keys belong to.
    pub fn scheme(&self) -> SaScheme {
        match self {
            Mechanism::Ntlm(_) => SaScheme::Ntlm,
            Mechanism::Kerberos(_) => SaScheme::Kerberos,
        }
    }
}

impl fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys never reach logs.
        write!(f, "Mechanism::{:?}(..)", self.scheme())
    }
}

/// An established security association.
pub struct SecurityAssociation {
    opaque: Opaque,
    version: u8,
    /// The SIP identity the handshake proved, e.g. `sip:alice@example.com`.
    identity: Box<str>,
    /// The endpoint the SA was made for (From `epid`); may be empty for clients that send none.
    epid: Box<str>,
    created: u64,
    /// Unix seconds after which the SA is dead whatever happens.
    hard_expiry: u64,
    /// Unix seconds after which the SA is dead unless a signed message moves it.
    idle_deadline: AtomicU64,
    /// Seconds each verified message (or REGISTER refresh) grants.
    idle_ttl: AtomicU32,
    snum: AtomicU32,
    revoked: AtomicBool,
    /// Listed in the pool journal's progress since its last drain (pools only).
    journaled: AtomicBool,
    window: Mutex<ReplayWindow>,
    mechanism: Mechanism,
    /// Token for the first signed response (Kerberos AP-REP for mutual authentication).
    final_token: Mutex<Option<Box<[u8]>>>,
}

impl fmt::Debug for SecurityAssociation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityAssociation")
            .field("opaque", &self.opaque)
            .field("scheme", &self.mechanism.scheme())
            .field("identity", &self.identity)
            .field("epid", &self.epid)
            .field("created", &self.created)
            .field("hard_expiry", &self.hard_expiry)
            .finish_non_exhaustive()
    }
}

/// What an SA was made from.
pub struct NewSa {
    /// The SA's name on the wire.
    pub opaque: Opaque,
    /// The MS-SIPAE protocol version agreed (2, 3 or 4): it selects the signature buffer layout.
    pub version: u8,
    /// The SIP identity the handshake proved, e.g. `sip:alice@example.com`.
    pub identity: String,
    /// The client endpoint's `epid` (may be empty).
    pub epid: String,
    /// The keys.
    pub mechanism: Mechanism,
    /// Unix seconds of creation; the idle deadline starts from here.
    pub now: u64,
    /// Unix seconds after which the SA is dead whatever happens.
    pub hard_expiry: u64,
    /// Seconds of silence after which the SA expires (what each verified message grants).
    pub idle_ttl: u32,
    /// Token owed to the client in the first signed response (Kerberos AP-REP), if any.
    pub final_token: Option<Vec<u8>>,
}

impl SecurityAssociation {
    /// A fresh SA: no `snum` used yet, an empty `cnum` window, idle deadline `now + idle_ttl`
    /// (within the hard expiry).
    pub fn new(n: NewSa) -> Self {
        SecurityAssociation {
            opaque: n.opaque,
            version: n.version,
            identity: n.identity.into_boxed_str(),
            epid: n.epid.into_boxed_str(),
            created: n.now,
            hard_expiry: n.hard_expiry,
            idle_deadline: AtomicU64::new(
                n.now
                    .saturating_add(u64::from(n.idle_ttl))
                    .min(n.hard_expiry),
            ),
            idle_ttl: AtomicU32::new(n.idle_ttl),
            snum: AtomicU32::new(0),
            revoked: AtomicBool::new(false),
            journaled: AtomicBool::new(false),
            window: Mutex::new(ReplayWindow::new()),
            mechanism: n.mechanism,
            final_token: Mutex::new(n.final_token.map(Vec::into_boxed_slice)),
        }
    }

    /// The SA's name on the wire (`opaque` of the client's and the server's headers).
    pub fn opaque(&self) -> Opaque {
        self.opaque
    }
    /// The mechanism the SA was made with.
    pub fn scheme(&self) -> SaScheme {
        self.mechanism.scheme()
    }
    /// The MS-SIPAE protocol version agreed: 2 signs the 12-element buffer, 3 and 4 the
    /// 15-element one.
    pub fn version(&self) -> u8 {
        self.version
    }
    /// The SIP identity the handshake proved, e.g. `sip:alice@example.com`.
    pub fn identity(&self) -> &str {
        &self.identity
    }
    /// The endpoint (`epid`) the SA was made for; empty for clients that send none. A message
    /// naming the SA from another epid does not verify.
    pub fn epid(&self) -> &str {
        &self.epid
    }
    /// Unix seconds at which the handshake made the SA.
    pub fn created(&self) -> u64 {
        self.created
    }
    /// Unix seconds after which the SA is dead whatever happens (lifetime, or the Kerberos
    /// ticket's end if sooner).
    pub fn hard_expiry(&self) -> u64 {
        self.hard_expiry
    }
    /// Unix seconds after which the SA is dead unless a message its client signs (or a granted
    /// registration) pushes it out.
    pub fn idle_deadline(&self) -> u64 {
        self.idle_deadline.load(Ordering::Relaxed)
    }
    /// The SA's keys.
    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }
    /// Last `snum` used.
    pub fn snum(&self) -> u32 {
        self.snum.load(Ordering::Relaxed)
    }

    /// When the SA stops being usable: the earlier of the hard and the idle deadline.
    pub fn expiry(&self) -> u64 {
        self.hard_expiry.min(self.idle_deadline())
    }

    /// Not revoked and not past [`expiry`](Self::expiry) at `now` (Unix seconds).
    pub fn is_live(&self, now: u64) -> bool {
        !self.revoked.load(Ordering::Relaxed) && now < self.expiry()
    }

    /// Ended by an operator, a replacing handshake, or its identity's cap.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Relaxed);
    }

    /// Next server sequence number: strictly increasing per SA however many threads sign at once.
    pub(crate) fn next_snum(&self) -> u32 {
        self.snum.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Records a verified `cnum`; the signature has been checked before, so a forged message cannot
    /// burn a number.
    pub(crate) fn accept_cnum(&self, cnum: u32) -> ReplayVerdict {
        self.window.lock().accept(cnum)
    }

    pub(crate) fn check_cnum(&self, cnum: u32) -> ReplayVerdict {
        self.window.lock().check(cnum)
    }

    /// A message signed by the client verified: push the idle deadline out. Only the client's own
    /// signatures do: what the gateway sends it (which anyone may cause) proves nothing about it.
    pub(crate) fn touch(&self, now: u64) {
        let ttl = u64::from(self.idle_ttl.load(Ordering::Relaxed));
        let deadline = now.saturating_add(ttl).min(self.hard_expiry);
        self.idle_deadline.fetch_max(deadline, Ordering::Relaxed);
    }

    /// A registration of `secs` was granted to this SA's client: the SA must outlive it (within
    /// the hard limit).
    pub(crate) fn raise_idle_ttl(&self, secs: u32, now: u64) {
        self.idle_ttl.fetch_max(secs, Ordering::Relaxed);
        self.touch(now);
    }

    /// Idle TTL in seconds (what a verified message grants).
    pub fn idle_ttl(&self) -> u32 {
        self.idle_ttl.load(Ordering::Relaxed)
    }

    /// The `cnum` window, as bytes another gateway can go on from.
    pub fn window_bytes(&self) -> [u8; crate::replay::STATE_LEN] {
        self.window.lock().to_bytes()
    }

    /// An SA moved here (from another gateway, or from before a restart) goes on where it was:
    /// `snum` continues after `snum_after`, the client's window and idle deadline are as they were.
    pub(crate) fn resume(&self, snum_after: u32, window: Option<ReplayWindow>, idle_deadline: u64) {
        self.snum.store(snum_after, Ordering::Relaxed);
        if let Some(w) = window {
            *self.window.lock() = w;
        }
        self.idle_deadline
            .store(idle_deadline.min(self.hard_expiry), Ordering::Relaxed);
    }

    /// Marks the SA as listed in the journal; false if it already was.
    pub(crate) fn mark_journaled(&self) -> bool {
        !self.journaled.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn clear_journaled(&self) {
        self.journaled.store(false, Ordering::Relaxed);
    }

    /// The AP-REP still owed to the client, if any (a moved SA carries it along).
    pub(crate) fn peek_final_token(&self) -> Option<Vec<u8>> {
        self.final_token.lock().as_deref().map(<[u8]>::to_vec)
    }

    pub(crate) fn take_final_token(&self) -> Option<Box<[u8]>> {
        self.final_token.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::Opaque;

    #[test]
    fn opaque_parse_is_hex_decode_of_four_bytes() {
        // What the `hex` crate's `decode_to_slice` into four big-endian bytes accepted, written
        // out independently: eight ASCII hex digits, no sign, no `0x`.
        let reference = |s: &str| {
            (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok().map(Opaque))
                .flatten()
        };
        let mut cases: Vec<String> = [
            "2BDBAC9D",
            "2bdbac9d",
            "00000000",
            "FFFFFFFF",
            "ffffffff",
            "0123abCD",
            "",
            "2BDBAC9",
            "2BDBAC9D0",
            "2BDBAC9G",
            " 2BDBAC9",
            "2BDBAC9 ",
            "+1234567",
            "-1234567",
            "0x123456",
            "0x12345678",
            "0X12345678",
            "2BDBAC\u{e9}",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every ASCII byte at every position of an otherwise valid opaque.
        for at in 0..8 {
            for b in 0..=127u8 {
                let mut v = b"2bdbAC9D".to_vec();
                v[at] = b;
                cases.push(String::from_utf8(v).expect("ASCII"));
            }
        }
        for c in &cases {
            assert_eq!(Opaque::parse(c), reference(c), "{c:?}");
        }
    }

    #[test]
    fn opaque_is_eight_hex_digits_of_either_case() {
        assert_eq!(Opaque::parse("0A0BC0DE"), Some(Opaque(0x0a0b_c0de)));
        assert_eq!(Opaque::parse("0a0bc0de"), Some(Opaque(0x0a0b_c0de)));
        assert_eq!(Opaque::parse("FFFFFFFF"), Some(Opaque(u32::MAX)));
        assert_eq!(Opaque(0x0a0b_c0de).to_string(), "0A0BC0DE");
        for bad in [
            "",
            "0A0BC0D",
            "0A0BC0DE0",
            "0A0BC0DG",
            "+A0BC0DE",
            " A0BC0DE",
        ] {
            assert_eq!(Opaque::parse(bad), None, "{bad}");
        }
    }
}
