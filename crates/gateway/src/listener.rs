//! Listeners: each has a name, a transport and an address, several per transport allowed, and a
//! [`ListenerId`] that every flow it accepts carries, so the authentication stage knows which
//! listener a request came in on (its challenge policy may differ per listener).
//!
//! The id travels inside the [`FlowId`] the driver allocates (its top 16 bits), not as a field of
//! its own: the proxy core only compares and stores flow ids, so nothing in it changes, a flow
//! token written into a Record-Route or Path names the listener too (a UDP flow's id names the
//! socket, which is what a request to a UDP client must leave from), and the UDP hot path
//! computes it with a shift. Listener 0's ids are the ids the driver allocated before there were
//! several listeners.

use std::net::SocketAddr;

use sagw_proxy::{FlowId, Transport};

/// Bits of a [`FlowId`] below the listener id: a per-driver connection counter.
const SHIFT: u32 = 48;
const SEQ_MASK: u64 = (1 << SHIFT) - 1;

/// Names a listener: its index in [`crate::config::Settings::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u16);

impl ListenerId {
    /// Flows the gateway opened itself (to next hops): no listener accepted them.
    pub const OUTBOUND: ListenerId = ListenerId(u16::MAX);

    /// The listener a flow came in on.
    pub fn of(flow: FlowId) -> ListenerId {
        // The shift leaves 16 bits: the conversion cannot fail.
        ListenerId(u16::try_from(flow.0 >> SHIFT).unwrap_or(u16::MAX))
    }

    /// The flow id of connection `seq` of this listener (`seq` 0: a UDP listener's socket).
    pub fn flow(self, seq: u64) -> FlowId {
        FlowId((u64::from(self.0) << SHIFT) | (seq & SEQ_MASK))
    }

    /// The connection counter's part of a flow id (unique across listeners).
    pub fn seq_of(flow: FlowId) -> u64 {
        flow.0 & SEQ_MASK
    }

    /// The index into the listener table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A configured listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// `udp`, `tcp`, `tls` for the `[listen]` keys, else the `[[listen.extra]]` name.
    pub name: String,
    /// Its transport.
    pub transport: Transport,
    /// Where it binds.
    pub addr: SocketAddr,
    /// Its load balancers, when it sits behind some that speak the PROXY protocol
    /// (`[listen.proxy_protocol.<name>]`).
    pub proxy_protocol: Option<crate::proxy_protocol::Balancers>,
}

/// A listener as bound (port 0 replaced by the port the system chose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// Its name.
    pub name: String,
    /// Its transport.
    pub transport: Transport,
    /// The bound address.
    pub addr: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_rides_in_the_flow_id() {
        assert_eq!(
            ListenerId(0).flow(0),
            FlowId(0),
            "listener 0's UDP socket is flow 0, as before"
        );
        assert_eq!(ListenerId(0).flow(7), FlowId(7));
        for id in [ListenerId(0), ListenerId(3), ListenerId::OUTBOUND] {
            for seq in [0, 1, SEQ_MASK] {
                assert_eq!(ListenerId::of(id.flow(seq)), id);
                assert_eq!(id.flow(seq).0 & SEQ_MASK, seq);
            }
        }
        // A counter past 48 bits wraps within its listener instead of spilling into another.
        assert_eq!(
            ListenerId::of(ListenerId(2).flow(SEQ_MASK + 1)),
            ListenerId(2)
        );
    }
}
