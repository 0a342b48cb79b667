//! A throw-away Samba Active Directory domain controller on loopback, for the AD tests (NTLM
//! verified by the domain through winbind, Kerberos from an AD keytab, identities from LDAP).
//!
//! Domain `EXAMPLE` / realm `EXAMPLE.TEST`, DC `dc1.example.test` on its own 127.x address (LDAP
//! 389/636 and epmapper cannot move to another port, so every DC gets its own address), run as root
//! with `samba -F -M single` (8 processes instead of the 46 of `prefork`).
//!
//! Provisioning takes 8–30 s, so it is done once per Samba version (and [`RECIPE`]) into a template
//! under the cargo target dir, users, schema stand-in and keytabs included; each DC is then a `cp -a`
//! of the template plus a rewrite of its `smb.conf` (the only file naming the folder and the
//! address). Everything a DC writes stays in its folder (`-s /dev/null` at provision,
//! `--debug-stdout`, pid/ncalrpc/socket dirs in the folder), except the winbind pipe of a
//! [`Winbind::SystemSocket`] DC, which must be at libwbclient's compiled-in `/run/samba/winbindd`
//! for an in-process gateway to reach it (see samba-ad-notes §5): only one such DC may run on the
//! machine, so it holds an exclusive `flock` on [`SYSTEM_SOCKET_LOCK`] for its life.
//!
//! Teardown: dropping the [`AdDc`] stops Samba and removes the folder. A DC kept in a `static`
//! (see [`shared`]) is never dropped: a small janitor shell started with each DC waits on a pipe
//! from the test process and, when the process ends for whatever reason (also SIGKILL), stops that
//! Samba and removes the folder. Leftovers of runs where even the janitor died are recognised by
//! the owner pid written in each folder and removed by the next DC started.
//!
//! When `samba` (or the other tools) is missing: with `CI=true` that is a test failure, otherwise
//! the tests say why (loudly) and skip, like the Kamailio and KDC helpers.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod template;

/// Bump when the set of users, attributes or keytabs in the template changes: a new template is
/// provisioned instead of reusing the cached one.
pub const RECIPE: u32 = 1;

pub const REALM: &str = "EXAMPLE.TEST";
pub const NETBIOS_DOMAIN: &str = "EXAMPLE";
pub const DNS_DOMAIN: &str = "example.test";
pub const BASE_DN: &str = "DC=example,DC=test";
/// The DC's host name (its certificate names it and its IP address).
pub const DC_NAME: &str = "dc1.example.test";
pub const ADMIN_USER: &str = "Administrator";
pub const ADMIN_PASSWORD: &str = "Adm1nPassw0rd!";
/// Every test user's password.
pub const PASSWORD: &str = "Passw0rd!";

/// Enabled, `msRTCSIP-PrimaryUserAddress: sip:alice.sip@example.test` (deliberately not
/// `sip:alice@…`, so a test can tell the directory's answer from the default mapping),
/// `mail: alice@example.test`, member of [`SIP_GROUP`].
pub const ALICE: &str = "alice";
pub const ALICE_SIP: &str = "sip:alice.sip@example.test";
/// Disabled (userAccountControl 514): NT_STATUS_ACCOUNT_DISABLED; kinit "credentials have been revoked".
pub const BOB: &str = "bob";
/// Must change the password at next logon (pwdLastSet 0): NT_STATUS_PASSWORD_MUST_CHANGE.
pub const CAROL: &str = "carol";
/// Account expired (accountExpires in the past): NT_STATUS_ACCOUNT_EXPIRED.
pub const DAVE: &str = "dave";
/// Only `proxyAddresses: SIP:erin@example.test` (and smtp), no msRTCSIP attribute.
pub const ERIN: &str = "erin";
pub const ERIN_SIP: &str = "sip:erin@example.test";
/// Neither attribute: only its userPrincipalName frank@example.test.
pub const FRANK: &str = "frank";
/// Password expired (pwdLastSet back-dated in sam.ldb, max password age 999 days):
/// NT_STATUS_PASSWORD_EXPIRED.
pub const GINA: &str = "gina";
/// Locked out after [`LOCKOUT_THRESHOLD`] bad passwords (a fine-grained password policy applies
/// the threshold to this account only, so wrong-password tests on other users never lock them).
/// `samba-tool user unlock` (see [`AdDc::samba_tool`]) resets it.
pub const LOCKOUT_USER: &str = "lockme";
pub const LOCKOUT_THRESHOLD: u32 = 3;
/// A domain group alice is a member of (for `--require-membership-of`-style checks).
pub const SIP_GROUP: &str = "sipusers";

