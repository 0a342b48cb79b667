//! The key names of the layout in the module doc (the store's keys; the pool key is
//! `crate::keys`).

pub(super) const KEY_POOL_ID: &str = "sagw:pool-key-id";
pub(super) const KEY_REGS: &str = "sagw:regs";

pub(super) fn sa_key(opaque: u32) -> String {
    format!("sagw:sa:{{{opaque:08X}}}")
}

/// An identity's set of SAs. ASCII case folded: the security core takes `sip:Alice@…` and
/// `sip:alice@…` for one identity, and so must a revocation by either spelling.
pub(super) fn user_key(identity: &str) -> String {
    format!("sagw:user:{{{}}}", identity.to_ascii_lowercase())
}

pub(super) fn reg_key(aor: &str) -> String {
    format!("sagw:reg:{{{aor}}}")
}

pub(super) fn node_key(node: &str) -> String {
    format!("sagw:node:{{{node}}}")
}

pub(super) fn krb_key(key: &[u8; 32]) -> String {
    format!("sagw:krb:{{{}}}", sagw_hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_hash_tags() {
        assert_eq!(sa_key(0x357E_6F72), "sagw:sa:{357E6F72}");
        assert_eq!(
            user_key("alice@example.com"),
            "sagw:user:{alice@example.com}"
        );
        assert_eq!(reg_key("sip:bob@x"), "sagw:reg:{sip:bob@x}");
        assert_eq!(krb_key(&[0xAB; 32]).len(), "sagw:krb:{}".len() + 64);
    }
}
