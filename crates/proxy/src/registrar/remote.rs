//! Bindings held by other nodes of the pool: the client's flow ends at that node, so requests for
//! it are routed there.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use sagw_sip::parse_name_addr;

use super::{Registrar, left_until};
use crate::hook::SaEndpoint;
use crate::types::{Now, Transport, later};
use crate::uri::SipUri;

/// A binding held by another node of the pool: the client's flow ends there, so a request for
/// it goes to that node, with a Route naming the flow (see [`Registrar::install_remote_binding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBinding {
    /// The Route header value that takes a request to the client through the node holding its
    /// flow: that node's URI, with its flow token as user part and `lr`
    /// (`<sip:TOKEN@10.0.0.2:5061;transport=tls;lr>`). Pushed on top of the request as is.
    pub node_route: String,
    /// Where that node listens.
    pub peer: (Transport, SocketAddr),
    /// When the binding lapses (wall clock).
    pub expires: SystemTime,
    /// The endpoint registered there, for information: the other node signs for it.
    pub endpoint: Option<SaEndpoint>,
}

/// Why a remote binding was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteBindingError {
    /// The AOR is not a SIP URI.
    #[error("the address-of-record is not a SIP URI")]
    BadAor,
    /// `node_route` is not one `<sip:...;lr>` name-addr (or holds control characters).
    #[error("the node route is not a loose-routing SIP URI")]
    BadRoute,
    /// The binding has lapsed already.
    #[error("the remote binding has expired")]
    Expired,
    /// The peer is neither a next hop nor a trusted peer: its responses would be judged as a
    /// client's (and dropped, since it does not sign them), and it would challenge our requests.
    #[error("the pool node is not a trusted peer")]
    UntrustedPeer,
}

/// A remote binding with its deadline on the registrar's clock.
#[derive(Debug, Clone)]
pub(super) struct Remote {
    binding: RemoteBinding,
    expires_at: Instant,
    /// Key of its entry in `Registrar::remote_expiry`.
    seq: u64,
}

impl Registrar {
    /// Installs (or replaces) the binding of `device` under `aor` held by another node of the
    /// pool. Requests for the AOR fork to it as to a local binding, unless this node has a live
    /// binding of the same device, which takes precedence. It lapses at its deadline, or when
    /// [`Registrar::remove_remote_binding`] removes it; a closed flow of this node never touches it.
    ///
    /// The peer must be a next hop or a trusted peer of the proxy; [`crate::Edge`] checks that.
    pub fn install_remote_binding(
        &mut self,
        aor: &str,
        device: &str,
        binding: RemoteBinding,
        now: Now,
    ) -> Result<(), RemoteBindingError> {
        let aor = SipUri::parse(aor)
            .map(|u| u.aor())
            .ok_or(RemoteBindingError::BadAor)?;
        let route_ok = !binding.node_route.chars().any(char::is_control)
            && parse_name_addr(&binding.node_route)
                .ok()
                .and_then(|na| SipUri::parse(na.uri))
                .is_some_and(|u| u.param("lr").is_some());
        if !route_ok {
            return Err(RemoteBindingError::BadRoute);
        }
        let left = left_until(binding.expires, now).ok_or(RemoteBindingError::Expired)?;
        let expires_at = later(now.mono, left);
        self.remove_remote_binding(&aor, device);
        self.seq += 1;
        let seq = self.seq;
        self.remote_expiry
            .insert((expires_at, seq), (aor.clone(), device.to_owned()));
        self.remote.entry(aor).or_default().insert(
            device.to_owned(),
            Remote {
                binding,
                expires_at,
                seq,
            },
        );
        Ok(())
    }

    /// Removes the remote binding of `device` under `aor`; false when there was none.
    pub fn remove_remote_binding(&mut self, aor: &str, device: &str) -> bool {
        let Some(aor) = SipUri::parse(aor).map(|u| u.aor()) else {
            return false;
        };
        let Some(map) = self.remote.get_mut(&aor) else {
            return false;
        };
        let Some(r) = map.remove(device) else {
            return false;
        };
        if map.is_empty() {
            self.remote.remove(&aor);
        }
        self.remote_expiry.remove(&(r.expires_at, r.seq));
        true
    }

    /// The live remote bindings of `aor` (normalised as [`BindingInfo::aor`]) that no live local
    /// binding of the same device shadows, by device.
    ///
    /// [`BindingInfo::aor`]: super::BindingInfo::aor
    pub fn lookup_remote(&self, aor: &str, now: Instant) -> Vec<(&str, &RemoteBinding)> {
        let Some(map) = self.remote.get(aor) else {
            return Vec::new();
        };
        let local = self.aors.get(aor);
        map.iter()
            .filter(|(device, r)| {
                r.expires_at > now
                    && local
                        .and_then(|m| m.get(device.as_str()))
                        .is_none_or(|b| b.expires_at <= now)
            })
            .map(|(device, r)| (device.as_str(), &r.binding))
            .collect()
    }

    /// Number of remote bindings held (live or not yet purged).
    pub fn remote_len(&self) -> usize {
        self.remote_expiry.len()
    }
}