/// The gateway's service account: SPN [`SERVICE_SPN`], msDS-SupportedEncryptionTypes = 24
/// (AES128+AES256), exported to [`AdDc::keytab`].
pub const SERVICE_ACCOUNT: &str = "sipgw";
pub const SERVICE_FQDN: &str = "gw.example.test";
pub const SERVICE_SPN: &str = "sip/gw.example.test";
/// A second service account whose msDS-SupportedEncryptionTypes = 4 (RC4-HMAC only): its keytab
/// ([`AdDc::keytab_rc4`]) holds only an arcfour-hmac key and the KDC issues RC4 tickets for it.
pub const SERVICE_ACCOUNT_RC4: &str = "sipgw-rc4";
pub const SERVICE_FQDN_RC4: &str = "gw-rc4.example.test";
pub const SERVICE_SPN_RC4: &str = "sip/gw-rc4.example.test";

/// Held (flock, exclusive) by the one [`Winbind::SystemSocket`] DC on the machine.
pub const SYSTEM_SOCKET_LOCK: &str = "/run/samba/sagw-test-dc.lock";
/// libwbclient's compiled-in winbindd socket directory (Debian).
pub const SYSTEM_SOCKET_DIR: &str = "/run/samba/winbindd";
const NSS_WRAPPER_LIB: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

/// How clients reach this DC's winbindd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winbind {
    /// At `/run/samba/winbindd`, where libwbclient (and so an in-process gateway) looks without
    /// any environment. One per machine: the DC takes [`SYSTEM_SOCKET_LOCK`] and waits for it.
    SystemSocket,
    /// In the DC's folder: only tools run with [`AdDc::winbind_client_env`] (nss_wrapper
    /// preloaded) find it. For DCs that serve LDAP/Kerberos only; any number can run.
    Private,
}

#[derive(Clone, Copy, Debug)]
pub struct AdDcOptions {
    pub winbind: Winbind,
}

/// A running (or, after [`AdDc::stop`], stopped) Samba AD DC.
pub struct AdDc {
    ip: Ipv4Addr,
    /// The claimed folder `<base>/<ip>`: `owner`, the janitor's lock, and `dc/` (Samba's folder).
    home: PathBuf,
    /// Samba's folder (`etc/smb.conf`, `private/`, `state/`, `run/`, `log/`, keytabs, tls/).
    dir: PathBuf,
    winbind: Winbind,
    samba: Mutex<Option<Child>>,
    /// Closing this pipe makes the janitor stop Samba and remove `home`.
    janitor: Mutex<Option<(Child, ChildStdin)>>,
}

/// Runs in `sh -c JANITOR HOME LOCKFILE` (LOCKFILE may be empty). Takes the lock (waiting, and
/// saying so), says `ready`, then waits for EOF on stdin: the test process dropped the DC or
/// ended. Then stops Samba if it still runs (the pid in HOME/dc/samba.pid, if its command line
/// names HOME) and removes HOME. Ignores SIGINT/SIGHUP so a Ctrl-C of the test run still cleans up.
const JANITOR: &str = r#"
trap '' INT HUP
home=$0; lock=$1
if [ -n "$lock" ]; then
  exec 9>"$lock"
  if ! flock -n 9; then
    echo "waiting for $lock (another test DC with its winbindd at /run/samba/winbindd is running)" >&2
    flock 9
  fi
fi
echo ready
read _x
alive() { [ -r /proc/$1/stat ] && [ "$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null)" != Z ]; }
pid=$(cat "$home/dc/samba.pid" 2>/dev/null)
if [ -n "$pid" ] && alive "$pid" && { tr '\0' ' ' </proc/$pid/cmdline; } 2>/dev/null | grep -qF "$home/"; then
  kill -TERM "$pid" 2>/dev/null
  n=0
  while alive "$pid" && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
fi
# smbd/winbindd children whose root died first (seen after a SIGKILL of the test process during
# start-up): every process whose command line names this folder.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  left=
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$home/"; then
      left="$left ${p#/proc/}"
    fi
  done
  [ -z "$left" ] && break
  if [ $attempt -lt 5 ]; then kill -TERM $left 2>/dev/null; else kill -KILL $left 2>/dev/null; fi
  sleep 0.3
