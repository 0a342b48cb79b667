//! In-memory registrar and location service (RFC 3261 §10, with RFC 5626 instance ids and the
//! MS-SIPAE `epid`).
//!
//! A binding remembers the flow the REGISTER came over: a client behind NAT is reachable only
//! through it, and the authentication layer finds the SA for a destination through the binding's
//! AOR and epid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sagw_sip::{Message, parse_name_addr};
use serde::{Deserialize, Serialize};

use crate::hook::SaEndpoint;
use crate::types::{BindingChange, Flow, FlowId, Now, Transport, later};
use crate::uri::{SipUri, list_elements, push_decimal};
use crate::{Map, Set};

/// Registrar settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Expiry used when the request gives none.
    pub default_expires: Duration,
    /// Shorter non-zero expiries get 423 Interval Too Brief.
    pub min_expires: Duration,
    /// Longer expiries are shortened to this.
    pub max_expires: Duration,
    /// Bindings kept per address-of-record; registering one more evicts the oldest.
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            default_expires: Duration::from_secs(3600),
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(7200),
            max_bindings_per_aor: 10,
        }
    }
}

/// What the authentication stage and routing need to know about a registered endpoint.
#[derive(Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// Address-of-record, normalised (`sip:user@host`, host lower-cased).
    pub aor: String,
    /// The `epid` parameter of the REGISTER's From header ([MS-SIPAE] endpoint id).
    pub epid: Option<String>,
    /// The Contact's `+sip.instance` (RFC 5626), unquoted.
    pub instance: Option<String>,
    /// The Contact URI as the client wrote it.
    pub contact: String,
    /// The endpoint the REGISTER proved to come from, when it was authenticated with an SA:
    /// requests to this binding are signed for it.
    pub endpoint: Option<SaEndpoint>,
}

// Written out for `clone_from`: every REGISTER from another user over a shared flow (all UDP
// clients share the socket's) overwrites the flow's identity with it, and the derived one
// allocates every String again where their buffers can be reused. clone_from destructures the
// source so that a new field cannot be left out (nor can clone's struct literal leave one out).
impl Clone for BindingInfo {
    fn clone(&self) -> Self {
        BindingInfo {
            aor: self.aor.clone(),
            epid: self.epid.clone(),
            instance: self.instance.clone(),
            contact: self.contact.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let BindingInfo {
            aor,
            epid,
            instance,
            contact,
            endpoint,
        } = source;
        self.aor.clone_from(aor);
        self.epid.clone_from(epid);
        self.instance.clone_from(instance);
        self.contact.clone_from(contact);
        self.endpoint.clone_from(endpoint);
    }
}

/// One registered contact.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Identity and contact.
    pub info: BindingInfo,
    /// The flow the registration arrived on: requests for this contact go back over it.
    pub flow: Flow,
    /// When the binding lapses.
    pub expires_at: Instant,
    call_id: String,
    cseq: u32,
    /// Registration order, for "most recent binding first".
    seq: u64,
    /// [`contact_key`] of `info.contact`, kept so that a refresh or a removal need not rebuild it.
    contact_key: Option<String>,
}

impl Binding {
    /// This binding as plain data ([`BindingRecord`]), its expiry on the wall clock of `now`.
    fn record(&self, device: &str, now: Now) -> BindingRecord {
        let left = self.expires_at.saturating_duration_since(now.mono);
        let at = now.wall.checked_add(left).unwrap_or(now.wall);
        BindingRecord {
            aor: self.info.aor.clone(),
            device: device.to_owned(),
            contact: self.info.contact.clone(),
            epid: self.info.epid.clone(),
            instance: self.info.instance.clone(),
            flow: self.flow,
            expires_unix: unix_secs_ceil(at),
            endpoint: self.info.endpoint.clone(),
            call_id: self.call_id.clone(),
            cseq: self.cseq,
        }
    }
}

