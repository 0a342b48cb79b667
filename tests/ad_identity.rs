//! Issue 15: domain accounts sign in as the SIP identity the directory gives them. An in-process
//! gateway with `[auth.domain] ntlm = "winbind"`, the domain's `sip/<fqdn>` keytab and
//! `[auth.directory]` (LDAPS to the same Samba AD DC, tests/ad_support, its winbind pipe at the
//! system path), and the project's client: NTLM verified by the DC and Kerberos with a ticket from
//! its KDC both end in an SA whose identity is alice's `msRTCSIP-PrimaryUserAddress` stand-in
//! (listed by the admin API, enforced on the REGISTER's AOR); an account without a SIP address
//! and one disabled in the directory after it got its ticket are refused with their reasons; a
//! directory that cannot answer is a 503.

mod ad_support;
mod auth_support;

use ad_support::{AdDc, Winbind};
use auth_support::{Client, GwOptions, config, gateway, http, metric, verified};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};

/// One test at a time: one of them disables an account of the shared DC for a while.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dc() -> Option<&'static AdDc> {
    ad_support::shared(Winbind::SystemSocket)
}

/// `[auth.domain]` and `[auth.directory]` for `dc`, the bind password in a private file of `dir`.
fn auth_extra(dc: &AdDc, dir: &std::path::Path, use_upn: bool) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let secret = dir.join("ldap.secret");
    std::fs::write(&secret, format!("{}\n", ad_support::ADMIN_PASSWORD)).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    format!(
        "kerberos_realm = \"{realm}\"\n\
         [auth.domain]\nntlm = \"winbind\"\nworkers = 2\n\
         [auth.directory]\nurl = \"{url}\"\nca_file = \"{ca}\"\nbind = \"simple\"\n\
         bind_dn = \"{admin}@{dns}\"\nbind_password_file = \"{secret}\"\nbase_dn = \"{base}\"\n\
         use_upn = {use_upn}\ntimeout_secs = 3\n",
        realm = ad_support::REALM,
        url = dc.ldaps_url(),
        ca = dc.ca_pem().display(),
        admin = ad_support::ADMIN_USER,
        dns = ad_support::DNS_DOMAIN,
        secret = secret.display(),
        base = ad_support::BASE_DN,
    )
}

async fn domain_gateway(dc: &AdDc, dir: &std::path::Path, use_upn: bool) -> sagw_gateway::Running {
    gateway(GwOptions {
        schemes: &["kerberos", "ntlm"],
        fqdn: ad_support::SERVICE_FQDN,
        keytab: Some(dc.keytab()),
        sip_domain: ad_support::DNS_DOMAIN,
        users: &[],
        auth_extra: &auth_extra(dc, dir, use_upn),
        ..GwOptions::default()
    })
    .await
}

/// A domain client signing in as `aor`: NTLM with the password, or Kerberos with `ccache`.
fn client(user: &str, aor: &str, ccache: Option<&str>) -> sagw_client::EndpointConfig {
    let scheme = if ccache.is_some() {
        AuthScheme::Kerberos
    } else {
        AuthScheme::Ntlm
    };
    let mut cfg = config(user, ad_support::PASSWORD, scheme, 4);
    cfg.aor = aor.to_owned();
    cfg.registrar = format!("sip:{}", ad_support::DNS_DOMAIN);
    cfg.domain = ad_support::NETBIOS_DOMAIN.into();
    if let Some(cc) = ccache {
        cfg.password = None;
        cfg.ccache = Some(cc.to_owned());
    }
    cfg
}

/// A ticket cache (`FILE:…`) for `user` from the DC's KDC (MIT kinit, the harness's).
fn kinit(dc: &AdDc, user: &str) -> String {
    let cc = dc
        .kinit(user, ad_support::PASSWORD)
        .unwrap_or_else(|e| panic!("kinit {user}: {e}"));
    format!("FILE:{}", cc.display())
}