done
# The pipe our winbindd left (it does not remove it), never the host's own winbind's.
if [ -n "$lock" ] && [ -e "$home/dc/owns-system-pipe" ]; then rm -f /run/samba/winbindd/pipe; fi
rm -rf "$home"
"#;

/// Why there is no DC (when not fatal).
fn skip_or_fail(why: &str) -> Option<AdDc> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and the Samba AD DC cannot run: {why}");
    }
    // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a skip
    // must not be silent.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! SKIPPING the Samba AD DC tests: {why}.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

/// The programs the harness runs (and where they are).
const PROGRAMS: &[(&str, &str)] = &[
    ("samba", "samba"),
    ("samba-tool", "samba-common-bin"),
    ("wbinfo", "winbind"),
    ("ntlm_auth", "winbind"),
    ("ldbmodify", "ldb-tools"),
    ("kinit", "krb5-user"),
    ("flock", "util-linux"),
];

fn find_program(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

/// One DC per test binary and [`Winbind`] variant, started on first use, shared by its tests, and
/// stopped and removed by its janitor when the test process ends. None: skipped (see module doc).
///
/// The first DC started this way also points the process environment at itself for the krb5
/// library (which reads it from there, e.g. in the gateway's Kerberos acceptor and the client's
/// initiator): `KRB5_CONFIG` = [`AdDc::krb5_conf`], `KRB5RCACHEDIR` = its folder (MIT would
/// otherwise write /var/tmp/krb5_0.rcache2).
pub fn shared(winbind: Winbind) -> Option<&'static AdDc> {
    static SYSTEM: OnceLock<Option<AdDc>> = OnceLock::new();
    static PRIVATE: OnceLock<Option<AdDc>> = OnceLock::new();
    static ENV: OnceLock<()> = OnceLock::new();
    let cell = match winbind {
        Winbind::SystemSocket => &SYSTEM,
        Winbind::Private => &PRIVATE,
    };
    let dc = cell
        .get_or_init(|| AdDc::start(AdDcOptions { winbind }))
        .as_ref()?;
    ENV.get_or_init(|| {
        // SAFETY (set_var): tests call shared() before any krb5/GSS call, and other test threads
        // wanting the DC block on the OnceLocks above and this one, so no thread reads the
        // environment concurrently.
        unsafe {
            std::env::set_var("KRB5_CONFIG", dc.krb5_conf());
            std::env::set_var("KRB5RCACHEDIR", dc.dir());
        }
    });
    Some(dc)
}

