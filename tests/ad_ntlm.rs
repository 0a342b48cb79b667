//! Issue 15: NTLM verified by the domain. A real Samba AD DC (tests/ad_support, its winbind pipe
//! at the system path where libwbclient finds it) verifies the NTLMv2 responses the project's
//! client (`sagw-client`) sends to an in-process gateway with `[auth.domain] ntlm = "winbind"`
//! and an empty credentials file: sign-ins over TCP and UDP with signed traffic after them, and
//! the domain's refusals (wrong password, disabled, expired, must change, password expired,
//! unknown, machine account, locked out) as 401s with their own reasons.

mod ad_support;
mod auth_support;

use std::time::{Duration, Instant};

use ad_support::{AdDc, Winbind};
use auth_support::{Client, GwOptions, config, gateway, http, metric, verified};
use sagw_client::transport::TransportKind;
use sagw_client::{AuthScheme, Failure};

fn dc() -> Option<&'static AdDc> {
    audit::install();
    ad_support::shared(Winbind::SystemSocket)
}

/// The audit trail (`sagw::audit` events) of this test process, as (From AOR, outcome, reason).
mod audit {
    use std::fmt::Debug;
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    static EVENTS: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

    struct Capture;

    #[derive(Default)]
    struct Fields {
        from: String,
        outcome: String,
        reason: String,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "outcome" => self.outcome = value.to_owned(),
                "reason" => self.reason = value.to_owned(),
                _ => {}
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            if field.name() == "from" {
                self.from = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            m.target() == "sagw::audit"
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut f = Fields::default();
            e.record(&mut f);
            if let Ok(mut v) = EVENTS.lock() {
                v.push((f.from, f.outcome, f.reason));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    pub fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            let _ = tracing::subscriber::set_global_default(Capture);
        });
    }

