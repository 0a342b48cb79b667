//! Issue 15: SIP identities of domain accounts from the directory — `sagw_gateway::directory`'s
//! `LdapDirectory` against a real Samba AD DC (tests/ad_support) over LDAPS and StartTLS with the
//! harness's CA: the attribute order (msRTCSIP-PrimaryUserAddress stand-in, proxyAddresses,
//! userPrincipalName), disabled and unknown accounts, a filter-injection attempt, the domain and
//! realm checks, a DC outage (unavailable, never cached, then recovered; cached answers still
//! served), a wrong CA and a wrong password (unavailable, and `check-config` says so), a DC that
//! accepts and never answers (the timeout), and the figures (first, uncached, cached lookups).

mod ad_support;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ad_support::{AdDc, Winbind};
use sagw_auth::{AccountDirectory as _, DirectoryAnswer, DomainAccount};
use sagw_gateway::directory::LdapDirectory;
use sagw_gateway::directory_config::DirectorySection;

/// One test at a time: the outage test stops the shared DC.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn dc() -> Option<&'static AdDc> {
    ad_support::shared(Winbind::Private)
}

/// A private folder with the bind password file (mode 0600).
fn secret(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("ldap.secret");
    std::fs::write(&p, format!("{password}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn section(dc: &AdDc, dir: &Path) -> DirectorySection {
    DirectorySection {
        url: dc.ldaps_url(),
        ca_file: dc.ca_pem().display().to_string(),
        bind: "simple".into(),
        bind_dn: format!("{}@{}", ad_support::ADMIN_USER, ad_support::DNS_DOMAIN),
        bind_password_file: secret(dir, ad_support::ADMIN_PASSWORD)
            .display()
            .to_string(),
        base_dn: ad_support::BASE_DN.into(),
        timeout_secs: 3,
        ..DirectorySection::default()
    }
}

fn directory(s: &DirectorySection) -> LdapDirectory {
    LdapDirectory::new(s.validate().expect("valid [auth.directory]")).expect("directory")
}

fn ntlm(user: &str) -> DomainAccount<'_> {
    DomainAccount::Ntlm {
        user,
        domain: ad_support::NETBIOS_DOMAIN,
    }
}

/// The directory's answer for the NTLM account `user` of the test domain.
fn ask(d: &LdapDirectory, user: &str) -> Result<DirectoryAnswer, sagw_auth::DirectoryUnavailable> {
    d.lookup(ntlm(user))
}

fn id(s: &str) -> DirectoryAnswer {
    DirectoryAnswer::Identity(s.to_owned())
}

#[test]
fn the_directory_maps_domain_accounts_to_sip_identities() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = section(dc, tmp.path());
    s.use_upn = true;
    let d = directory(&s);

    // First lookup: connect, TLS, bind, the NetBIOS name from the crossRef, the search.
    let t = Instant::now();
    assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    let first = t.elapsed();

    assert_eq!(ask(&d, ad_support::ERIN), Ok(id(ad_support::ERIN_SIP)));
    assert_eq!(
        ask(&d, ad_support::FRANK),
        Ok(id("sip:frank@example.test")),
        "use_upn: frank's UPN"
    );
    assert_eq!(ask(&d, ad_support::BOB), Ok(DirectoryAnswer::Disabled));
    assert_eq!(ask(&d, "nosuchuser"), Ok(DirectoryAnswer::NotFound));
    // A name built to widen the filter matches nothing: the search returns no entry at all
    // (unescaped, each would match every user, or alice).
    for evil in [
        "*)(uid=*",
        "*",
        "alice)(|(sAMAccountName=*",
        "al*",
        "*)(objectClass=*",
    ] {
        let before = d.stats();
        assert_eq!(ask(&d, evil), Ok(DirectoryAnswer::NotFound), "{evil:?}");
        let after = d.stats();
        assert_eq!(after.searches, before.searches + 1, "{evil:?}");
        assert_eq!(after.entries, before.entries, "{evil:?} matched entries");
    }
    // A control character is no account name: not even searched.
    let before = d.stats();
    assert_eq!(ask(&d, "alice\0"), Ok(DirectoryAnswer::NotFound));
    assert_eq!(d.stats().searches, before.searches);
    // The domain as NetBIOS name (any case) or DNS name; another domain's alice is not ours.
    for domain in ["example", "EXAMPLE.TEST", "example.test"] {
        assert_eq!(
            d.lookup(DomainAccount::Ntlm {
                user: "ALICE",
                domain
            }),
            Ok(id(ad_support::ALICE_SIP)),
            "{domain}"
        );
    }
    for domain in ["OTHER", "", "EXAMPLE.COM"] {
        assert_eq!(
            d.lookup(DomainAccount::Ntlm {
                user: "alice",
                domain
            }),
            Ok(DirectoryAnswer::NotFound),
            "{domain:?}"
        );
    }
    // Kerberos principals of the realm, by account name; other realms and instances are not.
    let krb = |principal| d.lookup(DomainAccount::Kerberos { principal });
    assert_eq!(krb("alice@EXAMPLE.TEST"), Ok(id(ad_support::ALICE_SIP)));
    assert_eq!(krb("erin@EXAMPLE.TEST"), Ok(id(ad_support::ERIN_SIP)));
    assert_eq!(krb("bob@EXAMPLE.TEST"), Ok(DirectoryAnswer::Disabled));
    assert_eq!(krb("alice@OTHER.TEST"), Ok(DirectoryAnswer::NotFound));
    assert_eq!(krb("sipgw/x@EXAMPLE.TEST"), Ok(DirectoryAnswer::NotFound));
    assert_eq!(krb("*@EXAMPLE.TEST"), Ok(DirectoryAnswer::NotFound));
    // An enterprise principal is its UPN.
    assert_eq!(
        krb("frank@example.test@EXAMPLE.TEST"),
        Ok(id("sip:frank@example.test"))
    );
    // As MIT's gss_display_name writes it, the first `@` escaped.
    assert_eq!(
        krb("frank\\@example.test@EXAMPLE.TEST"),
        Ok(id("sip:frank@example.test"))
    );
    assert_eq!(krb("frank\\/x@EXAMPLE.TEST"), Ok(DirectoryAnswer::NotFound));
    let st = d.stats();
    assert_eq!(
        st.connects, 1,
        "one kept connection for sequential lookups: {st:?}"
    );
    assert_eq!(st.unavailable, 0, "{st:?}");

    // Uncached lookups on the kept connection, then cached ones.
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        d.clear_cache();
        assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    }
    let uncached = t.elapsed() / n;
    let before = d.stats();
    let m = 10_000;
    let t = Instant::now();
    for _ in 0..m {
        assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    }
    let cached = t.elapsed() / m;
    let after = d.stats();
    assert_eq!(
        after.searches, before.searches,
        "cached lookups sent a search"
    );
    assert_eq!(after.cache_hits - before.cache_hits, u64::from(m));
    assert_eq!(after.connects, 1, "{after:?}");
    eprintln!(
        "ad_directory figures: first lookup {first:?} (connect+TLS+bind+NetBIOS name+search), \
         uncached on the kept connection {uncached:?}, cached {cached:?}"
    );

    // Dropped inside an async context (as the gateway drops its security core at shutdown):
    // the kept connection's own runtime must not be dropped there.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(async move { drop(d) });

    // Without use_upn, frank has no SIP address at all.
    let d = directory(&DirectorySection {
        use_upn: false,
        ..section(dc, tmp.path())
    });
    assert_eq!(
        ask(&d, ad_support::FRANK),
        Ok(DirectoryAnswer::NoSipAddress)
    );
    assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));

    // A configured attribute, consulted after msRTCSIP and proxyAddresses: frank's UPN as a
    // plain attribute (use_upn off) gives him an address; alice keeps her msRTCSIP value, erin
    // her proxyAddresses one.
    let d = directory(&DirectorySection {
        attribute: "userPrincipalName".into(),
        use_upn: false,
        ..section(dc, tmp.path())
    });
    for (user, sip) in [
        (ad_support::FRANK, "sip:frank@example.test"),
        (ad_support::ALICE, ad_support::ALICE_SIP),
        (ad_support::ERIN, ad_support::ERIN_SIP),
    ] {
        assert_eq!(ask(&d, user), Ok(id(sip)), "{user}");
    }
}

