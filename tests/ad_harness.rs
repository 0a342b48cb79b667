//! The Samba AD DC harness itself (tests/ad_support): a DC from the template answers winbind,
//! Kerberos and LDAPS as the AD tests expect, with the account states they rely on, and survives
//! a stop and start in the same folder.

mod ad_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;

use ad_support::{AdDc, AdDcOptions, Winbind};
use rustls_pki_types::pem::PemObject as _;

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `wbinfo -a DOMAIN\user%password` (plaintext and challenge/response through the DC's winbindd).
fn wbinfo_auth(dc: &AdDc, user: &str, password: &str) -> (bool, String) {
    output(
        dc.wbinfo()
            .arg("-a")
            .arg(format!("{}\\{user}%{password}", dc.netbios_domain())),
    )
}

/// A TLS handshake with the DC's LDAPS port trusting only the harness's CA, for `name` (the DC's
/// IP address or host name), then an anonymous LDAP rootDSE-less bind request answered.
fn ldaps_handshake(dc: &AdDc, name: rustls_pki_types::ServerName<'static>) -> Result<(), String> {
    let pem = std::fs::read(dc.ca_pem()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect(SocketAddr::from((dc.ip(), 636))).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    // LDAPv3 anonymous simple bind (messageID 1): 30 0c 02 01 01 60 07 02 01 03 04 00 80 00.
    tls.write_all(&[
        0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
    ])
    .map_err(|e| e.to_string())?;
    let mut reply = [0u8; 64];
    let n = tls.read(&mut reply).map_err(|e| e.to_string())?;
    // BindResponse (application 1 = 0x61) with resultCode success (0a 01 00).
    let r = &reply[..n];
    if r.contains(&0x61) && r.windows(3).any(|w| w == [0x0a, 0x01, 0x00]) {
        Ok(())
    } else {
        Err(format!("unexpected LDAP reply {r:02x?}"))
    }
}

#[test]
fn samba_dc_answers_winbind_kerberos_and_ldaps_and_restarts() {
    let Some(dc) = AdDc::start(AdDcOptions {
        winbind: Winbind::Private,
    }) else {
        return;
    };

    // NTLM through the DC's winbindd: the right password, the account states.
    let (ok, out) = wbinfo_auth(&dc, "alice", ad_support::PASSWORD);
    assert!(ok, "alice's sign-in through winbind failed: {out}");
    assert!(
        out.contains("challenge/response password authentication succeeded"),
        "{out}"
    );
    let (ok, out) = wbinfo_auth(&dc, "alice", "wrong-Passw0rd!");
    assert!(!ok && out.contains("NT_STATUS_WRONG_PASSWORD"), "{out}");
    for (user, status) in [
        (ad_support::BOB, "NT_STATUS_ACCOUNT_DISABLED"),
        (ad_support::CAROL, "NT_STATUS_PASSWORD_MUST_CHANGE"),
        (ad_support::DAVE, "NT_STATUS_ACCOUNT_EXPIRED"),
        (ad_support::GINA, "NT_STATUS_PASSWORD_EXPIRED"),
    ] {
        let (ok, out) = wbinfo_auth(&dc, user, ad_support::PASSWORD);
        assert!(
            !ok && out.contains(status),
            "{user}: expected {status}: {out}"
        );
    }
    for user in [ad_support::ERIN, ad_support::FRANK] {
        let (ok, out) = wbinfo_auth(&dc, user, ad_support::PASSWORD);
        assert!(ok, "{user}: {out}");
    }

    // Kerberos from the DC's KDC; a disabled account gets no ticket.
    let cc = dc
        .kinit("alice", ad_support::PASSWORD)
        .expect("kinit alice");
    let (ok, out) = output(
        Command::new("kvno")
            .arg("-k")
            .arg(dc.keytab())
            .arg(ad_support::SERVICE_SPN)
            .env("KRB5_CONFIG", dc.krb5_conf())
            .env("KRB5CCNAME", format!("FILE:{}", cc.display())),
    );
    assert!(
        ok && out.contains("keytab entry valid"),
        "kvno -k sip.keytab: {out}"
    );
    let (ok, out) = output(
        Command::new("klist")
            .arg("-e")
            .env("KRB5CCNAME", format!("FILE:{}", cc.display())),
    );
    assert!(
        ok && out.contains("sip/gw.example.test@EXAMPLE.TEST"),
        "{out}"
    );
    let err = dc
        .kinit("bob", ad_support::PASSWORD)
        .expect_err("bob is disabled");
    assert!(err.contains("revoked"), "{err}");

    // The RC4-only service: its ticket and keytab are arcfour-hmac.
    let (ok, out) = output(
        Command::new("kvno")
            .arg("-k")
            .arg(dc.keytab_rc4())
            .arg(ad_support::SERVICE_SPN_RC4)
            .env("KRB5_CONFIG", dc.krb5_conf())
            .env("KRB5CCNAME", format!("FILE:{}", cc.display())),
    );
    assert!(
        ok && out.contains("keytab entry valid"),
        "kvno -k sip-rc4.keytab: {out}"
    );
    let (_, out) = output(
        Command::new("klist")
            .arg("-e")
            .env("KRB5CCNAME", format!("FILE:{}", cc.display())),
    );
    let rc4_line = out
        .lines()
        .skip_while(|l| !l.contains("sip/gw-rc4.example.test"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        rc4_line.contains("rc4") || rc4_line.contains("arcfour"),
        "{out}"
    );

    // LDAPS with our CA, by IP and by name.
    ldaps_handshake(
        &dc,
        rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::V4(dc.ip()).into()),
    )
    .expect("LDAPS by IP");
    ldaps_handshake(
        &dc,
        rustls_pki_types::ServerName::try_from(ad_support::DC_NAME).expect("name"),
    )
    .expect("LDAPS by name");

    // The SIP address attribute stand-in and proxyAddresses are readable over LDAP.
    let (ok, out) = output(
        Command::new("ldbsearch")
            .arg("-H")
            .arg(dc.ldap_url())
            .arg(format!("-U{}%{}", dc.admin().0, dc.admin().1))
            .arg(format!("--configfile={}", dc.smb_conf().display()))
            .arg("-b")
            .arg(dc.base_dn())
            .arg("(|(sAMAccountName=alice)(sAMAccountName=erin))")
            .arg("msRTCSIP-PrimaryUserAddress")
            .arg("proxyAddresses"),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("msRTCSIP-PrimaryUserAddress: sip:alice.sip@example.test"),
        "{out}"
    );
    assert!(
        out.contains("proxyAddresses: SIP:erin@example.test"),
        "{out}"
    );

    // Down: nothing answers; up again in the same folder: alice signs in again.
    dc.stop();
    assert!(TcpStream::connect(SocketAddr::from((dc.ip(), 389))).is_err());
    let (ok, out) = wbinfo_auth(&dc, "alice", ad_support::PASSWORD);
    assert!(!ok, "winbind answered with the DC stopped: {out}");
    dc.start_again().expect("DC starts again");
    let (ok, out) = wbinfo_auth(&dc, "alice", ad_support::PASSWORD);
    assert!(ok, "after restart: {out}");

    // Lockout: the threshold of the lockout account's policy, then even the right password fails.
    for _ in 0..ad_support::LOCKOUT_THRESHOLD {
        let (ok, _) = wbinfo_auth(&dc, ad_support::LOCKOUT_USER, "wrong-Passw0rd!");
        assert!(!ok);
    }
    let (ok, out) = wbinfo_auth(&dc, ad_support::LOCKOUT_USER, ad_support::PASSWORD);
    assert!(!ok && out.contains("NT_STATUS_ACCOUNT_LOCKED_OUT"), "{out}");

    let dir = dc.dir().to_owned();
    drop(dc);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// The DC whose winbindd is at libwbclient's default `/run/samba/winbindd`: tools (and an
/// in-process gateway) reach it with no environment at all; it holds the machine-wide lock while
/// it lives, and takes its pipe away when dropped.
#[test]
fn samba_dc_at_the_system_winbind_socket_holds_the_machine_lock() {
    let Some(dc) = AdDc::start(AdDcOptions {
        winbind: Winbind::SystemSocket,
    }) else {
        return;
    };
    assert!(dc.winbind_client_env().is_empty());
    let (ok, out) = output(
        Command::new("wbinfo")
            .env_remove("LD_PRELOAD")
            .env_remove("SELFTEST_WINBINDD_SOCKET_DIR")
            .arg("-a")
            .arg(format!("EXAMPLE\\alice%{}", ad_support::PASSWORD)),
    );
    assert!(ok, "wbinfo -a with no environment: {out}");
    let (locked_elsewhere, _) =
        output(Command::new("flock").args(["-n", ad_support::SYSTEM_SOCKET_LOCK, "true"]));
    assert!(
        !locked_elsewhere,
        "the DC does not hold {}",
        ad_support::SYSTEM_SOCKET_LOCK
    );
    drop(dc);
    assert!(!std::path::Path::new("/run/samba/winbindd/pipe").exists());
    let (free, out) =
        output(Command::new("flock").args(["-n", ad_support::SYSTEM_SOCKET_LOCK, "true"]));
    assert!(free, "lock still held after drop: {out}");
}
