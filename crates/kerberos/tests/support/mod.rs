//! A throw-away MIT KDC on loopback for the integration tests and benches.
//!
//! One KDC per test binary (the krb5 library reads `KRB5_CONFIG` from the
//! process environment, so every test of a binary shares one realm setup).
//! The KDC runs under `sh`, which waits on a pipe from this process: when
//! the test process exits for any reason the pipe closes and the shell kills
//! the KDC and deletes the temporary directory.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REALM: &str = "EXAMPLE.TEST";
pub const AES_FQDN: &str = "gw.example.test";
pub const RC4_FQDN: &str = "gw-rc4.example.test";
/// In the KDB but in no keytab the tests hand to an acceptor.
pub const OTHER_FQDN: &str = "other.example.test";
/// Exported at kvno N, then re-keyed in the KDB: the keytab is stale.
pub const STALE_FQDN: &str = "stale.example.test";
pub const ALICE: &str = "alice";
pub const ALICE_PW: &str = "alice-Secret-1";
pub const BOB: &str = "bob";
pub const BOB_PW: &str = "bob-Secret-2";

/// Knobs that differ between test binaries.
#[derive(Clone, Copy, Debug)]
pub struct KdcOptions {
    /// `[libdefaults] clockskew` in seconds.
    pub clockskew: u32,
}

impl Default for KdcOptions {
    fn default() -> Self {
        KdcOptions { clockskew: 300 }
    }
}

/// Where a realm's files live; knows how to point a command at them.
pub struct RealmFiles {
    pub dir: PathBuf,
    pub krb5_conf: PathBuf,
}

impl RealmFiles {
    /// A command with this realm's configuration in its environment.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", self.dir.join("kdc.conf"))
            .env("KRB5RCACHEDIR", &self.dir)
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.dir.join("cc-unused").display()),
            )
    }

    fn kadmin(&self, query: &str) -> Result<String, String> {
        run(self
            .env(&mut Command::new(tool("kadmin.local")))
            .args(["-r", REALM, "-q", query]))
    }
}

pub struct TestKdc {
    pub files: RealmFiles,
    pub port: u16,
    /// sip/gw.example.test, AES keys (aes256, aes128).
    pub aes_keytab: PathBuf,
    /// sip/gw-rc4.example.test, rc4-hmac key only, session keys rc4.
    pub rc4_keytab: PathBuf,
    /// sip/stale.example.test at an old kvno.
    pub stale_keytab: PathBuf,
    /// sip/gw.example.test at the right kvno but with another key.
    pub wrong_key_keytab: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for TestKdc {
    fn drop(&mut self) {
        // Closing the pipe makes the shell kill the KDC and clean up.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl TestKdc {
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        self.files.env(cmd)
    }

    /// A keytab holding `sip/<fqdn>` (AES keys), created in the KDB on first use: for gateways
    /// whose FQDN is their own (e.g. the embedded default's `sagw.example.com`), not AES_FQDN.
    pub fn service_keytab(&self, fqdn: &str) -> Result<PathBuf, String> {
        let principal = format!("sip/{fqdn}");
        // Fails harmlessly when it exists already; a real failure shows in ktadd below.
        let _ = self.files.kadmin(&format!(
            "addprinc -randkey -e aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal {principal}"
        ));
        let kt = self.dir().join(format!("{fqdn}-{}.keytab", fresh_id()));
        self.files
            .kadmin(&format!("ktadd -norandkey -k {} {principal}", kt.display()))?;
        Ok(kt)
    }

    /// Start a KDC with realm EXAMPLE.TEST and the test principals.
    pub fn start(options: KdcOptions) -> Result<TestKdc, String> {
        let mut last_err = String::new();
        // A port picked by binding :0 may be taken again before the KDC
        // binds it; retry a few times.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("sagw-krb-")
                .tempdir()
                .map_err(|e| format!("tempdir: {e}"))?
                .keep();
            match Self::try_start(options, dir.clone()) {
                Ok(kdc) => return Ok(kdc),
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    fn try_start(options: KdcOptions, dir: PathBuf) -> Result<TestKdc, String> {
        let port = free_port()?;
        let d = dir.display();
        fs::write(
            dir.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n {REALM} = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n  \
                 acl_file = {d}/kadm5.acl\n  max_life = 10h\n  max_renewable_life = 0\n  \
                 supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal rc4-hmac:normal\n }}\n\
                 [logging]\n kdc = FILE:{d}/kdc.log\n"
            ),
        )
        .map_err(|e| format!("write kdc.conf: {e}"))?;
        let krb5_conf = dir.join("krb5.conf");
        fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n \
                 dns_canonicalize_hostname = false\n rdns = false\n udp_preference_limit = 1\n \
                 clockskew = {skew}\n allow_weak_crypto = true\n allow_rc4 = true\n \
                 default_keytab_name = FILE:{d}/aes.keytab\n\
                 [realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n\
                 [domain_realm]\n .example.test = {REALM}\n example.test = {REALM}\n",
                skew = options.clockskew
            ),
        )
        .map_err(|e| format!("write krb5.conf: {e}"))?;
        fs::write(dir.join("kadm5.acl"), "").map_err(|e| format!("acl: {e}"))?;