#[test]
fn starttls_and_a_configured_netbios_name_work_too() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = directory(&DirectorySection {
        url: dc.ldap_url(),
        starttls: true,
        netbios_domain: "EXAMPLE".into(),
        ..section(dc, tmp.path())
    });
    assert_eq!(ask(&d, ad_support::ERIN), Ok(id(ad_support::ERIN_SIP)));
    // A configured name that is not the DC's: NTLM accounts of EXAMPLE are not ours.
    let d = directory(&DirectorySection {
        netbios_domain: "ELSEWHERE".into(),
        ..section(dc, tmp.path())
    });
    assert_eq!(ask(&d, ad_support::ALICE), Ok(DirectoryAnswer::NotFound));
    assert_eq!(d.stats().searches, 0);
}

/// `sagw check-config`'s directory check (`check::directory`) for a config text.
fn check_config(text: &str) -> Result<Vec<String>, sagw_gateway::check::CheckError> {
    let settings = sagw_gateway::Config::parse(text)
        .expect("parse")
        .validate()
        .expect("valid");
    sagw_gateway::check::directory(settings.auth.as_ref().expect("auth on"))
}

fn config_text(s: &DirectorySection) -> String {
    format!(
        "[auth.directory]\nurl = \"{}\"\nstarttls = {}\nca_file = \"{}\"\nbind = \"{}\"\n\
         bind_dn = \"{}\"\nbind_password_file = \"{}\"\nbase_dn = \"{}\"\ntimeout_secs = {}\n",
        s.url,
        s.starttls,
        s.ca_file,
        s.bind,
        s.bind_dn,
        s.bind_password_file,
        s.base_dn,
        s.timeout_secs
    )
}

