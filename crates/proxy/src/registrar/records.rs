//! Local bindings as plain data ([`BindingRecord`]): exported for the snapshot saved at shutdown
//! and for the pool, imported from the snapshot at start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::binding::{contact_key, device_key};
use super::{Binding, BindingInfo, Registrar, left_until};
use crate::hook::SaEndpoint;
use crate::types::{Flow, Now, later};
use crate::uri::SipUri;

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

/// Seconds since the Unix epoch, rounded up: a binding exported in its last second is still
/// live when restored within it.
fn unix_secs_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

impl Registrar {
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
    ///
    /// [`RegistrarConfig::max_expires`]: super::RegistrarConfig::max_expires
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
}