/// A binding as plain data, for a snapshot saved at shutdown and restored at the next start
/// ([`Registrar::export_bindings`], [`Registrar::import_bindings`]). The deadline is wall-clock
/// Unix seconds: the registrar's own deadlines are instants of a monotonic clock, which mean
/// nothing to another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Address-of-record, normalised as [`BindingInfo::aor`].
    pub aor: String,
    /// The device within the AOR, one binding each: `i:` and the `+sip.instance`, else `e:` and
    /// the `epid`, else `u:` and the Contact URI (what a REGISTER refreshing it will name).
    pub device: String,
    /// The Contact URI as the client wrote it.
    pub contact: String,
    /// The `epid` of the REGISTER's From header.
    pub epid: Option<String>,
    /// The Contact's `+sip.instance`, unquoted.
    pub instance: Option<String>,
    /// The flow the registration arrived on. After a restart only the UDP socket's flow means the
    /// same thing (if the driver numbers its sockets as before); connections are gone, so the
    /// caller drops records over TCP or TLS before importing them.
    pub flow: Flow,
    /// When the binding lapses, in seconds since the Unix epoch.
    pub expires_unix: u64,
    /// The endpoint the REGISTER proved to come from (see [`BindingInfo::endpoint`]).
    pub endpoint: Option<SaEndpoint>,
    /// Call-ID of the last REGISTER, so that an older one is still refused as out of order.
    pub call_id: String,
    /// CSeq number of the last REGISTER.
    pub cseq: u32,
}

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
struct Remote {
    binding: RemoteBinding,
    expires_at: Instant,
    /// Key of its entry in `Registrar::remote_expiry`.
    seq: u64,
}

/// The binding key of a device: its instance id, else its MS endpoint id, else its Contact URI.
fn device_key(instance: Option<&str>, epid: Option<&str>, contact: &str) -> String {
    match (instance, epid) {
        (Some(i), _) => ["i:", i].concat(),
        (None, Some(e)) => ["e:", e].concat(),
        (None, None) => ["u:", contact].concat(),
    }
}

/// Seconds since the Unix epoch, rounded up: a binding exported in its last second is still
/// live when restored within it.
fn unix_secs_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// How long from `now` until the wall-clock deadline `at`; `None` when it has passed.
fn left_until(at: SystemTime, now: Now) -> Option<Duration> {
    at.duration_since(now.wall).ok().filter(|d| !d.is_zero())
}

/// The registrar's answer to a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegisterOutcome {
    /// 200 OK with these extra headers.
    Ok {
        /// One `Contact: <uri>;expires=N` per current binding, in the 200's form so that the
        /// edge sends them without copying them into another list, with room for its
        /// `Expires`.
        headers: Vec<(&'static str, String)>,
    },
    /// An error status, reason and extra headers.
    Error(u16, &'static str, Vec<(&'static str, String)>),
}

/// The location service.
#[derive(Debug, Default)]
pub struct Registrar {
    config: RegistrarConfig,
    /// AOR -> binding key -> binding.
    aors: Map<String, Map<String, Binding>>,
    /// Expiry index: (deadline, seq) -> (aor, key).
    expiry: BTreeMap<(Instant, u64), (String, String)>,
    /// Flow -> identity registered over it (latest REGISTER wins).
    flows: Map<Flow, BindingInfo>,
    seq: u64,
    changes: Vec<(String, BindingChange)>,
    evictions: usize,
    /// Contact key (`user@host:port`) -> (aor, binding key).
    by_contact: Map<String, (String, String)>,
    /// Stream flow -> bindings registered over it, for [`Registrar::flow_closed`]. UDP bindings
    /// are not indexed: every UDP client shares the one socket's flow id, which never closes, so
    /// the set would only grow with every client and never be used.
    by_flow: Map<FlowId, Set<(String, String)>>,
    /// AOR -> device -> binding held by another node of the pool. Ordered by device so that
    /// forks go out in the same order every time.
    remote: Map<String, BTreeMap<String, Remote>>,
    /// Expiry index of `remote`: (deadline, seq) -> (aor, device).
    remote_expiry: BTreeMap<(Instant, u64), (String, String)>,
    /// The AOR of the REGISTER being applied, in a buffer kept from one to the next: a refresh
    /// only looks it up (its binding change takes a copy).
    aor_buf: String,
}

/// `user@host:port` with the host lower-cased: how a Request-URI is matched to a Contact.
fn contact_key(uri: &str) -> Option<String> {
    let u = SipUri::parse(uri)?;
    let user = u.user.unwrap_or("");
    let mut key = String::with_capacity(user.len() + u.host.len() + 7);
    key.push_str(user);
    key.push('@');
    key.push_str(u.host);
    // Only the host part is lower-cased (the user part is case-sensitive).
    if let Some(host) = key.get_mut(user.len() + 1..) {
        host.make_ascii_lowercase();
    }
    key.push(':');
    if let Some(p) = u.port {
        push_decimal(&mut key, u64::from(p));
    }
    Some(key)
}

/// A validated Contact of a REGISTER, borrowed from the request.
struct Update<'r> {
    key: String,
    contact: &'r str,
    instance: Option<String>,
    secs: u64,
}