#[test]
fn a_wrong_ca_or_password_is_unavailable_and_check_config_says_why() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = section(dc, tmp.path());
    let lines = check_config(&config_text(&good)).expect("check-config passes");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("answers") && l.contains("domain EXAMPLE")),
        "{lines:?}"
    );

    // Another CA (a valid certificate, just not the DC's issuer).
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).expect("rcgen");
    let other_ca = tmp.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).expect("write");
    let wrong_ca = DirectorySection {
        ca_file: other_ca.display().to_string(),
        ..good.clone()
    };
    let d = directory(&wrong_ca);
    let e = d
        .lookup(ntlm(ad_support::ALICE))
        .expect_err("a DC we cannot verify");
    assert!(e.0.contains("connect"), "{e}");
    assert_eq!(d.stats().unavailable, 1);
    let e = check_config(&config_text(&wrong_ca)).expect_err("check-config refuses");
    assert_eq!(e.key, "auth.directory.url");
    assert!(e.why.contains("does not answer"), "{e}");

    // The wrong password: the bind fails, never shown.
    let pw_dir = tempfile::tempdir().expect("tempdir");
    let wrong_pw = DirectorySection {
        bind_password_file: secret(pw_dir.path(), "Wr0ng-Passw0rd!")
            .display()
            .to_string(),
        ..good.clone()
    };
    let e = directory(&wrong_pw)
        .lookup(ntlm(ad_support::ALICE))
        .expect_err("bind refused");
    assert!(e.0.contains("bind as"), "{e}");
    assert!(!e.0.contains("Wr0ng"), "{e}");
    let e = check_config(&config_text(&wrong_pw)).expect_err("check-config refuses");
    assert!(e.why.contains("bind as") && !e.why.contains("Wr0ng"), "{e}");

    // A password file others can read: check-config names the key.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        &good.bind_password_file,
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let e = check_config(&config_text(&good)).expect_err("readable secret");
    assert_eq!(e.key, "auth.directory.bind_password_file");
}

