//! The client side: a GSS initiator for `sip@<fqdn>` from a credential
//! cache. Used by the tests and by the operator client.

use std::fmt;

use crate::context::{Enctype, MicFormat, SecContext, SequenceWarning};
use crate::error::{KerberosError, Op};
use crate::ffi::{self, Context, Cred, CredError, Name, Usage};

const GSS_C_MUTUAL_FLAG: u32 = 2;
const GSS_C_REPLAY_FLAG: u32 = 4;
const GSS_C_SEQUENCE_FLAG: u32 = 8;
const GSS_C_INTEG_FLAG: u32 = 32;

/// Whether the initiator asks the server for an AP-REP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mutual {
    /// What pidgin-sipe does: one leg, no AP-REP.
    #[default]
    NotRequested,
    /// The acceptor returns an AP-REP that [`ClientSession::finish`] checks.
    Requested,
}

/// Whether per-message tokens carry GSS replay/sequence detection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sequencing {
    /// Integrity only (what pidgin-sipe asks for).
    #[default]
    Off,
    /// GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG: the peer's library reports
    /// duplicate / out-of-order tokens as supplementary status.
    ReplayAndSequence,
}

/// Initiator choices beyond the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InitiatorOptions {
    pub mutual: Mutual,
    pub sequencing: Sequencing,
}

struct Pending {
    cred: Cred,
    target: Name,
    flags: u32,
}

/// The initiator's context.
pub struct ClientSession {
    ctx: SecContext,
    /// `Some` until the AP-REP has been processed (mutual authentication).
    pending: Option<Pending>,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.pending {
            Some(_) => "awaiting AP-REP",
            None => "established",
        };
        f.debug_struct("ClientSession")
            .field("state", &state)
            .field("enctype", &self.enctype())
            .finish()
    }
}

/// Build the AP-REQ for `sip@<service_fqdn>` (integrity only, optionally
/// mutual). `ccache` is a krb5 ccache name (`FILE:/tmp/cc`, a plain path,
/// `KCM:`); `None` uses `KRB5CCNAME` / the default.
pub fn initiate(
    service_fqdn: &str,
    ccache: Option<&str>,
    mutual: bool,
) -> Result<(Vec<u8>, ClientSession), KerberosError> {
    let options = InitiatorOptions {
        mutual: if mutual {
            Mutual::Requested
        } else {
            Mutual::NotRequested
        },
        sequencing: Sequencing::Off,
    };
    initiate_with(service_fqdn, ccache, options)
}

/// [`initiate`] with explicit options.
pub fn initiate_with(
    service_fqdn: &str,
    ccache: Option<&str>,
    options: InitiatorOptions,
) -> Result<(Vec<u8>, ClientSession), KerberosError> {
    let err = |st| KerberosError::from_status(Op::Initiate, st);
    let target =
        Name::import(&format!("sip@{service_fqdn}"), ffi::OID_NT_HOSTBASED).map_err(|st| {
            KerberosError::Config {
                detail: format!("bad service name sip@{service_fqdn}: {}", st.message()),
            }
        })?;
    let store: Vec<(&str, &str)> = ccache.map(|c| ("ccache", c)).into_iter().collect();
    let cred = Cred::acquire_from(None, Usage::Initiate, &store).map_err(|e| match e {
        CredError::Nul => KerberosError::Config {
            detail: "ccache name contains NUL".into(),
        },
        CredError::Gss(st) => err(st),
    })?;
    let mut flags = GSS_C_INTEG_FLAG;
    if options.mutual == Mutual::Requested {
        flags |= GSS_C_MUTUAL_FLAG;
    }
    if options.sequencing == Sequencing::ReplayAndSequence {
        flags |= GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG;
    }
    let mut ctx = Context::new_initiator();
    let (token, complete) = ctx.init_step(&cred, &target, flags, None).map_err(err)?;
    let token = token.to_vec();
    let session = if complete {
        ClientSession {
            ctx: SecContext::new(ctx),
            pending: None,
        }
    } else {
        ClientSession {
            ctx: SecContext::new_pending(ctx),
            pending: Some(Pending {
                cred,
                target,
                flags,
            }),
        }
    };
    Ok((token, session))
}

impl ClientSession {
    /// Whether the context is usable for MICs (mutual: after `finish`).
    pub fn is_established(&self) -> bool {
        self.pending.is_none()
    }

    /// Process the acceptor's AP-REP (mutual authentication).
    pub fn finish(&mut self, ap_rep: &[u8]) -> Result<(), KerberosError> {
        let Some(p) = &self.pending else {
            return Err(KerberosError::Unsupported {
                detail: "context already established; no AP-REP expected".into(),
            });
        };
        let (_, complete) = self
            .ctx
            .context_mut()
            .init_step(&p.cred, &p.target, p.flags, Some(ap_rep))
            .map_err(|st| KerberosError::from_status(Op::Initiate, st))?;
        if !complete {
            return Err(KerberosError::Unsupported {
                detail: "acceptor asked for a third leg".into(),
            });
        }
        self.pending = None;
        self.ctx.refresh_enctype();
        Ok(())
    }

    fn established(&self) -> Result<&SecContext, KerberosError> {
        match self.pending {
            None => Ok(&self.ctx),
            Some(_) => Err(KerberosError::NotEstablished),
        }
    }

    /// Client signature over the signature buffer.
    pub fn get_mic(&self, buffer: &[u8]) -> Result<Vec<u8>, KerberosError> {
        self.established()?.get_mic(buffer)
    }

    /// Verify a server signature (sequencing warnings are not errors).
    pub fn verify_mic(&self, buffer: &[u8], token: &[u8]) -> Result<(), KerberosError> {
        self.established()?.verify_mic(buffer, token).map(|_| ())
    }

    /// [`verify_mic`](Self::verify_mic) with the sequencing warning, if any.
    pub fn verify_mic_with_sequence(
        &self,
        buffer: &[u8],
        token: &[u8],
    ) -> Result<Option<SequenceWarning>, KerberosError> {
        self.established()?.verify_mic(buffer, token)
    }

    pub fn enctype(&self) -> Option<Enctype> {
        self.established().ok().and_then(SecContext::enctype)
    }

    pub fn mic_format(&self) -> Option<MicFormat> {
        self.enctype().map(Enctype::mic_format)
    }
}