/// What one REGISTER says of every binding it adds or refreshes: who sent it, over which flow,
/// and its place in the client's sequence (Call-ID, CSeq).
struct Registration<'r> {
    epid: Option<&'r str>,
    endpoint: Option<&'r SaEndpoint>,
    flow: Flow,
    call_id: &'r str,
    cseq: u32,
}

impl Registrar {
    /// An empty registrar.
    pub fn new(config: RegistrarConfig) -> Registrar {
        Registrar {
            config,
            ..Registrar::default()
        }
    }

    /// New settings (a configuration reload): bindings keep the expiry they were granted; the
    /// new limits apply from the next REGISTER.
    pub fn set_config(&mut self, config: RegistrarConfig) {
        self.config = config;
    }

    /// Number of live bindings.
    pub fn len(&self) -> usize {
        // One expiry entry per binding: O(1), where summing the AORs grew with every registration
        // (the driver asks after each batch of events).
        debug_assert_eq!(
            self.expiry.len(),
            self.aors.values().map(Map::len).sum::<usize>()
        );
        self.expiry.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.aors.is_empty()
    }

    /// Binding changes since the last call (for reports). Drained rather than taken: the list
    /// keeps its buffer for the next REGISTER.
    pub(crate) fn drain_changes(&mut self) -> std::vec::Drain<'_, (String, BindingChange)> {
        self.changes.drain(..)
    }

    /// Live bindings of `aor`, most recent first.
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        let mut v: Vec<&Binding> = self
            .aors
            .get(aor)
            .map(|m| m.values().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.seq));
        v
    }

    /// The live binding whose Contact URI is `uri` (in-dialog requests target a contact).
    /// Matches user, host (case-insensitive) and port; URI parameters are ignored.
    pub fn lookup_contact(&self, uri: &str, now: Instant) -> Option<&Binding> {
        let (aor, key) = self.by_contact.get(&contact_key(uri)?)?;
        self.aors.get(aor)?.get(key).filter(|b| b.expires_at > now)
    }

    fn index(&mut self, aor: &str, key: &str, b: &Binding) {
        if let Some(ck) = &b.contact_key {
            point_contact(&mut self.by_contact, ck, aor, key);
        }
        if b.flow.transport.is_reliable() {
            self.by_flow
                .entry(b.flow.id)
                .or_default()
                .insert((aor.to_owned(), key.to_owned()));
        }
        set_identity(&mut self.flows, b.flow, &b.info);
    }

    fn unindex(&mut self, aor: &str, key: &str, b: &Binding) {
        if let Some(ck) = &b.contact_key {
            unpoint_contact(&mut self.by_contact, ck, aor, key);
        }
        if b.flow.transport.is_reliable() {
            unindex_flow(&mut self.by_flow, b.flow.id, aor, key);
        }
        if self.flows.get(&b.flow).is_some_and(|i| *i == b.info) {
            self.flows.remove(&b.flow);
        }
    }

    /// Refresh the binding `aor`/`key` in place with a new REGISTER: what removing it and
    /// inserting the new one did, without rebuilding its index entries or moving its keys.
    /// False when there is no such binding.
    fn refresh(
        &mut self,
        aor: &str,
        update: &Update<'_>,
        reg: &Registration<'_>,
        expires_at: Instant,
        seq: u64,
    ) -> bool {
        let Registration {
            epid,
            endpoint,
            flow,
            call_id,
            cseq,
        } = *reg;
        let key = update.key.as_str();
        let Some(b) = self.aors.get_mut(aor).and_then(|m| m.get_mut(key)) else {
            return false;
        };
        // The expiry entry moves to the new deadline with the same (aor, key) strings.
        let slot = self
            .expiry
            .remove(&(b.expires_at, b.seq))
            .unwrap_or_else(|| (aor.to_owned(), key.to_owned()));
        self.expiry.insert((expires_at, seq), slot);
        // The identity registered over the old flow goes if it was this binding's (as a removal
        // would do); over the new flow it is set below.
        if b.flow != flow && self.flows.get(&b.flow).is_some_and(|i| *i == b.info) {
            self.flows.remove(&b.flow);
        }
        if b.flow.transport.is_reliable() && (b.flow.id != flow.id || !flow.transport.is_reliable())
        {
            unindex_flow(&mut self.by_flow, b.flow.id, aor, key);
        }
        if flow.transport.is_reliable() && (b.flow.id != flow.id || !b.flow.transport.is_reliable())
        {
            self.by_flow
                .entry(flow.id)
                .or_default()
                .insert((aor.to_owned(), key.to_owned()));
        }
        if b.info.contact != update.contact {
            if let Some(ck) = &b.contact_key {
                unpoint_contact(&mut self.by_contact, ck, aor, key);
            }
            b.info.contact = update.contact.to_owned();
            b.contact_key = contact_key(update.contact);
        }
        // Re-pointed even when unchanged: another binding with the same contact may have taken
        // it since, and the latest registration wins.
        if let Some(ck) = &b.contact_key {
            point_contact(&mut self.by_contact, ck, aor, key);
        }
        if b.info.epid.as_deref() != epid {
            b.info.epid = epid.map(str::to_owned);
        }
        if b.info.instance != update.instance {
            b.info.instance.clone_from(&update.instance);
        }
        if b.info.endpoint.as_ref() != endpoint {
            b.info.endpoint = endpoint.cloned();
        }
        if b.call_id != call_id {
            b.call_id.clear();
            b.call_id.push_str(call_id);
        }
        b.flow = flow;
        b.expires_at = expires_at;
        b.cseq = cseq;
        b.seq = seq;
        set_identity(&mut self.flows, flow, &b.info);
        true
    }

    /// The identity registered over `flow`, if any.
    pub fn flow_identity(&self, flow: &Flow) -> Option<&BindingInfo> {
        self.flows.get(flow)
    }

    /// Earliest binding expiry (local or remote).
    pub fn next_expiry(&self) -> Option<Instant> {
        let local = self.expiry.keys().next().map(|(t, _)| *t);
        let remote = self.remote_expiry.keys().next().map(|(t, _)| *t);
        match (local, remote) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Remove every binding that has lapsed by `now`, local or remote.
    pub fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (aor, key) = entry.remove();
            self.remove_if_lapsed(&aor, &key, now);
        }
        while let Some(entry) = self.remote_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (aor, device) = entry.remove();
            if let Some(map) = self.remote.get_mut(&aor) {
                map.remove(&device);
                if map.is_empty() {
                    self.remote.remove(&aor);
                }
            }
        }
    }

    /// Every live binding as a [`BindingRecord`], oldest registration first (the order
    /// [`Registrar::import_bindings`] restores "most recent first" from). Remote bindings are not
    /// included: they are the other nodes' to publish.
    pub fn export_bindings(&self, now: Now) -> Vec<BindingRecord> {
        let mut live: Vec<(&str, &Binding)> = self
            .aors
            .values()
            .flat_map(|m| m.iter())
            .filter(|(_, b)| b.expires_at > now.mono)
            .map(|(k, b)| (k.as_str(), b))
            .collect();
        live.sort_by_key(|(_, b)| b.seq);
        live.into_iter()
            .map(|(device, b)| b.record(device, now))
            .collect()
    }

    /// The live local bindings of one `aor` (normalised as [`BindingInfo::aor`]), as
    /// [`Registrar::export_bindings`] writes them: what a pool publishes when they change.
    pub fn export_aor(&self, aor: &str, now: Now) -> Vec<BindingRecord> {
        let Some(devices) = self.aors.get(aor) else {
            return Vec::new();
        };
        devices
            .iter()
            .filter(|(_, b)| b.expires_at > now.mono)
            .map(|(device, b)| b.record(device, now))
            .collect()
    }

    /// Restores bindings from [`Registrar::export_bindings`] (of this process before a restart),
    /// in the order given (the last is the most recent). Skipped: records that have lapsed by
    /// `now`, records whose AOR, Contact or device key is not what a REGISTER would have made, and
    /// devices that have a binding already (it came from a REGISTER since, so it is newer).
    /// Lifetimes are cut to [`RegistrarConfig::max_expires`] and the per-AOR limit applies. No
    /// binding change is reported. Returns how many bindings were restored.
    pub fn import_bindings(&mut self, records: Vec<BindingRecord>, now: Now) -> usize {
        let (changes, evictions) = (self.changes.len(), self.evictions);
        let mut restored = 0;
        for r in records {
            let Some(left) = UNIX_EPOCH
                .checked_add(Duration::from_secs(r.expires_unix))
                .and_then(|at| left_until(at, now))
            else {
                continue;
            };
            let Some(aor) = SipUri::parse(&r.aor).map(|u| u.aor()) else {
                continue;
            };
            if aor != r.aor
                || SipUri::parse(&r.contact).is_none()
                || r.device != device_key(r.instance.as_deref(), r.epid.as_deref(), &r.contact)
                || self
                    .aors
                    .get(&aor)
                    .is_some_and(|m| m.contains_key(&r.device))
            {
                continue;
            }
            self.seq += 1;
            let seq = self.seq;
            let expires_at = later(now.mono, left.min(self.config.max_expires));
            let contact_key = contact_key(&r.contact);
            let binding = Binding {
                info: BindingInfo {
                    aor: r.aor,
                    epid: r.epid,
                    instance: r.instance,
                    contact: r.contact,
                    endpoint: r.endpoint,
                },
                flow: r.flow,
                expires_at,
                call_id: r.call_id,
                cseq: r.cseq,
                seq,
                contact_key,
            };
            self.expiry
                .insert((expires_at, seq), (aor.clone(), r.device.clone()));
            self.index(&aor, &r.device, &binding);
            self.aors
                .entry(aor.clone())
                .or_default()
                .insert(r.device, binding);
            self.evict_over_limit(&aor);
            restored += 1;
        }
        // What the per-AOR limit evicted here is not news either.
        self.changes.truncate(changes);
        self.evictions = evictions;
        restored
    }

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

    fn remove_if_lapsed(&mut self, aor: &str, key: &str, now: Instant) {
        let lapsed = self
            .aors
            .get(aor)
            .and_then(|m| m.get(key))
            .is_some_and(|b| b.expires_at <= now);
        if lapsed {
            self.remove(aor, key);
        }
    }

    fn remove(&mut self, aor: &str, key: &str) -> Option<Binding> {
        let map = self.aors.get_mut(aor)?;
        let b = map.remove(key)?;
        if map.is_empty() {
            self.aors.remove(aor);
        }
        self.expiry.remove(&(b.expires_at, b.seq));
        self.unindex(aor, key, &b);
        self.changes.push((aor.to_owned(), BindingChange::Removed));
        Some(b)
    }

    /// Drop the bindings that use a closed flow (RFC 5626 §5.3: the flow is the only way to the
    /// client) and its identity.
    pub fn flow_closed(&mut self, flow: FlowId) {
        let dead: Vec<(String, String)> = self
            .by_flow
            .get(&flow)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for (aor, key) in dead {
            let reliable = self
                .aors
                .get(&aor)
                .and_then(|m| m.get(&key))
                .is_some_and(|b| b.flow.transport.is_reliable());
            // The UDP socket is shared by every UDP client: it never "closes" for one of them.
            if reliable {
                self.remove(&aor, &key);
            }
        }
        self.flows
            .retain(|f, _| f.id != flow || !f.transport.is_reliable());
    }

    /// Apply a REGISTER received over `flow` at `now`, from `endpoint` when the authentication
    /// stage proved one.
    pub(crate) fn register(
        &mut self,
        req: &Message,
        flow: Flow,
        endpoint: Option<&SaEndpoint>,
        now: Instant,
    ) -> RegisterOutcome {
        let mut aor_buf = std::mem::take(&mut self.aor_buf);
        let outcome = self.register_with(req, flow, endpoint, now, &mut aor_buf);
        self.aor_buf = aor_buf;
        outcome
    }

    fn register_with(
        &mut self,
        req: &Message,
        flow: Flow,
        endpoint: Option<&SaEndpoint>,
        now: Instant,
        aor_buf: &mut String,
    ) -> RegisterOutcome {
        self.expire(now);
        let bad = |why: &'static str| RegisterOutcome::Error(400, why, Vec::new());
        let Some(to) = req.to() else {
            return bad("Bad To");
        };
        let Some(aor_uri) = SipUri::parse(to.uri) else {
            return RegisterOutcome::Error(416, "Unsupported URI Scheme", Vec::new());
        };
        aor_uri.write_aor(aor_buf);
        let aor = aor_buf.as_str();
        let epid = req
            .from()
            .and_then(|f| f.param("epid"))
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        let Some(call_id) = req.call_id() else {
            return bad("Missing Call-ID");
        };
        let Some(cseq) = req.cseq().and_then(|c| c.value()) else {
            return bad("Bad CSeq");
        };
        let header_expires = req.expires().and_then(|e| e.trim().parse::<u64>().ok());
        let contacts: Vec<&str> = req.header_all("Contact").flat_map(list_elements).collect();

        if contacts.contains(&"*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return bad("Invalid wildcard");
            }
            let keys: Vec<String> = self
                .aors
                .get(aor)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for key in keys {
                self.remove(aor, &key);
            }
            return RegisterOutcome::Ok {
                headers: Vec::new(),
            };
        }

        // Validate everything before changing anything: a REGISTER is applied whole or not at all.
        let mut updates = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Ok(na) = parse_name_addr(c) else {
                return bad("Bad Contact");
            };
            if SipUri::parse(na.uri).is_none() {
                return RegisterOutcome::Error(416, "Unsupported URI Scheme", Vec::new());
            }
            let secs = match na.param("expires") {
                Some(e) => match e.trim().parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => return bad("Bad expires"),
                },
                None => header_expires.unwrap_or(self.config.default_expires.as_secs()),
            };
            if secs != 0 && secs < self.config.min_expires.as_secs() {
                return RegisterOutcome::Error(
                    423,
                    "Interval Too Brief",
                    vec![("Min-Expires", self.config.min_expires.as_secs().to_string())],
                );
            }
            let secs = secs.min(self.config.max_expires.as_secs());
            let instance = na
                .param("+sip.instance")
                .map(|i| i.trim_matches(|c| c == '<' || c == '>').to_owned());
            // One binding per device: the instance id, else the MS endpoint id, else the URI.
            let key = device_key(instance.as_deref(), epid.as_deref(), na.uri);
            if let Some(old) = self.aors.get(aor).and_then(|m| m.get(&key))
                && old.call_id == call_id
                && old.cseq >= cseq
            {
                return RegisterOutcome::Error(500, "Out Of Order", Vec::new());
            }
            updates.push(Update {
                key,
                contact: na.uri,
                instance,
                secs,
            });
        }

        let reg = Registration {
            epid: epid.as_deref(),
            endpoint,
            flow,
            call_id,
            cseq,
        };
        for update in updates {
            if update.secs == 0 {
                self.remove(aor, &update.key);
                continue;
            }
            self.seq += 1;
            let seq = self.seq;
            let expires_at = crate::types::later(now, Duration::from_secs(update.secs));
            let existed = self.refresh(aor, &update, &reg, expires_at, seq);
            if !existed {
                let Update {
                    key,
                    contact,
                    instance,
                    ..
                } = update;
                let binding = Binding {
                    info: BindingInfo {
                        aor: aor.to_owned(),
                        epid: reg.epid.map(str::to_owned),
                        instance,
                        contact: contact.to_owned(),
                        endpoint: reg.endpoint.cloned(),
                    },
                    flow,
                    expires_at,
                    call_id: call_id.to_owned(),
                    cseq,
                    seq,
                    contact_key: contact_key(contact),
                };
                self.expiry
                    .insert((expires_at, seq), (aor.to_owned(), key.clone()));
                self.index(aor, &key, &binding);
                let map = self.aors.entry(aor.to_owned()).or_default();
                map.insert(key, binding);
            }
            self.changes.push((
                aor.to_owned(),
                if existed {
                    BindingChange::Refreshed
                } else {
                    BindingChange::Added
                },
            ));
            self.evict_over_limit(aor);
        }

        let bindings = self.lookup(aor, now);
        let mut headers = Vec::with_capacity(bindings.len() + 1);
        headers.extend(bindings.into_iter().map(|b| {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            let mut c = String::with_capacity(b.info.contact.len() + 40);
            c.push('<');
            c.push_str(&b.info.contact);
            c.push_str(">;expires=");
            push_decimal(&mut c, left);
            if let Some(i) = &b.info.instance {
                c.push_str(";+sip.instance=\"<");
                c.push_str(i);
                c.push_str(">\"");
            }
            ("Contact", c)
        }));
        RegisterOutcome::Ok { headers }
    }

    fn evict_over_limit(&mut self, aor: &str) {
        loop {
            let Some(map) = self.aors.get(aor) else {
                return;
            };
            if map.len() <= self.config.max_bindings_per_aor.max(1) {
                return;
            }
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, b)| b.seq)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.remove(aor, &oldest);
            self.evictions += 1;
        }
    }

    /// Bindings evicted for the per-AOR limit since the last call.
    pub(crate) fn take_evictions(&mut self) -> usize {
        std::mem::take(&mut self.evictions)
    }
}

