//! Kerberos with a password: the GSS initiator of `sagw-kerberos` reads a credential cache and has
//! no `gss_acquire_cred_with_password`, so the client runs MIT `kinit` into a private cache file
//! (mode 0600 in a 0700 directory of its own) and hands that cache to the initiator. The password
//! goes to kinit on its standard input, never on a command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::endpoint::Password;

/// A directory of private credential caches, removed on drop.
#[derive(Debug)]
pub struct CcacheDir {
    dir: PathBuf,
}

/// Why kinit failed.
#[derive(Debug, thiserror::Error)]
pub enum KinitError {
    #[error("cannot create a private ccache directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot run kinit ({0}); install the MIT Kerberos client (krb5-user)")]
    Spawn(std::io::Error),
    #[error("kinit {principal} failed: {stderr}")]
    Failed { principal: String, stderr: String },
}

fn kinit_path() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("kinit");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("kinit")
}

impl CcacheDir {
    pub fn new() -> Result<Self, KinitError> {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        loop {
            let dir = base.join(format!("sagw-client-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                            .map_err(KinitError::Dir)?;
                    }
                    return Ok(CcacheDir { dir });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(KinitError::Dir(e)),
            }
        }
    }

    /// Runs `kinit principal` with `password`; returns the `FILE:` ccache name.
    pub fn kinit(&self, principal: &str, password: &Password) -> Result<String, KinitError> {
        let safe: String = principal
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let ccache = format!("FILE:{}", self.dir.join(format!("cc-{safe}")).display());
        let mut child = Command::new(kinit_path())
            .arg("-c")
            .arg(&ccache)
            .arg(principal)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(KinitError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as kinit's own failure below.
            let _ = stdin.write_all(password.expose().as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        let out = child.wait_with_output().map_err(KinitError::Spawn)?;
        if !out.status.success() {
            return Err(KinitError::Failed {
                principal: principal.to_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(ccache)
    }
}

impl Drop for CcacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
