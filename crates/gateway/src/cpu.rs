//! Which CPU the core thread is pinned to (`proxy.core_cpu`), coordinated between the sagw
//! instances of one host.
//!
//! `auto` used to take the last allowed CPU, so every instance on a host piled onto the same one.
//! Now each instance holds an advisory lock (flock) on `cpu-<N>.lock` in a directory shared by
//! the host's instances while its core thread runs on CPU N, and `auto` tries the allowed CPUs
//! from the last down, leaving the first to the rest of the system as before; when each of them
//! is taken it runs unpinned and says why. The kernel drops a flock when its holder dies, so a
//! crashed instance leaves no stale claim behind.
//!
//! The directory: `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=sagw`, which
//! packaging/systemd/sagw.service keeps across restarts), else `/run/sagw`, else
//! `<temp dir>/sagw` (a user without access to /run).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use core_affinity::CoreId;
use tracing::{info, warn};

use crate::config::{ConfigError, invalid};

/// `proxy.core_cpu`: the CPU the core thread is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreCpu {
    /// The last CPU the process may run on, when it may run on two or more; else unpinned.
    Auto,
    /// Unpinned: the kernel moves the thread between CPUs.
    Unpinned,
    /// This CPU (a start error when the process may not run on it).
    Cpu(usize),
}

impl CoreCpu {
    pub(crate) fn parse(v: &str) -> Result<CoreCpu, ConfigError> {
        match v.trim() {
            "auto" => Ok(CoreCpu::Auto),
            "none" => Ok(CoreCpu::Unpinned),
            n => n.parse().map(CoreCpu::Cpu).map_err(|_| {
                invalid(
                    "proxy.core_cpu",
                    format!("`{n}`: expected \"auto\", \"none\" or a CPU number"),
                )
            }),
        }
    }
}

/// `proxy.workers`: how many tokio worker threads run the connection tasks (reading, framing and
/// writing TCP and TLS, TLS handshakes, PROXY protocol headers) and the gateway's other tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One fewer than the CPUs the process may use, at least one: the core thread, the busiest,
    /// keeps a CPU to itself. tokio's own default, one worker per CPU, put three busy threads on
    /// a 2-CPU host, and the workers and the core thread took each other's CPU: with one worker
    /// there, a TLS sign-in cost a fifth less gateway CPU with half the context switches
    /// (docs/BENCHMARKS.md, issue 16).
    Auto,
    /// This many (1–1024).
    Count(usize),
}

impl Workers {
    pub(crate) fn parse(v: &str) -> Result<Workers, ConfigError> {
        match v.trim() {
            "auto" => Ok(Workers::Auto),
            n => match n.parse::<usize>() {
                Ok(k @ 1..=1024) => Ok(Workers::Count(k)),
                _ => Err(invalid(
                    "proxy.workers",
                    format!("`{n}`: expected \"auto\" or a number of threads from 1 to 1024"),
                )),
            },
        }
    }

    /// The number of worker threads, `cpus` being how many CPUs the process may use.
    pub fn threads(self, cpus: usize) -> usize {
        match self {
            Workers::Auto => cpus.saturating_sub(1).max(1),
            Workers::Count(n) => n,
        }
    }
}

/// How many CPUs this process may use (its affinity mask and cgroup quota, as the standard
/// library reads them); 1 when that cannot be told.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The variable systemd sets for `RuntimeDirectory=`.
pub const RUNTIME_DIRECTORY: &str = "RUNTIME_DIRECTORY";

/// A CPU chosen for the core thread, with the claim on it (held as long as this value lives: the
/// core thread keeps it).
#[derive(Debug)]
pub struct Pin {
    /// The CPU.
    pub cpu: CoreId,
    /// The locked `cpu-<N>.lock`; `None` when a configured CPU could not be claimed (it is
    /// pinned all the same: the operator named it).
    _claim: Option<File>,
}

/// `proxy.core_cpu` names a CPU the process may not run on.
#[derive(Debug, thiserror::Error)]
#[error("CPU {cpu} is not one this process may run on ({allowed})")]
pub struct NotAllowed {
    /// The configured CPU.
    pub cpu: usize,
    /// The CPUs the process may use, comma-separated.
    pub allowed: String,
}

/// The directory of the per-CPU lock files.
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIRECTORY)
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| p.is_absolute())
    {
        return dir;
    }
    let run = Path::new("/run/sagw");
    if std::fs::create_dir_all(run).is_ok() {
        return run.to_owned();
    }
    std::env::temp_dir().join("sagw")
}