/// Signs in and checks the 200 and a signed OPTIONS after it.
async fn sign_in_ok(
    gw: &sagw_gateway::Running,
    kind: TransportKind,
    cfg: sagw_client::EndpointConfig,
) {
    let mut c = Client::connect(gw, kind, cfg).await;
    let (r, _) = c.sign_in().await;
    let done = r.unwrap_or_else(|f| panic!("{kind:?}: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "{done:?}");
    let (r, _) = c
        .request("OPTIONS", &format!("sip:{}", ad_support::DNS_DOMAIN), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
    assert!(verified(&done.signature), "{done:?}");
}

/// How a sign-in ended: 200, or the status of the refusal (a fresh challenge or a final
/// answer); with the client's trace.
async fn sign_in_status(
    gw: &sagw_gateway::Running,
    cfg: sagw_client::EndpointConfig,
) -> (u16, String) {
    let mut c = Client::connect(gw, TransportKind::Tcp, cfg).await;
    let (r, _) = c.sign_in().await;
    let status = match r {
        Ok(done) => done.status,
        Err(Failure::Rejected { status, .. } | Failure::Status { status, .. }) => status,
        Err(other) => panic!("{other}\n{}", c.trace()),
    };
    (status, c.trace())
}

/// The sign-in ends with `status`.
async fn sign_in_refused(
    gw: &sagw_gateway::Running,
    cfg: sagw_client::EndpointConfig,
    status: u16,
) {
    let (got, trace) = sign_in_status(gw, cfg).await;
    assert_eq!(got, status, "{trace}");
}

/// The identities of the SAs the admin API lists.
async fn sa_identities(gw: &sagw_gateway::Running) -> Vec<String> {
    let (status, body) = http(gw, "GET", "/admin/sas").await;
    assert!(status.contains("200"), "{status}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let list = v
        .get("sas")
        .and_then(|s| s.as_array())
        .or_else(|| v.as_array())
        .unwrap_or_else(|| panic!("no SA list in {body}"));
    list.iter()
        .filter_map(|sa| {
            sa.get("identity")
                .and_then(|i| i.as_str())
                .map(str::to_owned)
        })
        .collect()
}

fn failures(body: &str, scheme: &str, reason: &str) -> u64 {
    metric(
        body,
        &format!("sagw_auth_handshake_failures_total{{scheme=\"{scheme}\",reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntlm_and_kerberos_sign_in_as_the_directorys_identity() {
    let _g = SERIAL.lock().await;
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let gw = domain_gateway(dc, tmp.path(), false).await;

    // NTLM through the DC: alice is her msRTCSIP address, erin her proxyAddresses one.
    for kind in [TransportKind::Tcp, TransportKind::Udp] {
        sign_in_ok(
            &gw,
            kind,
            client(ad_support::ALICE, ad_support::ALICE_SIP, None),
        )
        .await;
    }
    sign_in_ok(
        &gw,
        TransportKind::Tcp,
        client(ad_support::ERIN, ad_support::ERIN_SIP, None),
    )
    .await;
    // Kerberos with a ticket from the KDC: the same identity for the principal.
    let cc = kinit(dc, ad_support::ALICE);
    sign_in_ok(
        &gw,
        TransportKind::Tcp,
        client(ad_support::ALICE, ad_support::ALICE_SIP, Some(&cc)),
    )
    .await;

    let ids = sa_identities(&gw).await;
    assert_eq!(
        ids.iter().filter(|i| *i == ad_support::ALICE_SIP).count(),
        3,
        "alice's three SAs carry the directory's identity: {ids:?}"
    );
    assert!(ids.contains(&ad_support::ERIN_SIP.to_owned()), "{ids:?}");
    assert!(
        !ids.iter().any(|i| i == "sip:alice@example.test"),
        "never the default mapping: {ids:?}"
    );

    // The identity is the directory's, not the account name: alice registering as
    // sip:alice@example.test (what she would be without a directory) is refused.
    sign_in_refused(
        &gw,
        client(ad_support::ALICE, "sip:alice@example.test", None),
        403,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_the_directory_refuses_do_not_sign_in() {
    let _g = SERIAL.lock().await;
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let gw = domain_gateway(dc, tmp.path(), false).await;

    // frank: the DC verifies his password, but the directory has no SIP address for him.
    sign_in_refused(
        &gw,
        client(ad_support::FRANK, "sip:frank@example.test", None),
        401,
    )
    .await;

    // frank again with Kerberos: a ticket first, then disabled in the directory. The KDC is not
    // asked again (the gateway accepts the ticket with its keytab): only the directory stops him.
    let gw_upn = domain_gateway(dc, tmp.path(), true).await;
    let cc = kinit(dc, ad_support::FRANK);
    sign_in_ok(
        &gw_upn,
        TransportKind::Tcp,
        client(ad_support::FRANK, "sip:frank@example.test", Some(&cc)),
    )
    .await;
    dc.samba_tool(&["user", "disable", ad_support::FRANK])
        .expect("disable frank");
    let gw_fresh = domain_gateway(dc, tmp.path(), true).await; // no cached answer for frank
    let (status, trace) = sign_in_status(
        &gw_fresh,
        client(ad_support::FRANK, "sip:frank@example.test", Some(&cc)),
    )
    .await;
    // Enabled again before any assertion: the other tests need him.
    dc.samba_tool(&["user", "enable", ad_support::FRANK])
        .expect("enable frank");
    assert_eq!(status, 401, "disabled in the directory: {trace}");

    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(failures(&body, "ntlm", "no_sip_address"), 1, "{body}");
    let (_, body) = http(&gw_fresh, "GET", "/metrics").await;
    assert_eq!(failures(&body, "kerberos", "account_disabled"), 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_answer_is_a_503_not_a_sign_in() {
    let _g = SERIAL.lock().await;
    let Some(dc) = dc() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    // The DC verifies the password (winbind), but nothing listens where the directory should be.
    let extra = auth_extra(dc, tmp.path(), false).replace(
        &format!("url = \"{}\"", dc.ldaps_url()),
        &format!("url = \"ldaps://{}:1\"", dc.ip()),
    );
    assert!(extra.contains(":1\""), "{extra}");
    let gw = gateway(GwOptions {
        schemes: &["ntlm"],
        sip_domain: ad_support::DNS_DOMAIN,
        users: &[],
        auth_extra: &extra,
        ..GwOptions::default()
    })
    .await;
    let (status, trace) =
        sign_in_status(&gw, client(ad_support::ALICE, ad_support::ALICE_SIP, None)).await;
    assert_eq!(status, 503, "{trace}");
    assert!(sa_identities(&gw).await.is_empty());
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        failures(&body, "ntlm", "directory_unavailable"),
        1,
        "{body}"
    );
}