    /// The reasons refusals of `aor` were audited with, in order.
    pub fn refusals_of(aor: &str) -> Vec<String> {
        EVENTS
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(from, outcome, _)| from == aor && outcome == "refused")
                    .map(|(_, _, reason)| reason.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn domain_gateway(
    file_users: &'static [(&'static str, &'static str)],
) -> sagw_gateway::Running {
    gateway(GwOptions {
        schemes: &["ntlm"],
        sip_domain: ad_support::DNS_DOMAIN,
        users: file_users,
        auth_extra: "[auth.domain]\nntlm = \"winbind\"\nworkers = 2\n",
        ..GwOptions::default()
    })
    .await
}

/// A client of the domain: `user@example.test`, NTLM domain `EXAMPLE`.
fn domain_client(user: &str, password: &str) -> sagw_client::EndpointConfig {
    let mut cfg = config(user, password, AuthScheme::Ntlm, 4);
    cfg.aor = format!("sip:{}@{}", user.to_lowercase(), ad_support::DNS_DOMAIN);
    cfg.registrar = format!("sip:{}", ad_support::DNS_DOMAIN);
    cfg.domain = ad_support::NETBIOS_DOMAIN.into();
    cfg
}

/// Signs `user` in over `kind`; the 200 and an OPTIONS after it must be signed and verify.
/// Returns how long the sign-in took.
async fn sign_in_ok(gw: &sagw_gateway::Running, kind: TransportKind, user: &str) -> Duration {
    let mut c = Client::connect(gw, kind, domain_client(user, ad_support::PASSWORD)).await;
    let t = Instant::now();
    let (r, _) = c.sign_in().await;
    let took = t.elapsed();
    let done = r.unwrap_or_else(|f| panic!("{user} over {kind:?}: {f}\n{}", c.trace()));
    assert_eq!(done.status, 200);
    assert!(verified(&done.signature), "the 200's signature: {done:?}");
    let (r, _) = c
        .request("OPTIONS", &format!("sip:{}", ad_support::DNS_DOMAIN), None)
        .await;
    let done = r.unwrap_or_else(|f| panic!("OPTIONS: {f}\n{}", c.trace()));
    assert!(verified(&done.signature), "OPTIONS answer signed: {done:?}");
    took
}

/// Signs `user` in with `password` and expects a fresh challenge (401).
async fn refused(gw: &sagw_gateway::Running, user: &str, password: &str) {
    let mut c = Client::connect(gw, TransportKind::Tcp, domain_client(user, password)).await;
    let (r, _) = c.sign_in().await;
    match r {
        Err(Failure::Rejected { status: 401, .. }) => {}
        other => panic!("{user}: a 401 expected, got {other:?}\n{}", c.trace()),
    }
}

fn failures(body: &str, reason: &str) -> u64 {
    metric(
        body,
        &format!("sagw_auth_handshake_failures_total{{scheme=\"ntlm\",reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_users_sign_in_over_tcp_and_udp() {
    let Some(_dc) = dc() else {
        return;
    };
    // Only frank is in the credentials file (with a password the domain does not know): he is
    // verified from the file, everybody else by the domain.
    let gw = domain_gateway(&[("frank", "file-only-pw")]).await;
    let mut domain_times = Vec::new();
    for kind in [TransportKind::Tcp, TransportKind::Udp] {
        domain_times.push(sign_in_ok(&gw, kind, ad_support::ALICE).await);
    }
    domain_times.push(sign_in_ok(&gw, TransportKind::Tcp, ad_support::ERIN).await);
    // The file comes first: frank's file password works, the domain's does not.
    let mut frank = Client::connect(
        &gw,
        TransportKind::Tcp,
        domain_client(ad_support::FRANK, "file-only-pw"),
    )
    .await;
    let t = Instant::now();
    let (r, _) = frank.sign_in().await;
    let file_time = t.elapsed();
    r.unwrap_or_else(|f| panic!("frank from the file: {f}\n{}", frank.trace()));
    refused(&gw, ad_support::FRANK, ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    // check-config's view of the same configuration: the library loads, winbindd answers.
    let (_, auth) = auth_support::gateway_settings(GwOptions {
        schemes: &["ntlm"],
        auth_extra: "[auth.domain]\nntlm = \"winbind\"\n",
        users: &[],
        ..GwOptions::default()
    });
    let lines = sagw_gateway::check::domain(&auth).expect("check-config passes");
    assert!(lines[0].contains("winbindd answers"), "{lines:?}");
    assert_eq!(
        metric(&body, "sagw_domain_ntlm_jobs_total{outcome=\"done\"}"),
        3,
        "three domain sign-ins, none for the file's user: {body}"
    );
    assert_eq!(failures(&body, "wrong_password"), 1);
    println!(
        "sign-in (REGISTER, two round trips) through winbind: {domain_times:?}; from the file: {file_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domains_refusals_keep_their_reasons() {
    let Some(_dc) = dc() else {
        return;
    };
    let gw = domain_gateway(&[]).await;
    refused(&gw, ad_support::ALICE, "Wrong-passw0rd").await;
    refused(&gw, ad_support::BOB, ad_support::PASSWORD).await;
    refused(&gw, ad_support::CAROL, ad_support::PASSWORD).await;
    refused(&gw, ad_support::DAVE, ad_support::PASSWORD).await;
    refused(&gw, ad_support::GINA, ad_support::PASSWORD).await;
    refused(&gw, "nobody-here", ad_support::PASSWORD).await;
    // The DC's own computer account: never a SIP user, refused before winbind is asked.
    refused(&gw, "DC1$", ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    for (reason, n) in [
        ("wrong_password", 1),
        ("account_disabled", 1),
        ("password_must_change", 1),
        ("account_expired", 1),
        ("password_expired", 1),
        ("unknown_user", 1),
        ("domain_refused", 1),
    ] {
        assert_eq!(failures(&body, reason), n, "{reason}\n{body}");
    }
    assert_eq!(
        metric(
            &body,
            "sagw_auth_handshakes_total{scheme=\"ntlm\",outcome=\"completed\"}"
        ),
        0
    );
    // The audit trail names each refusal with its reason.
    let aor = |u: &str| format!("sip:{}@{}", u.to_lowercase(), ad_support::DNS_DOMAIN);
    for (user, reason) in [
        (ad_support::BOB, "account_disabled"),
        (ad_support::CAROL, "password_must_change"),
        (ad_support::DAVE, "account_expired"),
        (ad_support::GINA, "password_expired"),
        ("DC1$", "domain_refused"),
    ] {
        assert_eq!(audit::refusals_of(&aor(user)), [reason], "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_a_domain_account_out() {
    let Some(_dc) = dc() else {
        return;
    };
    let gw = domain_gateway(&[]).await;
    // The domain's lockout policy counts the gateway's failed logons like any other: anyone who
    // knows an account name can lock it out (docs/security.md B14).
    for _ in 0..ad_support::LOCKOUT_THRESHOLD {
        refused(&gw, ad_support::LOCKOUT_USER, "Wrong-passw0rd").await;
    }
    refused(&gw, ad_support::LOCKOUT_USER, ad_support::PASSWORD).await;
    let (_, body) = http(&gw, "GET", "/metrics").await;
    assert_eq!(
        failures(&body, "wrong_password"),
        u64::from(ad_support::LOCKOUT_THRESHOLD)
    );
    assert_eq!(failures(&body, "account_locked_out"), 1, "{body}");
    let audited = audit::refusals_of(&format!(
        "sip:{}@{}",
        ad_support::LOCKOUT_USER,
        ad_support::DNS_DOMAIN
    ));
    assert_eq!(
        audited,
        [
            "wrong_password",
            "wrong_password",
            "wrong_password",
            "account_locked_out"
        ]
    );
}

/// sagw-winbind on its own: the DC verifies an NTLMv2 response to our challenge and returns the
/// SessionBaseKey the client derived (HMAC_MD5(NTOWFv2, NTProofStr)); the mean cost of a call is
/// printed (docs/BENCHMARKS.md).
#[test]
fn winbind_returns_the_session_base_key() {
    use sagw_ntlm::initiator::{ClientInputs, Credentials, MicPolicy, authenticate};
    let Some(_dc) = dc() else {
        return;
    };
    let lib = sagw_winbind::Library::load(sagw_winbind::DEFAULT_LIBRARY).expect("libwbclient");
    let mut ctx = lib.context().expect("context");
    ctx.ping().expect("winbindd answers");
    // The domain the DC's winbindd is joined to, by both names: what tells its accounts from a
    // trusted domain's.
    let joined = ctx.joined_domain().expect("the joined domain");
    assert!(
        joined.is(ad_support::NETBIOS_DOMAIN) && joined.is(ad_support::DNS_DOMAIN),
        "{joined:?}"
    );
    let acceptor =
        sagw_ntlm::NtlmAcceptor::new(sagw_ntlm::AcceptorConfig::new(sagw_ntlm::ServerIdentity {
            netbios_domain: ad_support::NETBIOS_DOMAIN.into(),
            netbios_computer: "GW".into(),
            dns_domain: ad_support::DNS_DOMAIN.into(),
            dns_computer: ad_support::SERVICE_FQDN.into(),
            dns_tree: ad_support::DNS_DOMAIN.into(),
        }));
    let nt = sagw_ntlm::NtHash::from_password(ad_support::PASSWORD);
    let n = 20u32;
    let mut total = Duration::ZERO;
    for i in 0..n {
        let now = std::time::SystemTime::now();
        let pending = acceptor.challenge([i as u8; 8], now);
        let out = authenticate(
            &pending.challenge_message(),
            &Credentials {
                user: ad_support::ALICE,
                domain: ad_support::NETBIOS_DOMAIN,
                nt_hash: &nt,
            },
            &ClientInputs {
                workstation: "WS1",
                client_challenge: [i as u8 ^ 0x5a; 8],
                timestamp: now,
                random_session_key: [7; 16],
                version: [6, 1, 0xB1, 0x1D, 0, 0, 0, 0x0F],
                mic: MicPolicy::Include,
            },
        )
        .expect("initiator");
        let msg = sagw_ntlm::AuthenticateMessage::parse(&out.message).expect("parse");
        let pre = pending.precheck(&msg).expect("precheck");
        let nt_response = pre.nt_response();
        let t = Instant::now();
        let logon = ctx
            .authenticate_response(&sagw_winbind::ResponseLogon {
                user: msg.user(),
                domain: msg.domain(),
                workstation: msg.workstation(),
                server_challenge: pre.server_challenge(),
                nt_response: &nt_response,
            })
            .expect("the DC accepts alice");
        total += t.elapsed();
        assert_eq!(logon.account_name.to_lowercase(), ad_support::ALICE);
        assert_eq!(logon.domain_name, ad_support::NETBIOS_DOMAIN);
        let key = sagw_ntlm::Key16::from_bytes(logon.user_session_key);
        let accepted = pending
            .accept_with_session_base_key(&msg, &key, now)
            .expect("MIC and keys check out with the DC's key");
        assert_eq!(accepted.exported_session_key, out.exported_session_key);
    }
    println!(
        "wbcCtxAuthenticateUserEx: mean {:?} over {n} calls",
        total / n
    );
    // A response that answers nothing: the DC says wrong password.
    let e = ctx
        .authenticate_response(&sagw_winbind::ResponseLogon {
            user: ad_support::ALICE,
            domain: ad_support::NETBIOS_DOMAIN,
            workstation: "WS1",
            server_challenge: [0xEE; 8],
            nt_response: &[1u8; 64],
        })
        .unwrap_err();
    match e {
        sagw_winbind::LogonError::Refused(r) => {
            assert_eq!(r.refusal, sagw_winbind::Refusal::WrongPassword, "{r:?}");
            assert_eq!(r.nt_status, 0xC000_006A);
        }
        other => panic!("{other:?}"),
    }
}