/// The CPU for the core thread under `choice`, claimed in `dir` (see the module's doc).
pub fn choose(choice: CoreCpu, dir: &Path) -> Result<Option<Pin>, NotAllowed> {
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    match choice {
        CoreCpu::Unpinned => Ok(None),
        CoreCpu::Cpu(cpu) => {
            let Some(core) = allowed.iter().find(|c| c.id == cpu).copied() else {
                return Err(NotAllowed {
                    cpu,
                    allowed: allowed
                        .iter()
                        .map(|c| c.id.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                });
            };
            let claim = match claim(dir, cpu) {
                Ok(Claim::Held(f)) => Some(f),
                Ok(Claim::Taken) => {
                    warn!(
                        cpu,
                        "proxy.core_cpu: another sagw instance on this host is pinned to this CPU too"
                    );
                    None
                }
                Err(e) => {
                    warn!(cpu, dir = %dir.display(), error = %e, "proxy.core_cpu: cannot record the claim on this CPU for other instances");
                    None
                }
            };
            Ok(Some(Pin {
                cpu: core,
                _claim: claim,
            }))
        }
        CoreCpu::Auto => Ok(auto(&allowed, dir)),
    }
}

fn auto(allowed: &[CoreId], dir: &Path) -> Option<Pin> {
    // The first allowed CPU is left to the kernel, tokio's workers and the rest of the system.
    let candidates = allowed.get(1..).unwrap_or_default();
    if candidates.is_empty() {
        info!(
            cpus = allowed.len(),
            "proxy.core_cpu = \"auto\": the process may use one CPU: the core thread runs unpinned"
        );
        return None;
    }
    for core in candidates.iter().rev() {
        match claim(dir, core.id) {
            Ok(Claim::Held(f)) => {
                return Some(Pin {
                    cpu: *core,
                    _claim: Some(f),
                });
            }
            Ok(Claim::Taken) => {}
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "proxy.core_cpu = \"auto\": cannot take a CPU lock, so cannot tell which CPUs other sagw instances use: the core thread runs unpinned");
                return None;
            }
        }
    }
    let taken: Vec<String> = candidates.iter().map(|c| c.id.to_string()).collect();
    warn!(
        taken = %taken.join(","),
        dir = %dir.display(),
        "proxy.core_cpu = \"auto\": every CPU but the first is taken by another sagw instance on this host: the core thread runs unpinned"
    );
    None
}

enum Claim {
    Held(File),
    Taken,
}

fn claim(dir: &Path, cpu: usize) -> std::io::Result<Claim> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("cpu-{cpu}.lock"));
    // Instances of other users may have created the file: a read-only descriptor locks as well.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| File::open(&path))?;
    // rustix rather than std's File::try_lock: that needs Rust 1.89, the workspace builds on 1.88.
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Claim::Held(file)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(Claim::Taken),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_workers_leave_the_core_thread_a_cpu() {
        assert_eq!(Workers::Auto.threads(1), 1);
        assert_eq!(Workers::Auto.threads(2), 1);
        assert_eq!(Workers::Auto.threads(8), 7);
        assert_eq!(Workers::Auto.threads(0), 1);
        assert_eq!(Workers::Count(4).threads(2), 4);
    }

    fn cores(ids: &[usize]) -> Vec<CoreId> {
        ids.iter().map(|&id| CoreId { id }).collect()
    }

    #[test]
    fn auto_takes_free_cpus_from_the_last_down_and_never_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = cores(&[0, 1, 2, 3]);
        let a = auto(&allowed, dir.path()).expect("a CPU");
        let b = auto(&allowed, dir.path()).expect("a CPU");
        let c = auto(&allowed, dir.path()).expect("a CPU");
        assert_eq!([a.cpu.id, b.cpu.id, c.cpu.id], [3, 2, 1]);
        assert!(auto(&allowed, dir.path()).is_none(), "CPU 0 stays free");
        drop(b);
        let d = auto(&allowed, dir.path()).expect("the released CPU");
        assert_eq!(d.cpu.id, 2);
        assert!(dir.path().join("cpu-3.lock").exists());
    }

    #[test]
    fn auto_with_one_cpu_or_no_lock_directory_runs_unpinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(auto(&cores(&[5]), dir.path()).is_none());
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("file");
        assert!(auto(&cores(&[0, 1]), &file).is_none());
    }
}