        let files = RealmFiles { dir, krb5_conf };
        let aes_keytab = files.dir.join("aes.keytab");
        let rc4_keytab = files.dir.join("rc4.keytab");
        let stale_keytab = files.dir.join("stale.keytab");
        let wrong_key_keytab = files.dir.join("wrong-key.keytab");

        run(files.env(&mut Command::new(tool("kdb5_util"))).args([
            "create",
            "-s",
            "-r",
            REALM,
            "-P",
            "master-Key-0",
        ]))?;
        for (user, pw) in [(ALICE, ALICE_PW), (BOB, BOB_PW)] {
            files.kadmin(&format!("addprinc -pw {pw} {user}"))?;
        }
        files.kadmin(&format!("addprinc -randkey -e aes256-cts-hmac-sha1-96:normal,aes128-cts-hmac-sha1-96:normal sip/{AES_FQDN}"))?;
        files.kadmin(&format!(
            "addprinc -randkey -e rc4-hmac:normal sip/{RC4_FQDN}"
        ))?;
        // Without this the KDC would still pick an AES session key (it
        // assumes every service supports AES session keys).
        files.kadmin(&format!("setstr sip/{RC4_FQDN} session_enctypes rc4-hmac"))?;
        files.kadmin(&format!("addprinc -randkey sip/{OTHER_FQDN}"))?;
        files.kadmin(&format!("addprinc -randkey sip/{STALE_FQDN}"))?;
        for (fqdn, kt) in [
            (AES_FQDN, &aes_keytab),
            (RC4_FQDN, &rc4_keytab),
            (STALE_FQDN, &stale_keytab),
        ] {
            files.kadmin(&format!("ktadd -norandkey -k {} sip/{fqdn}", kt.display()))?;
        }
        // Re-key after the export: the stale keytab keeps the old kvno.
        files.kadmin(&format!("cpw -randkey sip/{STALE_FQDN}"))?;
        // Same principal and kvno as aes.keytab, different key.
        let kvno = kvno_in_keytab(&files, &aes_keytab)?;
        let ktutil_script = format!(
            "addent -password -p sip/{AES_FQDN}@{REALM} -k {kvno} -e aes256-cts-hmac-sha1-96\nnot-the-key\n\
             addent -password -p sip/{AES_FQDN}@{REALM} -k {kvno} -e aes128-cts-hmac-sha1-96\nnot-the-key\n\
             wkt {}\nquit\n",
            wrong_key_keytab.display()
        );
        let mut ktutil = files
            .env(&mut Command::new(tool("ktutil")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ktutil: {e}"))?;
        if let Some(mut s) = ktutil.stdin.take() {
            s.write_all(ktutil_script.as_bytes())
                .map_err(|e| format!("ktutil stdin: {e}"))?;
        }
        let out = ktutil
            .wait_with_output()
            .map_err(|e| format!("ktutil: {e}"))?;
        if !out.status.success() || !wrong_key_keytab.exists() {
            return Err(format!(
                "ktutil failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }

        // sh waits on our pipe; EOF (we exited or dropped TestKdc) => kill
        // the KDC and remove the directory.
        let mut child = files
            .env(&mut Command::new("sh"))
            .arg("-c")
            .arg(r#""$0" -n -r "$1" & k=$!; read _x; kill $k 2>/dev/null; wait $k 2>/dev/null; rm -rf "$2""#)
            .arg(tool("krb5kdc"))
            .arg(REALM)
            .arg(&files.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn krb5kdc: {e}"))?;
        let stdin = child.stdin.take();
        let mut kdc = TestKdc {
            files,
            port,
            aes_keytab,
            rc4_keytab,
            stale_keytab,
            wrong_key_keytab,
            child,
            stdin,
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = kdc.child.try_wait() {
                return Err(format!(
                    "krb5kdc exited ({status}) before listening on {port}: {}",
                    fs::read_to_string(kdc.dir().join("kdc.log")).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "krb5kdc did not listen on 127.0.0.1:{port} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(kdc)
    }

    /// `kinit` into a fresh ccache; returns its name (`FILE:...`).
    pub fn kinit(&self, user: &str, password: &str, lifetime: Option<&str>) -> String {
        let n = fresh_id();
        let path = self.dir().join(format!("cc-{user}-{n}"));
        let ccache = format!("FILE:{}", path.display());
        let mut cmd = Command::new(tool("kinit"));
        self.env(&mut cmd).arg("-c").arg(&ccache);
        if let Some(l) = lifetime {
            cmd.args(["-l", l]);
        }
        let mut child = cmd
            .arg(format!("{user}@{REALM}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kinit");
        child
            .stdin
            .take()
            .expect("kinit stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("kinit");
        assert!(
            out.status.success(),
            "kinit {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ccache
    }

    /// A replay cache name private to one acceptor.
    pub fn rcache(&self) -> String {
        format!(
            "file2:{}",
            self.dir().join(format!("rc-{}", fresh_id())).display()
        )
    }

    /// Copy of a FILE ccache whose KDC time offset says the client clock is
    /// `offset_secs` ahead: MIT then stamps authenticators with that skew.
    pub fn skewed_copy(&self, ccache: &str, offset_secs: i32) -> String {
        let src = ccache.strip_prefix("FILE:").unwrap_or(ccache);
        let data = fs::read(src).expect("read ccache");
        assert_eq!(&data[0..2], &[0x05, 0x04], "expected a v4 FILE ccache");
        let hlen = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let mut tags = Vec::new();
        let mut i = 4;
        while i + 4 <= 4 + hlen {
            let tag = u16::from_be_bytes([data[i], data[i + 1]]);
            let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
            if tag != 1 {
                tags.extend_from_slice(&data[i..i + 4 + len]);
            }
            i += 4 + len;
        }
        // Tag 1 = KDC time offset: seconds, microseconds.
        tags.extend_from_slice(&1u16.to_be_bytes());
        tags.extend_from_slice(&8u16.to_be_bytes());
        tags.extend_from_slice(&offset_secs.to_be_bytes());
        tags.extend_from_slice(&0i32.to_be_bytes());
        let mut out = vec![0x05, 0x04];
        out.extend_from_slice(&u16::try_from(tags.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&tags);
        out.extend_from_slice(&data[4 + hlen..]);
        let path = self.dir().join(format!("cc-skewed-{}", fresh_id()));
        fs::write(&path, out).expect("write skewed ccache");
        format!("FILE:{}", path.display())
    }
}

fn kvno_in_keytab(files: &RealmFiles, keytab: &Path) -> Result<u32, String> {
    let out = run(files
        .env(&mut Command::new(tool("klist")))
        .arg("-k")
        .arg(keytab))?;
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .next()
        .ok_or_else(|| format!("no kvno in klist -k output: {out}"))
}

fn fresh_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

static KDC: OnceLock<Option<TestKdc>> = OnceLock::new();

/// The binary's KDC, started on first use with `options`, and the process
/// environment pointed at it. `None` (after a loud message) when no KDC can
/// run here; with CI=true that is a test failure instead.
pub fn kdc(options: KdcOptions) -> Option<&'static TestKdc> {
    KDC.get_or_init(|| match TestKdc::start(options) {
        Ok(kdc) => {
            // SAFETY (set_var): every test calls kdc() before any krb5/GSS
            // call, and other test threads block on this OnceLock, so no
            // thread reads the environment concurrently.
            unsafe {
                std::env::set_var("KRB5_CONFIG", &kdc.files.krb5_conf);
                std::env::set_var("KRB5_KDC_PROFILE", kdc.dir().join("kdc.conf"));
                std::env::set_var("KRB5RCACHEDIR", kdc.dir());
                std::env::set_var("KRB5_KTNAME", format!("FILE:{}", kdc.aes_keytab.display()));
                std::env::set_var(
                    "KRB5CCNAME",
                    format!("FILE:{}", kdc.dir().join("cc-default").display()),
                );
            }
            Some(kdc)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and the test KDC cannot start: {e}");
            }
            // Straight to the stderr handle: libtest captures eprintln! of
            // passing tests, and a skip must not be silent.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !! SKIPPING Kerberos integration tests: the MIT test KDC cannot start.\n\
                 !! {e}\n\
                 !! Install krb5-kdc krb5-user krb5-admin-server (Debian) to run them.\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    })
    .as_ref()
}
