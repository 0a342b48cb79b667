//! What gateways tell each other through the store's pub/sub channel [`EVENTS_CHANNEL`].
//!
//! One message per event, ASCII text, fields separated by one space, a format version first:
//!
//! | event | message |
//! |---|---|
//! | an SA was revoked (or ended by `revoke_identity`) | `1 revoke <OPAQUE>` |
//! | an SA was claimed by `node`, now at generation `generation` | `1 moved <OPAQUE> <generation> <node>` |
//! | a binding of `aor` was added, refreshed or removed | `1 binding <aor>` |
//!
//! `OPAQUE` is 8 upper-case hex digits (as in the `opaque` parameter), `generation` is decimal, a node
//! id has no spaces ([`crate::valid_node_id`]), and the AOR is the rest of the message (it may
//! hold spaces). A message of another version or kind, or malformed, is ignored (logged at debug
//! level), so a newer gateway may add kinds without breaking older ones.

use std::fmt::Write as _;

/// The pub/sub channel of every event.
pub const EVENTS_CHANNEL: &str = "sagw:events";

const VERSION: &str = "1";

/// One event from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The SA was revoked: whoever holds it drops it.
    Revoked(u32),
    /// The SA was claimed by `node` at generation `generation`: a previous owner drops its copy.
    Moved {
        opaque: u32,
        node: String,
        generation: u32,
    },
    /// `node` changed a binding of `aor`: the others re-read it with `Store::bindings_of` (the
    /// node itself knows).
    Binding { aor: String, node: String },
    /// The subscription is live: sent when it is first established, then every time it is back
    /// after a gap. Events may have been missed and the store may have restarted, so the caller
    /// re-checks what it holds and re-publishes what the store may have lost.
    Resubscribed,
    /// Local only: this receiver fell behind and events were dropped (the subscription itself
    /// held): binding events may be lost, revocations and moves too.
    Lagged,
}

impl StoreEvent {
    /// The message published for this event; `None` for [`StoreEvent::Resubscribed`], which is
    /// local only.
    pub fn encode(&self) -> Option<String> {
        let mut s = String::with_capacity(32);
        s.push_str(VERSION);
        match self {
            StoreEvent::Revoked(o) => {
                let _ = write!(s, " revoke {o:08X}");
            }
            StoreEvent::Moved {
                opaque,
                node,
                generation,
            } => {
                let _ = write!(s, " moved {opaque:08X} {generation} {node}");
            }
            StoreEvent::Binding { aor, node } => {
                let _ = write!(s, " binding {node} {aor}");
            }
            StoreEvent::Resubscribed | StoreEvent::Lagged => return None,
        }
        Some(s)
    }

    /// Reads a published message; `None` if it is not one this version knows.
    pub fn decode(msg: &[u8]) -> Option<StoreEvent> {
        let text = std::str::from_utf8(msg).ok()?;
        let rest = text.strip_prefix(VERSION)?.strip_prefix(' ')?;
        let (kind, rest) = rest.split_once(' ')?;
        match kind {
            "revoke" => Some(StoreEvent::Revoked(parse_opaque(rest)?)),
            "moved" => {
                let mut it = rest.splitn(3, ' ');
                let opaque = parse_opaque(it.next()?)?;
                let generation = it.next()?.parse().ok()?;
                let node = it.next()?;
                if !crate::valid_node_id(node) {
                    return None;
                }
                Some(StoreEvent::Moved {
                    opaque,
                    node: node.to_owned(),
                    generation,
                })
            }
            "binding" => {
                let (node, aor) = rest.split_once(' ')?;
                if !crate::valid_node_id(node) || aor.is_empty() {
                    return None;
                }
                Some(StoreEvent::Binding {
                    aor: aor.to_owned(),
                    node: node.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// `OPAQUE` as 8 hex digits (either case).
pub(crate) fn parse_opaque(s: &str) -> Option<u32> {
    let mut be = [0u8; 4];
    sagw_hex::decode_to_slice(s, &mut be).ok()?;
    Some(u32::from_be_bytes(be))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_it_does_not_know() {
        for e in [
            StoreEvent::Revoked(0x0000_00AB),
            StoreEvent::Moved {
                opaque: 0x357E_6F72,
                node: "gw-2:5061".into(),
                generation: 7,
            },
            StoreEvent::Binding {
                aor: "sip:alice smith@example.com".into(),
                node: "gw-2:5061".into(),
            },
        ] {
            let m = e.encode().expect("published");
            assert_eq!(StoreEvent::decode(m.as_bytes()), Some(e));
        }
        assert_eq!(
            StoreEvent::Revoked(0xAB).encode().as_deref(),
            Some("1 revoke 000000AB")
        );
        assert_eq!(StoreEvent::Resubscribed.encode(), None);
        assert_eq!(
            StoreEvent::decode(b"1 revoke 357e6f72"),
            Some(StoreEvent::Revoked(0x357E_6F72))
        );
        for bad in [
            &b"2 revoke 000000AB"[..],
            b"1 revoke 00AB",
            b"1 revoke 0000000G",
            b"1 revoke +00000AB",
            b"1 revoke 000000AB0",
            b"1 moved 000000AB x node",
            b"1 moved 000000AB 1 bad node",
            b"1 moved 000000AB 1",
            b"1 binding ",
            b"1 rename 000000AB",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(StoreEvent::decode(bad), None, "{bad:?}");
        }
    }
}
