//! Issue 15: Kerberos sign-in through the gateway with tickets from an Active Directory KDC (a
//! Samba AD DC provisioned by tests/ad_support, Heimdal-derived KDC with PACs) and the keytab the
//! domain exported for `sip/<fqdn>`: AES (the service account allows AES only) and RC4 (a second
//! service account allowing RC4-HMAC only) sessions, signed traffic after the sign-in checked by
//! the client, and a disabled account that gets no ticket. The client is `sagw-client`, its
//! password sign-in through MIT `kinit` (sagw_client::kinit) against the DC's KDC.

mod ad_support;
mod auth_support;

use ad_support::{AdDc, Winbind};
use auth_support::{Client, GwOptions, config, gateway, param, verified};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Password};

/// The shared DC (LDAP/Kerberos only: a private winbind socket, no machine lock), with the
/// process's krb5 environment pointed at its KDC.
fn dc() -> Option<&'static AdDc> {
    ad_support::shared(Winbind::Private)
}

/// A ticket cache for `user` from the DC's KDC, through the project client's kinit.
fn kinit(user: &str) -> (sagw_client::kinit::CcacheDir, String) {
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    let cc = dir
        .kinit(
            &format!("{user}@{}", ad_support::REALM),
            &Password::new(ad_support::PASSWORD),
        )
        .unwrap_or_else(|e| panic!("kinit {user} against the Samba KDC: {e}"));
    (dir, cc)
}

/// `klist -e` of `ccache`: the "Etype (skey, tkt)" line of the ticket for `spn`, e.g.
/// `aes256-cts-hmac-sha1-96, aes256-cts-hmac-sha1-96`.
fn ticket_enctypes(ccache: &str, spn: &str) -> String {
    let out = std::process::Command::new("klist")
        .arg("-e")
        .arg("-c")
        .arg(ccache)
        .output()
        .expect("klist");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .skip_while(|l| !l.contains(&format!("{spn}@{}", ad_support::REALM)))
        .find_map(|l| {
            l.split_once("Etype (skey, tkt): ")
                .map(|(_, e)| e.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no ticket for {spn} in {ccache}:\n{text}"))
}

/// Signs in alice with Kerberos over `kind`, checks the MS-SIPAE answer and a signed OPTIONS
/// afterwards; returns the client's trace (which names the session key's enctype when mutual
/// authentication is on).
async fn sign_in(
    gw: &sagw_gateway::Running,
    kind: TransportKind,
    ccache: &str,
    mutual: bool,
) -> String {
    let mut cfg = config("alice", "", AuthScheme::Kerberos, 4);
    cfg.aor = format!("sip:alice@{}", ad_support::DNS_DOMAIN);
    cfg.registrar = format!("sip:{}", ad_support::DNS_DOMAIN);
    cfg.domain = ad_support::NETBIOS_DOMAIN.into();
    cfg.password = None;
    cfg.ccache = Some(ccache.to_owned());
    cfg.mutual = mutual;
    let mut c = Client::connect(gw, kind, cfg).await;
    let (r, seen) = c.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("{kind:?}: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "the 200's signature: {done:?}");
    let (last, challenges) = seen.split_last().expect("responses");
    assert!(!challenges.is_empty(), "challenged first");
    for ch in challenges {
        assert_eq!(ch.status_code(), Some(401));
        assert!(
            ch.header_all("WWW-Authenticate")
                .any(|o| o.starts_with("Kerberos")),
            "Kerberos offered"
        );
    }
    let info = last
        .header_all("Authentication-Info")
        .find(|v| v.starts_with("Kerberos"))
        .expect("Kerberos Authentication-Info on the 200");
    assert_eq!(
        param(info, "realm").as_deref(),
        Some("SIP Communications Service"),
        "{info}"
    );
    for p in ["targetname", "opaque", "snum", "srand", "rspauth"] {
        assert!(param(info, p).is_some(), "{p} in {info}");
    }
    // Signed traffic on the SA: the gateway's signature on its answer verified by the client.
    let (r, _) = c
        .request("OPTIONS", &format!("sip:{}", ad_support::DNS_DOMAIN), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
    assert!(verified(&done.signature), "OPTIONS answer signed: {done:?}");
    let trace = c.trace();
    assert!(trace.contains("signature OK on 200 to REGISTER"), "{trace}");
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_sign_in_with_the_domain_keytab() {
    let Some(dc) = dc() else {
        return;
    };
    // As an AD deployment configures it: the exported keytab and the realm; no krb5.conf needed
    // by the acceptor.
    let realm = format!("kerberos_realm = \"{}\"\n", ad_support::REALM);
    let gw = gateway(GwOptions {
        schemes: &["kerberos"],
        fqdn: ad_support::SERVICE_FQDN,
        keytab: Some(dc.keytab()),
        sip_domain: ad_support::DNS_DOMAIN,
        users: &[],
        auth_extra: &realm,
        ..GwOptions::default()
    })
    .await;
    let (_dir, cc) = kinit(ad_support::ALICE);
    for (kind, mutual) in [(TransportKind::Tcp, false), (TransportKind::Udp, true)] {
        let trace = sign_in(&gw, kind, &cc, mutual).await;
        assert!(
            trace.contains(&format!("Kerberos AP-REQ for {}", ad_support::SERVICE_SPN)),
            "{trace}"
        );
    }
    // The service ticket the client presented (kept in its cache): AES session key and ticket,
    // the only keys the gateway's keytab has.
    assert_eq!(
        ticket_enctypes(&cc, ad_support::SERVICE_SPN),
        "aes256-cts-hmac-sha1-96, aes256-cts-hmac-sha1-96"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rc4_sign_in_with_an_rc4_only_service_account() {
    let Some(dc) = dc() else {
        return;
    };
    let gw = gateway(GwOptions {
        schemes: &["kerberos"],
        fqdn: ad_support::SERVICE_FQDN_RC4,
        keytab: Some(dc.keytab_rc4()),
        sip_domain: ad_support::DNS_DOMAIN,
        users: &[],
        ..GwOptions::default()
    })
    .await;
    let (_dir, cc) = kinit(ad_support::ALICE);
    let trace = sign_in(&gw, TransportKind::Tcp, &cc, true).await;
    assert!(
        trace.contains(&format!(
            "Kerberos AP-REQ for {}",
            ad_support::SERVICE_SPN_RC4
        )),
        "{trace}"
    );
    // An RC4 ticket with an RC4 session key, accepted with the RC4-only keytab.
    let etypes = ticket_enctypes(&cc, ad_support::SERVICE_SPN_RC4);
    assert_eq!(etypes, "DEPRECATED:arcfour-hmac, DEPRECATED:arcfour-hmac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_expired_accounts_get_no_ticket() {
    let Some(_dc) = dc() else {
        return;
    };
    let dir = sagw_client::kinit::CcacheDir::new().expect("ccache dir");
    for user in [ad_support::BOB, ad_support::DAVE] {
        let err = dir
            .kinit(
                &format!("{user}@{}", ad_support::REALM),
                &Password::new(ad_support::PASSWORD),
            )
            .expect_err("the KDC refuses the account");
        assert!(
            err.to_string().contains("credentials have been revoked"),
            "{user}: {err}"
        );
    }
    // The right password of an enabled account still works (so the refusals above are the
    // account states, not a broken KDC).
    dir.kinit(
        &format!("{}@{}", ad_support::FRANK, ad_support::REALM),
        &Password::new(ad_support::PASSWORD),
    )
    .expect("frank gets a ticket");
}
