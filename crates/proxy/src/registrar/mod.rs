//! In-memory registrar and location service (RFC 3261 §10, with RFC 5626 instance ids and the
//! MS-SIPAE `epid`).
//!
//! A binding remembers the flow the REGISTER came over: a client behind NAT is reachable only
//! through it, and the authentication layer finds the SA for a destination through the binding's
//! AOR and epid.
//!
//! Here: the [`Registrar`] with its settings, the lookup by AOR and the expiry of every binding.
//! Each submodule adds the `impl Registrar` of one concept:
//!
//! * `binding`: the binding types and the keys a binding is filed under (device, contact);
//! * `register`: REGISTER handling: validation, new bindings, refreshes in place, removal, the
//!   per-AOR limit;
//! * `index`: the indexes beside the bindings by AOR (by contact, by stream flow, the identity
//!   registered over a flow) and what a closed flow removes;
//! * `records`: local bindings as plain data ([`BindingRecord`]), exported for a snapshot or the
//!   pool and imported at start;
//! * `remote`: bindings held by other nodes of the pool ([`RemoteBinding`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::types::{BindingChange, FlowId, Now};
use crate::{Map, Set};

mod binding;
mod index;
mod records;
mod register;
mod remote;

pub use binding::{Binding, BindingInfo};
pub use records::BindingRecord;
use remote::Remote;
pub use remote::{RemoteBinding, RemoteBindingError};

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
    /// Flow -> identity registered over it (latest REGISTER wins); stream flows by id.
    flows: index::FlowIdentities,
    seq: u64,
    changes: Vec<(String, BindingChange)>,
    evictions: usize,
    /// Contact key (`user@host:port`) -> the (aor, binding key) that registered it, the latest
    /// last. Two AORs may register one contact (the same private address behind two NATs).
    by_contact: Map<String, Vec<(String, String)>>,
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

    /// Bindings evicted for the per-AOR limit since the last call.
    pub(crate) fn take_evictions(&mut self) -> usize {
        std::mem::take(&mut self.evictions)
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
}

/// How long from `now` until the wall-clock deadline `at`; `None` when it has passed.
fn left_until(at: SystemTime, now: Now) -> Option<Duration> {
    at.duration_since(now.wall).ok().filter(|d| !d.is_zero())
}
