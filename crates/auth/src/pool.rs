//! Moving an SA between the gateways of a pool, or across a restart of one gateway.
//!
//! An SA leaves the process as an [`SaRecord`]: what does not change while it lives (identity,
//! epid, lifetime, keys). What changes with every message (the client's `cnum` window, the idle
//! deadline) travels beside it as [`SaProgress`], written behind by the gateway that owns the SA.
//! The encoding is this crate's own, versioned, and holds key material: the caller seals it (an
//! AEAD under the pool key) before it reaches a store or a file.
//!
//! With the journal on ([`SecurityCore::enable_pool_journal`](crate::SecurityCore::enable_pool_journal)),
//! the core lists what the pool must learn: SAs made here, SAs whose window or idle deadline moved,
//! SAs and identities ended here. The caller drains it after every batch of messages.

use zeroize::{Zeroize, Zeroizing};

use crate::manager::SaHandle;
use crate::replay::STATE_LEN;
use crate::sa::{Opaque, SaScheme};

const RECORD_VERSION: u8 = 1;

/// The keys of an SA, as they move.
pub enum SaSecret {
    /// NTLM: the ExportedSessionKey and negotiated flags the session keys derive from.
    Ntlm {
        /// The NTLM ExportedSessionKey (secret; zeroized on drop).
        exported_session_key: [u8; 16],
        /// The NTLM NegotiateFlags of the handshake (KEY_EXCH, key strength).
        negotiate_flags: u32,
    },
    /// Kerberos: an exported GSS security context.
    Kerberos(Zeroizing<Vec<u8>>),
}

impl Drop for SaSecret {
    fn drop(&mut self) {
        if let SaSecret::Ntlm {
            exported_session_key,
            ..
        } = self
        {
            exported_session_key.zeroize();
        }
    }
}

impl std::fmt::Debug for SaSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaSecret::Ntlm { .. } => f.write_str("SaSecret::Ntlm(<redacted>)"),
            SaSecret::Kerberos(_) => f.write_str("SaSecret::Kerberos(<redacted>)"),
        }
    }
}

/// What does not change while an SA lives.
#[derive(Debug)]
pub struct SaRecord {
    /// The SA's name on the wire.
    pub opaque: Opaque,
    /// The MS-SIPAE protocol version the SA signs with.
    pub version: u8,
    /// The SIP identity the handshake proved.
    pub identity: String,
    /// The client endpoint's `epid` (may be empty).
    pub epid: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the SA is dead whatever happens.
    pub hard_expiry: u64,
    /// Seconds of idle time each verified message grants.
    pub idle_ttl: u32,
    /// The keys.
    pub secret: SaSecret,
    /// Kerberos AP-REP not yet sent to the client.
    pub final_token: Option<Vec<u8>>,
}

impl SaRecord {
    /// The mechanism of the keys.
    pub fn scheme(&self) -> SaScheme {
        match self.secret {
            SaSecret::Ntlm { .. } => SaScheme::Ntlm,
            SaSecret::Kerberos(_) => SaScheme::Kerberos,
        }
    }

    /// The record as bytes (key material: seal them).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            96 + self.identity.len() + self.epid.len(),
        ));
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.opaque.0.to_be_bytes());
        out.push(self.version);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.hard_expiry.to_be_bytes());
        out.extend_from_slice(&self.idle_ttl.to_be_bytes());
        put_bytes(&mut out, self.identity.as_bytes());
        put_bytes(&mut out, self.epid.as_bytes());
        match &self.secret {
            SaSecret::Ntlm {
                exported_session_key,
                negotiate_flags,
            } => {
                out.push(0);
                out.extend_from_slice(exported_session_key);
                out.extend_from_slice(&negotiate_flags.to_be_bytes());
            }
            SaSecret::Kerberos(ctx) => {
                out.push(1);
                put_bytes(&mut out, ctx);
            }
        }
        match &self.final_token {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put_bytes(&mut out, t);
            }
        }
        out
    }

    /// The inverse of [`encode`](Self::encode). The bytes come from a store or a file: anything
    /// malformed is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader { b: bytes };
        if r.u8()? != RECORD_VERSION {
            return Err(RecordError::Version);
        }
        let opaque = Opaque(r.u32()?);
        let version = r.u8()?;
        let created = r.u64()?;
        let hard_expiry = r.u64()?;
        let idle_ttl = r.u32()?;
        let identity = r.string()?;
        let epid = r.string()?;
        let secret = match r.u8()? {
            0 => {
                let mut exported_session_key = [0u8; 16];
                exported_session_key.copy_from_slice(r.take(16)?);
                SaSecret::Ntlm {
                    exported_session_key,
                    negotiate_flags: r.u32()?,
                }
            }
            1 => SaSecret::Kerberos(Zeroizing::new(r.bytes()?.to_vec())),
            _ => return Err(RecordError::Malformed),
        };
        let final_token = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?.to_vec()),
            _ => return Err(RecordError::Malformed),
        };
        if !r.b.is_empty() {
            return Err(RecordError::Malformed);
        }
        Ok(SaRecord {
            opaque,
            version,
            identity,
            epid,
            created,
            hard_expiry,
            idle_ttl,
            secret,
            final_token,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Identities, epids (bounded by max_epid_len) and GSS contexts are far below 4 GiB.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(RecordError::Malformed);
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, RecordError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| RecordError::Malformed)
    }
}

