//! Permission checks of the files that hold the gateway's secrets: the admin token and the
//! directory's bind password (no permission for group or others), TLS private keys (none for
//! others: a group such as Debian's `ssl-cert` may read them).

/// Group and other users may have no permission at all.
pub(crate) const GROUP_OR_OTHER: u32 = 0o077;
/// Other users may have no permission (the group may read).
pub(crate) const OTHER: u32 = 0o007;

/// The permission bits (`& 0o777`) of a file with metadata `meta` when some of `mask` are set in
/// them; `None` when none are, and off Unix, where files have no such bits.
pub(crate) fn exposed(meta: &std::fs::Metadata, mask: u32) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        (mode & mask != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = (meta, mask);
        None
    }
}