/// Point contact key `ck` at `aor`/`key` (the latest registration of a contact wins).
fn point_contact(by_contact: &mut Map<String, (String, String)>, ck: &str, aor: &str, key: &str) {
    match by_contact.get_mut(ck) {
        Some((a, k)) if a == aor && k == key => {}
        Some(slot) => *slot = (aor.to_owned(), key.to_owned()),
        None => {
            by_contact.insert(ck.to_owned(), (aor.to_owned(), key.to_owned()));
        }
    }
}

/// Drop contact key `ck` if it still points at `aor`/`key`.
fn unpoint_contact(by_contact: &mut Map<String, (String, String)>, ck: &str, aor: &str, key: &str) {
    if by_contact
        .get(ck)
        .is_some_and(|(a, k)| a == aor && k == key)
    {
        by_contact.remove(ck);
    }
}

fn unindex_flow(
    by_flow: &mut Map<FlowId, Set<(String, String)>>,
    id: FlowId,
    aor: &str,
    key: &str,
) {
    if let Some(set) = by_flow.get_mut(&id) {
        set.remove(&(aor.to_owned(), key.to_owned()));
        if set.is_empty() {
            by_flow.remove(&id);
        }
    }
}

/// Record `info` as the identity registered over `flow` (copied only when it changed).
fn set_identity(flows: &mut Map<Flow, BindingInfo>, flow: Flow, info: &BindingInfo) {
    match flows.get_mut(&flow) {
        Some(i) if i == info => {}
        Some(i) => i.clone_from(info),
        None => {
            flows.insert(flow, info.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Transport;

    fn flow(id: u64) -> Flow {
        Flow {
            id: FlowId(id),
            transport: Transport::Tcp,
            remote: "192.0.2.1:40000".parse().unwrap(),
        }
    }

    fn register(contact: &str, expires: Option<&str>, cseq: u32, epid: &str) -> Message {
        let mut s = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK{cseq}\r\n\
From: <sip:alice@Example.com>;tag=1;epid={epid}\r\nTo: <sip:alice@Example.com>\r\n\
Call-ID: reg1\r\nCSeq: {cseq} REGISTER\r\n"
        );
        if !contact.is_empty() {
            s.push_str(&format!("Contact: {contact}\r\n"));
        }
        if let Some(e) = expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        Message::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn bind_refresh_expire() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        let out = r.register(
            &register(
                "<sip:alice@10.0.0.1:5060;transport=tcp>",
                Some("600"),
                1,
                "e1",
            ),
            flow(1),
            None,
            t0,
        );
        assert_eq!(
            out,
            RegisterOutcome::Ok {
                headers: vec![(
                    "Contact",
                    "<sip:alice@10.0.0.1:5060;transport=tcp>;expires=600".into()
                )]
            }
        );
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].info.epid.as_deref(), Some("e1"));
        assert_eq!(b[0].flow, flow(1));
        assert_eq!(
            r.flow_identity(&flow(1)).unwrap().aor,
            "sip:alice@example.com"
        );
        assert!(r.lookup_contact("sip:alice@10.0.0.1:5060", t0).is_some());
        assert!(r.lookup_contact("sip:alice@10.0.0.2:5060", t0).is_none());
        // Same epid again: the binding is replaced, not duplicated.
        r.register(
            &register("<sip:alice@10.0.0.9>", Some("600"), 2, "e1"),
            flow(2),
            None,
            t0,
        );
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].flow, flow(2));
        // Replays and reordering are refused.
        assert!(matches!(
            r.register(
                &register("<sip:alice@10.0.0.9>", Some("600"), 2, "e1"),
                flow(2),
                None,
                t0
            ),
            RegisterOutcome::Error(500, ..)
        ));
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(600)));
        r.expire(t0 + Duration::from_secs(599));
        assert_eq!(r.len(), 1);
        r.expire(t0 + Duration::from_secs(600));
        assert_eq!(r.len(), 0);
        assert!(r.lookup("sip:alice@example.com", t0).is_empty());
    }

    #[test]
    fn interval_wildcard_and_flow_close() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            r.register(
                &register("<sip:a@h>", Some("10"), 1, "e1"),
                flow(1),
                None,
                t0
            ),
            RegisterOutcome::Error(
                423,
                "Interval Too Brief",
                vec![("Min-Expires", "60".into())]
            )
        );
        assert!(r.is_empty());
        r.register(
            &register("<sip:a@h>;expires=99999", None, 2, "e1"),
            flow(1),
            None,
            t0,
        );
        assert_eq!(
            r.lookup("sip:alice@example.com", t0)[0].expires_at,
            t0 + Duration::from_secs(7200)
        );
        r.register(&register("<sip:a@h2>", None, 3, "e2"), flow(2), None, t0);
        assert_eq!(r.len(), 2);
        // Query: no Contact, no change.
        let RegisterOutcome::Ok { headers } =
            r.register(&register("", None, 4, "e1"), flow(1), None, t0)
        else {
            panic!()
        };
        assert_eq!(headers.len(), 2);
        r.flow_closed(FlowId(2));
        assert_eq!(r.len(), 1);
        assert!(matches!(
            r.register(&register("*", None, 5, "e1"), flow(1), None, t0),
            RegisterOutcome::Error(400, ..)
        ));
        r.register(&register("*", Some("0"), 6, "e1"), flow(1), None, t0);
        assert!(r.is_empty());
    }

    #[test]
    fn refresh_in_place_keeps_every_index() {
        let mut r = Registrar::new(RegistrarConfig::default());
        let t0 = Instant::now();
        let udp = Flow {
            id: FlowId(0),
            transport: Transport::Udp,
            remote: "192.0.2.1:5060".parse().unwrap(),
        };
        r.register(
            &register("<sip:alice@10.0.0.1:5060>", Some("600"), 1, "e1"),
            flow(1),
            None,
            t0,
        );
        assert_eq!(r.by_flow.len(), 1);
        // Same device, new contact, over UDP: the old contact, flow and flow index are gone.
        let t1 = t0 + Duration::from_secs(10);
        r.register(
            &register("<sip:alice@10.0.0.2:5070>", Some("900"), 2, "e1"),
            udp,
            None,
            t1,
        );
        assert_eq!(r.len(), 1);
        assert!(r.lookup_contact("sip:alice@10.0.0.1:5060", t1).is_none());
        assert_eq!(
            r.lookup_contact("sip:alice@10.0.0.2:5070", t1)
                .unwrap()
                .flow,
            udp
        );
        assert!(r.flow_identity(&flow(1)).is_none());
        assert_eq!(r.flow_identity(&udp).unwrap().aor, "sip:alice@example.com");
        assert!(r.by_flow.is_empty(), "UDP bindings are not indexed by flow");
        assert_eq!(r.next_expiry(), Some(t1 + Duration::from_secs(900)));
        r.flow_closed(FlowId(1));
        r.flow_closed(FlowId(0));
        assert_eq!(r.len(), 1);
        // Back to a stream flow: indexed again, and closing it removes the binding.
        r.register(
            &register("<sip:alice@10.0.0.2:5070>", Some("900"), 3, "e1"),
            flow(3),
            None,
            t1,
        );
        assert_eq!(r.by_flow.len(), 1);
        assert_eq!(r.expiry.len(), 1);
        r.flow_closed(FlowId(3));
        assert!(r.is_empty());
        assert!(r.by_contact.is_empty() && r.flows.is_empty() && r.expiry.is_empty());
    }

    #[test]
    fn binding_info_clone_from_is_clone() {
        let info =
            |aor: &str, epid: Option<&str>, instance: Option<&str>, endpoint: bool| BindingInfo {
                aor: aor.to_owned(),
                epid: epid.map(str::to_owned),
                instance: instance.map(str::to_owned),
                contact: format!("<{aor};transport=udp>"),
                endpoint: endpoint.then(|| SaEndpoint {
                    identity: aor.to_owned(),
                    epid: "e1".to_owned(),
                }),
            };
        let all = [
            info("sip:u00001@example.com", None, None, false),
            info("sip:a@b", Some("e1"), Some("urn:uuid:1"), true),
            info("sip:a.much.longer.user@example.com", Some(""), None, true),
            info("sip:b@c", None, Some("urn:uuid:2"), false),
        ];
        for from in &all {
            for to in &all {
                let mut copy = to.clone();
                copy.clone_from(from);
                assert_eq!(&copy, from);
                assert_eq!(&from.clone(), from);
            }
        }
        // What it is for: another user's identity of the same length takes no new buffer.
        let mut flow = info("sip:u00001@example.com", None, None, false);
        let buffers = (flow.aor.as_ptr(), flow.contact.as_ptr());
        flow.clone_from(&info("sip:u00002@example.com", None, None, false));
        assert_eq!((flow.aor.as_ptr(), flow.contact.as_ptr()), buffers);
        assert_eq!(flow.aor, "sip:u00002@example.com");
    }

    #[test]
    fn per_aor_limit_evicts_the_oldest() {
        let mut r = Registrar::new(RegistrarConfig {
            max_bindings_per_aor: 2,
            ..RegistrarConfig::default()
        });
        let t0 = Instant::now();
        for (i, e) in ["e1", "e2", "e3"].iter().enumerate() {
            r.register(
                &register(&format!("<sip:a@h{i}>"), None, i as u32 + 1, e),
                flow(i as u64),
                None,
                t0,
            );
        }
        let b = r.lookup("sip:alice@example.com", t0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].info.epid.as_deref(), Some("e3"));
        assert_eq!(b[1].info.epid.as_deref(), Some("e2"));
    }
}