#[test]
fn a_dc_outage_is_unavailable_never_cached_and_cached_answers_are_still_served() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = directory(&section(dc, tmp.path()));
    assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    assert_eq!(ask(&d, ad_support::BOB), Ok(DirectoryAnswer::Disabled));

    dc.stop();
    let before = d.stats();
    // Within the TTL the cached answers are served without the DC.
    assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    assert_eq!(ask(&d, ad_support::BOB), Ok(DirectoryAnswer::Disabled));
    assert_eq!(d.stats().searches, before.searches);
    // An account not in the cache: unavailable (the kept connection is dead, a new one refused).
    let t = Instant::now();
    let e = ask(&d, ad_support::ERIN).expect_err("DC down");
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    assert!(e.0.contains("connect"), "{e}");
    let e = d
        .lookup(ntlm(ad_support::ERIN))
        .expect_err("still down, not cached");
    assert!(e.0.contains("connect"), "{e}");
    assert_eq!(d.stats().unavailable, 2);

    dc.start_again().expect("DC starts again");
    assert_eq!(ask(&d, ad_support::ERIN), Ok(id(ad_support::ERIN_SIP)));
    let after = d.stats();
    assert_eq!(after.connects, before.connects + 1, "{after:?}");
}

#[test]
fn a_dc_that_never_answers_times_out_as_unavailable() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    // Accepts TCP, never speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = directory(&DirectorySection {
        url: format!("ldaps://127.0.0.1:{port}"),
        timeout_secs: 1,
        ..section(dc, tmp.path())
    });
    let t = Instant::now();
    let e = ask(&d, ad_support::ALICE).expect_err("timed out");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(e.0.contains("connect"), "{e}");
    drop(silent);
}

/// A TCP forwarder on the DC's address (so its certificate still names the host) that can stop
/// passing bytes on: a DC that hangs with connections open.
struct Freezer {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Freezer {
    fn start(dc: &AdDc) -> Freezer {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind((dc.ip(), 0)).expect("bind forwarder");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let target = std::net::SocketAddr::from((dc.ip(), 636));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Frozen: hold what came (bounded: the test unfreezes or ends).
                            let mut waited = 0;
                            while f.load(Ordering::Relaxed) && waited < 300 {
                                std::thread::sleep(Duration::from_millis(100));
                                waited += 1;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Freezer { port, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_dc_that_hangs_on_a_kept_connection_costs_one_timeout_not_a_retry() {
    let _g = serial();
    let Some(dc) = dc() else { return };
    let fwd = Freezer::start(dc);
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = directory(&DirectorySection {
        url: format!("ldaps://{}:{}", dc.ip(), fwd.port),
        timeout_secs: 1,
        netbios_domain: "EXAMPLE".into(),
        ..section(dc, tmp.path())
    });
    assert_eq!(ask(&d, ad_support::ALICE), Ok(id(ad_support::ALICE_SIP)));
    assert_eq!(d.stats().connects, 1);
    fwd.freeze(true);
    let t = Instant::now();
    let e = ask(&d, ad_support::ERIN).expect_err("the DC hangs");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "one timeout, no second try: {took:?}"
    );
    assert!(e.0.contains("search"), "{e}");
    assert_eq!(d.stats().connects, 1, "no new connection was tried");
    fwd.freeze(false);
    // The timed-out connection was dropped: the next lookup opens a new one.
    assert_eq!(ask(&d, ad_support::ERIN), Ok(id(ad_support::ERIN_SIP)));
    assert_eq!(d.stats().connects, 2);
}