/// Why an SA could not be encoded, decoded or taken in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Written by a gateway with another record format (a mixed-version pool).
    #[error("SA record of an unknown version")]
    Version,
    /// Truncated, trailing bytes, or a bad tag or string: the bytes are not a record.
    #[error("malformed SA record")]
    Malformed,
    /// The keys cannot be exported (an NTLM session without extended session security, a GSS
    /// context the backend cannot export).
    #[error("this SA's keys cannot leave the process: {0}")]
    NotExportable(String),
    /// The keys cannot be used by this gateway (Kerberos not enabled here, NTLM flags or a GSS
    /// context the session import refuses).
    #[error("the SA's keys cannot be used here: {0}")]
    NotImportable(String),
    /// The SA's hard or idle deadline has passed: nothing to take in.
    #[error("the SA has ended")]
    Ended,
}

/// Where an SA taken over goes on from.
#[derive(Debug, Clone)]
pub struct SaResume {
    /// The last `snum` signed with it; the next is one more. A gateway taking an SA over from
    /// another passes `generation << SNUM_GENERATION_SHIFT`, above anything the other signed.
    pub snum_after: u32,
    /// The client's `cnum` window (bytes of [`ReplayWindow::to_bytes`](crate::replay::ReplayWindow::to_bytes)),
    /// if one was written.
    pub window: Option<[u8; STATE_LEN]>,
    /// Unix seconds; `None` = idle TTL from now.
    pub idle_deadline: Option<u64>,
}

/// `snum` of generation `g` of an SA starts above `g << SNUM_GENERATION_SHIFT` (docs/pools.md).
pub const SNUM_GENERATION_SHIFT: u32 = 20;

/// The last generation whose `snum` numbers fit above every earlier one's: 4 095.
pub const MAX_GENERATION: u32 = u32::MAX >> SNUM_GENERATION_SHIFT;

/// The `snum` a new owner at `generation` goes on after ([`SaResume::snum_after`]): above every
/// number an earlier generation used (below 2^20 messages each). `None` past
/// [`MAX_GENERATION`]: no number is left above the last generation's, so such an SA must not be
/// taken over (its client signs in again). Generations are bumped by claims, which a message
/// merely shaped as signed causes, so whoever knows an opaque can push an SA there.
pub fn generation_snum_base(generation: u32) -> Option<u32> {
    generation.checked_mul(1 << SNUM_GENERATION_SHIFT)
}

/// What changed on an SA this gateway owns since the journal was last drained.
#[derive(Debug, Clone)]
pub struct SaProgress {
    /// The SA.
    pub opaque: Opaque,
    /// Its identity: the store writes a checkpoint only over that user's record.
    pub identity: String,
    /// The client's `cnum` replay window ([`SaResume::window`] on the node that takes the SA over).
    pub window: [u8; STATE_LEN],
    /// Unix seconds.
    pub idle_deadline: u64,
    /// Last `snum` signed (for a snapshot; pools do not need it).
    pub snum: u32,
}

/// What the pool must learn from this gateway, drained by the caller.
#[derive(Debug, Default)]
pub struct PoolJournal {
    /// SAs made here by a handshake.
    pub established: Vec<SaHandle>,
    /// SAs whose window or idle deadline moved.
    pub progressed: Vec<SaProgress>,
    /// SAs ended here (replaced, evicted by the identity cap, revoked).
    pub ended: Vec<EndedSa>,
    /// Identities all of whose SAs were ended here.
    pub ended_identities: Vec<String>,
}

/// An SA ended here, as the pool must end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSa {
    /// The SA's name on the wire.
    pub opaque: Opaque,
    /// Whose SA it was, when this gateway held it: the pool then ends only that identity's SA
    /// under the opaque, never another's that drew the same one elsewhere (docs/security.md
    /// B11e). `None`: an operator revoked an opaque this gateway does not hold, which ends
    /// whatever the pool holds under it.
    pub identity: Option<String>,
}

