//! `[auth.domain]`: NTLM verified by the Windows domain through winbind (crate `sagw-winbind`).
//!
//! ```toml
//! [auth.domain]
//! ntlm = "winbind"               # absent (or the section absent): the credentials file only
//! workers = 4                    # threads making winbind calls
//! queue = 256                    # sign-ins waiting for a worker; one more: 503 + Retry-After
//! queue_per_source = 64          # of those, one source's at most (default: a quarter of queue)
//! library = "libwbclient.so.0"   # soname or path of libwbclient
//! retry_after_secs = 5           # Retry-After of the 503 while the domain cannot answer
//! ```
//!
//! Every key is fixed at start: a reload that changes one is refused with the key named (the
//! worker threads and the loaded library live as long as the process).

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[auth.domain]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DomainSection {
    /// "winbind", or absent: no domain NTLM.
    pub ntlm: Option<String>,
    /// Threads making winbind calls.
    pub workers: usize,
    /// Sign-ins waiting for a worker at most; one more gets 503.
    pub queue: usize,
    /// Of those, how many one source (an IPv4 address, an IPv6 /56) may have; absent: a quarter.
    pub queue_per_source: Option<usize>,
    /// libwbclient's soname or path.
    pub library: String,
    /// Retry-After of the 503 while the domain cannot answer.
    pub retry_after_secs: u64,
}

impl Default for DomainSection {
    fn default() -> Self {
        DomainSection {
            ntlm: None,
            workers: 4,
            queue: 256,
            queue_per_source: None,
            library: sagw_winbind::DEFAULT_LIBRARY.to_owned(),
            retry_after_secs: 5,
        }
    }
}

/// Validated `[auth.domain]`, when domain NTLM is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainNtlmConfig {
    /// Worker threads for winbind calls.
    pub workers: usize,
    /// Sign-ins waiting for a worker at most.
    pub queue: usize,
    /// Sign-ins one source may have queued or running.
    pub queue_per_source: usize,
    /// libwbclient's soname or path.
    pub library: String,
    /// Retry-After of the 503s of this path.
    pub retry_after: Duration,
}

impl Default for DomainNtlmConfig {
    /// The defaults of `[auth.domain]` (for a verifier plugged in by a test seam).
    fn default() -> Self {
        let d = DomainSection::default();
        DomainNtlmConfig {
            workers: d.workers,
            queue: d.queue,
            queue_per_source: crate::auth_jobs::default_share(d.queue),
            library: d.library,
            retry_after: Duration::from_secs(d.retry_after_secs),
        }
    }
}

fn invalid(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: why.into(),
    }
}

impl DomainSection {
    /// `ntlm_offered`: whether some policy offers NTLM (domain NTLM without it is a mistake).
    pub fn validate(&self, ntlm_offered: bool) -> Result<Option<DomainNtlmConfig>, ConfigError> {
        match self.ntlm.as_deref().map(str::trim) {
            None => return Ok(None),
            Some("winbind") => {}
            Some(other) => {
                return Err(invalid(
                    "auth.domain.ntlm",
                    format!("`{other}`: the only verifier is \"winbind\" (or leave the key out)"),
                ));
            }
        }
        if !ntlm_offered {
            return Err(invalid(
                "auth.domain.ntlm",
                "no policy offers NTLM (add \"ntlm\" to auth.schemes)",
            ));
        }
        if !(1..=64).contains(&self.workers) {
            return Err(invalid("auth.domain.workers", "must be between 1 and 64"));
        }
        if !(1..=65_536).contains(&self.queue) {
            return Err(invalid("auth.domain.queue", "must be between 1 and 65536"));
        }
        let queue_per_source = match self.queue_per_source {
            None => crate::auth_jobs::default_share(self.queue),
            Some(n) if (1..=self.queue).contains(&n) => n,
            Some(_) => {
                return Err(invalid(
                    "auth.domain.queue_per_source",
                    "must be between 1 and auth.domain.queue",
                ));
            }
        };
        let library = self.library.trim();
        if library.is_empty() || library.contains(['\0', '\r', '\n']) {
            return Err(invalid(
                "auth.domain.library",
                "must name libwbclient (a soname such as libwbclient.so.0, or a path)",
            ));
        }
        if !(1..=3600).contains(&self.retry_after_secs) {
            return Err(invalid(
                "auth.domain.retry_after_secs",
                "must be between 1 and 3600",
            ));
        }
        Ok(Some(DomainNtlmConfig {
            workers: self.workers,
            queue: self.queue,
            queue_per_source,
            library: library.to_owned(),
            retry_after: Duration::from_secs(self.retry_after_secs),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> DomainSection {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn absent_means_off_and_winbind_takes_the_defaults() {
        assert_eq!(DomainSection::default().validate(true).unwrap(), None);
        let c = section("ntlm = \"winbind\"")
            .validate(true)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            DomainNtlmConfig {
                workers: 4,
                queue: 256,
                queue_per_source: 64,
                library: "libwbclient.so.0".into(),
                retry_after: Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn wrong_values_name_their_key() {
        for (text, key) in [
            ("ntlm = \"helper\"", "auth.domain.ntlm"),
            ("ntlm = \"winbind\"\nworkers = 0", "auth.domain.workers"),
            ("ntlm = \"winbind\"\nqueue = 0", "auth.domain.queue"),
            (
                "ntlm = \"winbind\"\nqueue = 8\nqueue_per_source = 9",
                "auth.domain.queue_per_source",
            ),
            (
                "ntlm = \"winbind\"\nqueue_per_source = 0",
                "auth.domain.queue_per_source",
            ),
            ("ntlm = \"winbind\"\nlibrary = \" \"", "auth.domain.library"),
            (
                "ntlm = \"winbind\"\nretry_after_secs = 0",
                "auth.domain.retry_after_secs",
            ),
        ] {
            let e = section(text).validate(true).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = section("ntlm = \"winbind\"").validate(false).unwrap_err();
        assert!(e.to_string().contains("auth.domain.ntlm"), "{e}");
        assert!(toml::from_str::<DomainSection>("nltm = \"winbind\"").is_err());
    }
}