/// Where the DC folders live: `$TMPDIR/sagw-ad-dc/<ip>/`.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join("sagw-ad-dc")
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{shown} failed ({}): {text}", out.status))
    }
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits before reading all of it closes the pipe: its status says why.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{shown} failed ({}): {text}", out.status))
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Processes (other than this one) whose command line names `folder` (Samba's root, smbd,
/// winbindd of one DC: they all carry its smb.conf path).
fn processes_of(folder: &Path) -> Vec<u32> {
    let needle = format!("{}/", folder.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me && pid_alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// SIGTERM, then SIGKILL, to every process of `folder` until none is left (at most ~5 s).
fn kill_processes_of(folder: &Path) {
    for attempt in 0..25 {
        let left = processes_of(folder);
        if left.is_empty() {
            return;
        }
        let signal = if attempt < 10 { "-TERM" } else { "-KILL" };
        let _ = Command::new("kill")
            .arg(signal)
            .args(left.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes DC folders whose owner process is gone (a crashed run whose janitor died too), after
/// killing their Samba if it still runs.
fn clean_leftovers(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let home = e.path();
        let owner = std::fs::read_to_string(home.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        match owner {
            Some(pid) if pid_alive(pid) => continue,
            // A folder being claimed right now has no owner file yet for a moment.
            None if e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60)) =>
            {
                continue;
            }
            _ => {}
        }
        kill_processes_of(&home);
        let _ = writeln!(
            std::io::stderr(),
            "ad_support: removing the leftover DC folder {} of a crashed run",
            home.display()
        );
        let _ = std::fs::remove_dir_all(&home);
    }
}

/// Claims a free loopback address: `mkdir <base>/<ip>` (atomic, so two test processes never pick
/// the same one) where nothing listens on <ip>:389.
fn claim_ip(base: &Path) -> Result<(Ipv4Addr, PathBuf), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    // 127.90.x.y: away from the 127.0.0.x addresses people use by hand.
    let start = u64::from(pid) * 7 + NEXT.fetch_add(1, Ordering::Relaxed) * 31;
    for i in 0..2000u64 {
        let n = (start + i) % (250 * 250);
        let ip = Ipv4Addr::new(127, 90, (n / 250) as u8 + 1, (n % 250) as u8 + 2);
        let home = base.join(ip.to_string());
        if std::fs::create_dir(&home).is_err() {
            continue;
        }
        // Nothing else (a DC started by hand, another harness) may listen there.
        let free = [389u16, 88, 636]
            .iter()
            .all(|p| TcpListener::bind(SocketAddr::from((ip, *p))).is_ok());
        if !free {
            let _ = std::fs::remove_dir(&home);
            continue;
        }
        std::fs::write(home.join("owner"), format!("{pid}\n"))
            .map_err(|e| format!("write owner: {e}"))?;
        return Ok((ip, home));
    }
    Err("no free 127.90.x.y address (all claimed or busy on :389)".into())
}

/// Our own CA and a DC certificate naming [`DC_NAME`] and the IP (rustls/webpki have no CN
/// fallback, and Samba's self-made certificate has no subjectAltName), in `dir/tls/`.
fn write_tls(dir: &Path, ip: Ipv4Addr) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use std::os::unix::fs::PermissionsExt as _;
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| format!("mkdir tls: {e}"))?;
    let e = |e: rcgen::Error| format!("rcgen: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sagw test AD CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(e)?).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let mut params = CertificateParams::new(vec![DC_NAME.to_owned(), ip.to_string()]).map_err(e)?;
    params.distinguished_name.push(DnType::CommonName, DC_NAME);
    let cert = params.signed_by(&key, &ca).map_err(e)?;
    let w = |name: &str, text: String| {
        std::fs::write(tls.join(name), text).map_err(|e| format!("write tls/{name}: {e}"))
    };
    w("ca.pem", ca.pem())?;
    w("cert.pem", cert.pem())?;
    w("key.pem", key.serialize_pem())?;
    // Samba refuses a TLS key others can read.
    std::fs::set_permissions(tls.join("key.pem"), std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod key: {e}"))?;
    Ok(())
}

/// krb5.conf for this DC's KDC (MIT needs the realm block on several lines).
fn write_krb5_conf(dir: &Path, ip: Ipv4Addr) -> Result<(), String> {
    let text = format!(
        "[libdefaults]\n\tdefault_realm = {REALM}\n\tdns_lookup_realm = false\n\
         \tdns_lookup_kdc = false\n\trdns = false\n\tdns_canonicalize_hostname = false\n\
         \tudp_preference_limit = 0\n\n[realms]\n\t{REALM} = {{\n\t\tkdc = {ip}\n\t\t\
         admin_server = {ip}\n\t}}\n\n[domain_realm]\n\t.{DNS_DOMAIN} = {REALM}\n\t{DNS_DOMAIN} = {REALM}\n"
    );
    std::fs::write(dir.join("krb5.conf"), text).map_err(|e| format!("write krb5.conf: {e}"))
}

fn wait_tcp(addr: SocketAddr, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

impl AdDc {
    /// Starts a DC from the template (provisioning the template first if there is none), ready to
    /// answer LDAP, LDAPS, Kerberos and winbind. None: skipped (see module doc). Panics when an
    /// installed Samba does not come up.
    pub fn start(opts: AdDcOptions) -> Option<AdDc> {
        for (prog, pkg) in PROGRAMS {
            if find_program(prog).is_none() {
                return skip_or_fail(&format!(
                    "`{prog}` is not installed (Debian package {pkg}; scripts/setup-debian.sh installs it)"
                ));
            }
        }
        if opts.winbind == Winbind::Private && !Path::new(NSS_WRAPPER_LIB).exists() {
            return skip_or_fail(&format!(
                "{NSS_WRAPPER_LIB} is missing (Debian package libnss-wrapper)"
            ));
        }
        if run(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() != "0") {
            return skip_or_fail("a Samba DC must run as root (it binds 88, 389, 445, ...)");
        }
        match Self::try_start(opts) {
            Ok(dc) => Some(dc),
            Err(e) => panic!("the Samba AD DC did not start: {e}"),
        }
    }

    fn try_start(opts: AdDcOptions) -> Result<AdDc, String> {
        let base = base_dir();
        std::fs::create_dir_all(&base).map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        clean_leftovers(&base);
        let lock = match opts.winbind {
            Winbind::SystemSocket => {
                std::fs::create_dir_all("/run/samba")
                    .map_err(|e| format!("mkdir /run/samba: {e}"))?;
                SYSTEM_SOCKET_LOCK
            }
            Winbind::Private => "",
        };
        let template = Self::template()?;
        let (ip, home) = claim_ip(&base)?;
        let janitor = Self::spawn_janitor(&home, lock)?;
        let dir = home.join("dc");
        let dc = AdDc {
            ip,
            home,
            dir,
            winbind: opts.winbind,
            samba: Mutex::new(None),
            janitor: Mutex::new(Some(janitor)),
        };
        dc.instantiate(&template)?;
        dc.start_samba()?;
        Ok(dc)
    }

    fn spawn_janitor(home: &Path, lock: &str) -> Result<(Child, ChildStdin), String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .arg(home)
            .arg(lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("janitor: {e}"))?;
        let stdin = child.stdin.take().ok_or("janitor stdin")?;
        let stdout = child.stdout.take().ok_or("janitor stdout")?;
        if !lock.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "ad_support: taking {lock} (one DC with the system winbind socket per machine)"
            );
        }
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("janitor: {e}"))?;
        if line.trim() != "ready" {
            return Err(format!("janitor did not start: {line:?}"));
        }
        Ok((child, stdin))
    }

    /// This DC's folder from the template: `cp -a`, then `smb.conf` rewritten for the folder, the
    /// address and the winbind socket; a fresh CA and certificate; a krb5.conf.
    fn instantiate(&self, template: &Path) -> Result<(), String> {
        let started = Instant::now();
        run(Command::new("cp").arg("-a").arg(template).arg(&self.dir))?;
        let info = std::fs::read_to_string(self.dir.join("template.info"))
            .map_err(|e| format!("template.info: {e}"))?;
        let mut lines = info.lines();
        let (Some(old_dir), Some(old_ip)) = (lines.next(), lines.next()) else {
            return Err(format!("template.info unreadable: {info:?}"));
        };
        let conf_path = self.smb_conf();
        let conf = std::fs::read_to_string(&conf_path).map_err(|e| format!("smb.conf: {e}"))?;
        let mut conf = conf
            .replace(old_dir, &self.dir.display().to_string())
            .replace(&format!("{old_ip}/8"), &format!("{}/8", self.ip));
        if self.winbind == Winbind::SystemSocket {
            let private = format!(
                "winbindd socket directory = {}/run/winbindd",
                self.dir.display()
            );
            if !conf.contains(&private) {
                return Err(format!("smb.conf has no `{private}` line to rewrite"));
            }
            conf = conf.replace(
                &private,
                &format!("winbindd socket directory = {SYSTEM_SOCKET_DIR}"),
            );
        }
        std::fs::write(&conf_path, conf).map_err(|e| format!("smb.conf: {e}"))?;
        std::fs::remove_file(self.dir.join("template.info")).map_err(|e| format!("{e}"))?;
        write_tls(&self.dir, self.ip)?;
        write_krb5_conf(&self.dir, self.ip)?;
        std::fs::create_dir_all(self.dir.join("cc")).map_err(|e| format!("mkdir cc: {e}"))?;
        let _ = writeln!(
            std::io::stderr(),
            "ad_support: DC folder {} from the template in {} ms",
            self.dir.display(),
            started.elapsed().as_millis()
        );
        Ok(())
    }

    fn start_samba(&self) -> Result<(), String> {
        let mut guard = self.samba.lock().map_err(|_| "samba lock poisoned")?;
        if guard.is_some() {
            return Ok(());
        }
        if !self.dir.join("krb5.conf").exists() {
            write_krb5_conf(&self.dir, self.ip)?;
        }
        if self.winbind == Winbind::SystemSocket {
            let pipe = Path::new(SYSTEM_SOCKET_DIR).join("pipe");
            // Under the machine lock no other test DC serves it, so a pipe that answers belongs
            // to the host's own winbind (a domain member): never take that one away.
            if std::os::unix::net::UnixStream::connect(&pipe).is_ok() {
                return Err(format!(
                    "a winbindd not started by the tests answers on {} (the host's winbind \
                     service?): stop it to run the AD tests that need the system socket",
                    pipe.display()
                ));
            }
            // A pipe left by a previous DC (winbindd does not remove it): clients would find a
            // dead socket until ours replaces it.
            let _ = std::fs::remove_file(&pipe);
        }
        let log_path = self.dir.join("log/samba.out");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let started = Instant::now();
        // `-F --debug-stdout`, not `-i`: with -i the smbd/winbindd children create empty log files
        // under /var/log/samba (samba-ad-notes §3).
        let child = Command::new("samba")
            .args(["-F", "-M", "single", "--debug-stdout", "-d1", "-s"])
            .arg(self.smb_conf())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("KRB5_CONFIG", self.dir.join("krb5.conf"))
            .spawn()
            .map_err(|e| format!("samba: {e}"))?;
        std::fs::write(self.dir.join("samba.pid"), format!("{}\n", child.id()))
            .map_err(|e| format!("samba.pid: {e}"))?;
        *guard = Some(child);
        drop(guard);
        if let Err(e) = self.wait_ready(Duration::from_secs(90)) {
            self.stop();
            return Err(format!(
                "{e}; last lines of {}:\n{}",
                log_path.display(),
                self.log_tail(30)
            ));
        }
        if self.winbind == Winbind::SystemSocket {
            std::fs::write(self.dir.join("owns-system-pipe"), "")
                .map_err(|e| format!("owns-system-pipe: {e}"))?;
        }
        let _ = writeln!(
            std::io::stderr(),
            "ad_support: DC {} ready in {} ms",
            self.ip,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for port in [389u16, 636, 88] {
            if !wait_tcp(SocketAddr::from((self.ip, port)), deadline) {
                return Err(format!(
                    "{}:{port} does not accept TCP after {limit:?}",
                    self.ip
                ));
            }
            self.check_alive()?;
        }
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_alive()?;
            match run(self.wbinfo().arg("-P")) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("winbindd does not answer `wbinfo -P`: {last}"))
    }

    fn check_alive(&self) -> Result<(), String> {
        let mut guard = self.samba.lock().map_err(|_| "samba lock poisoned")?;
        if let Some(child) = guard.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            *guard = None;
            return Err(format!("samba exited: {status}"));
        }
        Ok(())
    }

    /// The last `n` lines of Samba's output (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("log/samba.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops Samba (SIGTERM, SIGKILL after 5 s), keeping its folder: the DC is down, as for an
    /// outage, until [`AdDc::start_again`].
    pub fn stop(&self) {
        let Ok(mut guard) = self.samba.lock() else {
            return;
        };
        if let Some(mut child) = guard.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let _ = std::fs::remove_file(self.dir.join("samba.pid"));
        }
        drop(guard);
        // smbd and winbindd follow their root within about a second; one that lingers would
        // keep port 445 or the winbind pipe from the next start.
        kill_processes_of(&self.dir);
    }

    /// Starts Samba again in the same folder on the same address after [`AdDc::stop`]; returns
    /// once it is ready (as [`AdDc::start`]).
    pub fn start_again(&self) -> Result<(), String> {
        self.start_samba()
    }

    /// Whether Samba runs (it was not stopped and has not died).
    pub fn is_running(&self) -> bool {
        self.check_alive().is_ok() && self.samba.lock().is_ok_and(|g| g.is_some())
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    pub fn realm(&self) -> &'static str {
        REALM
    }
    pub fn netbios_domain(&self) -> &'static str {
        NETBIOS_DOMAIN
    }
    pub fn dns_domain(&self) -> &'static str {
        DNS_DOMAIN
    }
    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }
    pub fn dc_name(&self) -> &'static str {
        DC_NAME
    }
    /// `ldaps://<ip>` (the certificate names the IP too).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.ip)
    }
    /// (user, password) of the domain administrator.
    pub fn admin(&self) -> (&'static str, &'static str) {
        (ADMIN_USER, ADMIN_PASSWORD)
    }
    /// The PEM of the CA that issued the DC's LDAPS certificate (SANs: [`DC_NAME`] and the IP).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }
    /// The keytab of [`SERVICE_SPN`] (aes256 + aes128).
    pub fn keytab(&self) -> PathBuf {
        self.dir.join("sip.keytab")
    }
    /// The keytab of [`SERVICE_SPN_RC4`] (arcfour-hmac only).
    pub fn keytab_rc4(&self) -> PathBuf {
        self.dir.join("sip-rc4.keytab")
    }
    /// A krb5.conf whose realm [`REALM`] has this DC as its KDC.
    pub fn krb5_conf(&self) -> PathBuf {
        self.dir.join("krb5.conf")
    }
    pub fn smb_conf(&self) -> PathBuf {
        self.dir.join("etc/smb.conf")
    }
    /// Samba's folder (logs in `log/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn winbind(&self) -> Winbind {
        self.winbind
    }
    /// The directory holding this DC's winbindd `pipe`.
    pub fn winbindd_socket_dir(&self) -> PathBuf {
        match self.winbind {
            Winbind::SystemSocket => PathBuf::from(SYSTEM_SOCKET_DIR),
            Winbind::Private => self.dir.join("run/winbindd"),
        }
    }

    /// Environment that makes wbinfo/ntlm_auth/libwbclient in a child process talk to this DC's
    /// winbindd: nothing for [`Winbind::SystemSocket`]; for [`Winbind::Private`] nss_wrapper
    /// preloaded (libwbclient honours SELFTEST_WINBINDD_SOCKET_DIR only when nss_wrapper is active).
    pub fn winbind_client_env(&self) -> Vec<(String, String)> {
        match self.winbind {
            Winbind::SystemSocket => Vec::new(),
            Winbind::Private => vec![
                ("LD_PRELOAD".into(), NSS_WRAPPER_LIB.into()),
                ("NSS_WRAPPER_PASSWD".into(), "/etc/passwd".into()),
                ("NSS_WRAPPER_GROUP".into(), "/etc/group".into()),
                (
                    "SELFTEST_WINBINDD_SOCKET_DIR".into(),
                    self.winbindd_socket_dir().display().to_string(),
                ),
            ],
        }
    }

    /// `wbinfo` with [`AdDc::winbind_client_env`].
    pub fn wbinfo(&self) -> Command {
        let mut c = Command::new("wbinfo");
        c.envs(self.winbind_client_env());
        c
    }

    /// `ntlm_auth` with [`AdDc::winbind_client_env`] and this DC's smb.conf.
    pub fn ntlm_auth(&self) -> Command {
        let mut c = Command::new("ntlm_auth");
        c.envs(self.winbind_client_env())
            .arg(format!("--configfile={}", self.smb_conf().display()));
        c
    }

    /// `samba-tool ARGS -s smb.conf -H ldap://ip -U Administrator%…`; its output, or why it failed.
    pub fn samba_tool(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(self.smb_conf())
            .arg("-H")
            .arg(self.ldap_url())
            .arg(format!("-U{ADMIN_USER}%{ADMIN_PASSWORD}"))
            .env("KRB5_CONFIG", self.krb5_conf()))
    }

    /// Applies an LDIF over LDAP as the administrator (SASL bind, so no TLS needed).
    pub fn ldbmodify(&self, ldif: &str) -> Result<String, String> {
        run_with_stdin(
            Command::new("ldbmodify")
                .arg("-H")
                .arg(self.ldap_url())
                .arg(format!("-U{ADMIN_USER}%{ADMIN_PASSWORD}"))
                .arg(format!("--configfile={}", self.smb_conf().display()))
                .env("KRB5_CONFIG", self.krb5_conf()),
            ldif,
        )
    }

    /// MIT `kinit user@REALM` against this DC's KDC (password on stdin) into a fresh file ccache
    /// in the DC's folder; the ccache path (use `FILE:<path>` as KRB5CCNAME), or kinit's output
    /// when it failed (e.g. "Client's credentials have been revoked" for a disabled account).
    pub fn kinit(&self, user: &str, password: &str) -> Result<PathBuf, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let cc = self
            .dir
            .join("cc")
            .join(format!("{user}-{}", N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::create_dir_all(self.dir.join("cc"));
        run_with_stdin(
            Command::new("kinit")
                .arg(format!("{user}@{REALM}"))
                .env("KRB5_CONFIG", self.krb5_conf())
                .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
                .env("KRB5RCACHETYPE", "none"),
            &format!("{password}\n"),
        )?;
        Ok(cc)
    }
}

impl Drop for AdDc {
    fn drop(&mut self) {
        self.stop();
        if let Ok(mut j) = self.janitor.lock()
            && let Some((mut child, stdin)) = j.take()
        {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