impl EndedSa {
    pub(crate) fn of(sa: &crate::sa::SecurityAssociation) -> EndedSa {
        EndedSa {
            opaque: sa.opaque(),
            identity: Some(sa.identity().to_owned()),
        }
    }
}

impl PoolJournal {
    /// Nothing to send to the pool.
    pub fn is_empty(&self) -> bool {
        self.established.is_empty()
            && self.progressed.is_empty()
            && self.ended.is_empty()
            && self.ended_identities.is_empty()
    }
}

/// The journal as the manager fills it: handles, so a progress entry reads the SA's latest state
/// when drained rather than one copy per message.
#[derive(Default)]
pub(crate) struct JournalTable {
    pub established: Vec<SaHandle>,
    pub touched: Vec<SaHandle>,
    pub ended: Vec<EndedSa>,
    pub ended_identities: Vec<String>,
}

impl JournalTable {
    pub(crate) fn drain(&mut self) -> PoolJournal {
        let progressed = self
            .touched
            .drain(..)
            .filter(|sa| {
                sa.clear_journaled();
                !sa.is_revoked()
            })
            .map(|sa| SaProgress {
                opaque: sa.opaque(),
                identity: sa.identity().to_owned(),
                window: sa.window_bytes(),
                idle_deadline: sa.idle_deadline(),
                snum: sa.snum(),
            })
            .collect();
        PoolJournal {
            established: std::mem::take(&mut self.established),
            progressed,
            ended: std::mem::take(&mut self.ended),
            ended_identities: std::mem::take(&mut self.ended_identities),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SaRecord {
        SaRecord {
            opaque: Opaque(0xC0FF_EE01),
            version: 4,
            identity: "sip:alice@example.com".into(),
            epid: "01010101".into(),
            created: 1_700_000_000,
            hard_expiry: 1_700_028_800,
            idle_ttl: 900,
            secret: SaSecret::Ntlm {
                exported_session_key: [7; 16],
                negotiate_flags: 0xE298_82F3,
            },
            final_token: None,
        }
    }

    #[test]
    fn a_record_survives_its_bytes() {
        let r = record();
        let back = SaRecord::decode(&r.encode()).expect("decodes");
        assert_eq!(back.opaque, r.opaque);
        assert_eq!(back.identity, r.identity);
        assert_eq!(back.epid, r.epid);
        assert_eq!(
            (back.created, back.hard_expiry, back.idle_ttl),
            (r.created, r.hard_expiry, r.idle_ttl)
        );
        match &back.secret {
            SaSecret::Ntlm {
                exported_session_key,
                negotiate_flags,
            } => assert_eq!(
                (*exported_session_key, *negotiate_flags),
                ([7; 16], 0xE298_82F3)
            ),
            other => panic!("{other:?}"),
        }
        let k = SaRecord {
            secret: SaSecret::Kerberos(Zeroizing::new(vec![1, 2, 3])),
            final_token: Some(vec![9, 9]),
            ..record()
        };
        let back = SaRecord::decode(&k.encode()).expect("decodes");
        assert!(matches!(&back.secret, SaSecret::Kerberos(c) if c.as_slice() == [1, 2, 3]));
        assert_eq!(back.final_token.as_deref(), Some(&[9u8, 9][..]));
    }

    #[test]
    fn generations_number_upwards_and_end_rather_than_repeat() {
        assert_eq!(generation_snum_base(0), Some(0));
        assert_eq!(generation_snum_base(1), Some(1 << 20));
        assert_eq!(MAX_GENERATION, 4095);
        assert_eq!(generation_snum_base(MAX_GENERATION), Some(4095 << 20));
        // Before, every generation from 4 096 on had the same base: a new owner repeated the
        // numbers of the one before it.
        assert_eq!(generation_snum_base(MAX_GENERATION + 1), None);
        assert_eq!(generation_snum_base(u32::MAX), None);
    }

    #[test]
    fn malformed_records_are_errors() {
        let bytes = record().encode();
        for n in 0..bytes.len() {
            assert!(SaRecord::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(SaRecord::decode(&long).err(), Some(RecordError::Malformed));
        let mut v = bytes.to_vec();
        v[0] = 9;
        assert_eq!(SaRecord::decode(&v).err(), Some(RecordError::Version));
        let mut huge = bytes.to_vec();
        // identity length field -> 4 GiB
        huge[26..30].copy_from_slice(&[0xFF; 4]);
        assert!(SaRecord::decode(&huge).is_err());
    }
}
