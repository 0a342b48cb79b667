//! Values as the store holds them: binding values (format in the module doc), and the reading of
//! replies, where anything this layout never writes is [`StoreError::Corrupt`].

use redis::Value;

use super::{Binding, StoreError};

const BINDING_VERSION: u8 = 1;

/// A binding's value. `node` has passed [`valid_node_id`](crate::valid_node_id): at most 64 bytes,
/// so its length fits the one byte the format gives it.
pub(super) fn encode_binding(node: &str, expires_unix: u64, value: &[u8]) -> Vec<u8> {
    let mut enc = Vec::with_capacity(10 + node.len() + value.len());
    enc.push(BINDING_VERSION);
    enc.push(node.len() as u8);
    enc.extend_from_slice(node.as_bytes());
    enc.extend_from_slice(&expires_unix.to_be_bytes());
    enc.extend_from_slice(value);
    enc
}

fn decode_binding(aor: &str, device: Vec<u8>, v: &[u8]) -> Option<Binding> {
    let device = String::from_utf8(device).ok()?;
    let (&ver, rest) = v.split_first()?;
    if ver != BINDING_VERSION {
        return None;
    }
    let (&nlen, rest) = rest.split_first()?;
    let nlen = usize::from(nlen);
    if rest.len() < nlen + 8 {
        return None;
    }
    let (node, rest) = rest.split_at(nlen);
    let node = std::str::from_utf8(node).ok()?;
    let (exp, value) = rest.split_at(8);
    let mut e = [0u8; 8];
    e.copy_from_slice(exp);
    Some(Binding {
        aor: aor.to_owned(),
        device,
        node: node.to_owned(),
        expires_unix: u64::from_be_bytes(e),
        value: value.to_vec(),
    })
}

pub(super) fn decode_bindings(
    aor: &str,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    now: u64,
) -> Vec<Binding> {
    let mut out = Vec::with_capacity(fields.len());
    for (device, v) in fields {
        match decode_binding(aor, device, &v) {
            Some(b) if b.expires_unix > now => out.push(b),
            Some(_) => {}
            None => tracing::debug!(aor, "state store: unreadable binding skipped"),
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

pub(super) fn corrupt(what: &str, v: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: {}", value_kind(v)))
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "OK",
        Value::ServerError(_) => "error",
        _ => "other reply",
    }
}

pub(super) fn opt_bytes(v: Value, what: &str) -> Result<Option<Vec<u8>>, StoreError> {
    match v {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
        other => Err(corrupt(what, &other)),
    }
}

pub(super) fn parse_u64(b: &[u8], what: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is not a number")))
}

pub(super) fn parse_u32(b: &[u8], what: &str) -> Result<u32, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is not a 32-bit number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_encode_as_the_layout_says() {
        let mut want = vec![1, 3];
        want.extend_from_slice(b"gw1");
        want.extend_from_slice(&100u64.to_be_bytes());
        want.extend_from_slice(b"payload");
        assert_eq!(encode_binding("gw1", 100, b"payload"), want);
    }

    #[test]
    fn bindings_decode_and_refuse_garbage() {
        let mut enc = vec![1, 3];
        enc.extend_from_slice(b"gw1");
        enc.extend_from_slice(&100u64.to_be_bytes());
        enc.extend_from_slice(b"payload");
        let b = decode_binding("sip:a@x", b"dev".to_vec(), &enc).expect("decodes");
        assert_eq!(
            (b.node.as_str(), b.expires_unix, &b.value[..]),
            ("gw1", 100, &b"payload"[..])
        );
        assert!(decode_binding("a", b"d".to_vec(), &enc[..5]).is_none());
        assert!(decode_binding("a", b"d".to_vec(), &[]).is_none());
        assert!(decode_binding("a", b"d".to_vec(), &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(decode_binding("a", vec![0xff], &enc).is_none());
        assert_eq!(
            decode_bindings("a", vec![(b"d".to_vec(), enc.clone())], 100).len(),
            0
        );
        assert_eq!(
            decode_bindings("a", vec![(b"d".to_vec(), enc)], 99).len(),
            1
        );
    }
}
