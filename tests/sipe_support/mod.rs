//! pidgin-sipe, the open-source Lync client (Debian `pidgin-sipe`), run in finch (libpurple's
//! terminal UI, Debian `finch`) inside a detached tmux session of its own: a real Lync-style client
//! for the interoperability tests. What it does is read from its debug log (`finch -d`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The finch binary, with the sipe plugin beside it; `None` (with a loud message) outside CI when
/// either is missing. Under `CI=true` a missing one fails the test.
pub fn finch() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/finch");
    let plugin = ["/usr/lib/purple-2/libsipe.so"]
        .iter()
        .map(PathBuf::from)
        .chain(
            std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .flatten()
                .map(|d| d.path().join("purple-2/libsipe.so")),
        )
        .any(|p| p.is_file());
    let tmux = Command::new("tmux").arg("-V").output().is_ok();
    if bin.is_file() && plugin && tmux {
        return Some(bin);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true and finch ({}), the sipe plugin ({plugin}) or tmux ({tmux}) is missing: \
             scripts/setup-debian.sh installs finch, pidgin-sipe and tmux",
            bin.is_file()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPING the pidgin-sipe interoperability test: finch, pidgin-sipe or tmux\n\
         !! is missing (scripts/setup-debian.sh installs them).\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

/// A signed-in (or signing-in) pidgin-sipe account in finch.
pub struct Finch {
    /// The tmux server of this client alone (`tmux -L`), killed on drop.
    socket: String,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl Finch {
    /// Starts finch with one SIPE account: `user@example.com` (login `user`) to `server` over TLS
    /// with NTLM. `cert` (the gateway's PEM certificate) is put where libpurple keeps the peer
    /// certificates a user accepted, for the address it connects to, so no prompt is shown.
    pub fn start(bin: &Path, user: &str, password: &str, server: SocketAddr, cert: &Path) -> Finch {
        let home = tempfile::tempdir().expect("finch home");
        let purple = home.path().join(".purple");
        let peers = purple.join("certificates/x509/tls_peers");
        std::fs::create_dir_all(&peers).expect("purple dirs");
        std::fs::copy(cert, peers.join(server.ip().to_string())).expect("peer certificate");
        let accounts = format!(
            "<?xml version='1.0' encoding='UTF-8' ?>\n<account version='1.0'>\n <account>\n\
             <protocol>prpl-sipe</protocol>\n<name>{user}@example.com,{user}</name>\n\
             <password>{password}</password>\n<settings>\n\
             <setting name='server' type='string'>{server}</setting>\n\
             <setting name='transport' type='string'>tls</setting>\n\
             <setting name='authentication' type='string'>ntlm</setting>\n</settings>\n\
             <settings ui='gnt-purple'>\n<setting name='auto-login' type='bool'>1</setting>\n\
             </settings>\n </account>\n</account>\n"
        );
        std::fs::write(purple.join("accounts.xml"), accounts).expect("accounts.xml");
        let log = home.path().join("finch-debug.log");
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("sagw-sipe-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "200", "-y", "50"])
            .arg(format!(
                "HOME='{}' TERM=xterm exec '{}' -d 2>'{}'",
                home.path().display(),
                bin.display(),
                log.display()
            ))
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux did not start finch: {status}");
        Finch {
            socket,
            log,
            _home: home,
        }
    }

    /// finch's debug log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// sipe showed `text` from `from` (it hands a MESSAGE on only once its signature validated:
    /// one without is ignored), at least two signatures validated (the 200 to its REGISTER and
    /// the MESSAGE) and none refused. The log, for further checks.
    pub async fn showed_signed_message(&self, from: &str, text: &str) -> String {
        self.wait_log(
            &[&format!("got message from {from}: {text}")],
            Duration::from_secs(5),
        )
        .await;
        let log = self.log();
        let validated = log
            .matches("signature of incoming message validated")
            .count();
        assert!(
            validated >= 2,
            "the 200 to REGISTER and the MESSAGE both validated ({validated})"
        );
        assert!(
            !log.contains("signature of incoming message is invalid"),
            "no signature refused:\n{log}"
        );
        log
    }

    /// Waits until the log holds every one of `wanted`; panics with the log's sipe lines if it
    /// does not within `limit`.
    pub async fn wait_log(&self, wanted: &[&str], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let log = self.log();
            if wanted.iter().all(|w| log.contains(w)) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let sipe: Vec<&str> = log.lines().filter(|l| l.contains("sipe:")).collect();
                panic!(
                    "finch's log lacks {:?} after {limit:?}; its sipe lines:\n{}",
                    wanted
                        .iter()
                        .filter(|w| !log.contains(**w))
                        .collect::<Vec<_>>(),
                    sipe.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Finch {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
