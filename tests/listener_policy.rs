//! Issue 19: a challenge policy per listener, several listeners per transport. One TCP and one UDP
//! listener offer Digest only ("phones"), another TCP and UDP pair NTLM only (the top-level
//! policy): each refuses the other's credentials, valid as they are elsewhere on the same gateway,
//! by challenging again with what it does offer. Over UDP the answers must leave from the socket
//! the client reached (its connected socket accepts no other source).

mod auth_support;

use std::net::SocketAddr;
use std::time::Duration;

use auth_support::{Client, DOMAIN, config, unique};
use sagw_client::transport::{Connection, TransportKind};
use sagw_client::{AuthScheme, Failure, SignatureCheck};
use sagw_digest::Ha1;
use sagw_digest::client::{Challenge as DigestChallenge, authorize, parse_header};
use sagw_gateway::Running;
use sagw_proxy::Transport;
use sagw_sip::Message;

async fn gateway() -> Running {
    let dir = std::env::temp_dir().join(format!(
        "sagw-listeners-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = format!(
        r#"
[log]
level = "warn"
[listen]
udp = "127.0.0.1:0"
tcp = "127.0.0.1:0"
tls = ""
[[listen.extra]]
name = "phones-tcp"
transport = "tcp"
address = "127.0.0.1:0"
[[listen.extra]]
name = "phones-udp"
transport = "udp"
address = "127.0.0.1:0"
[timers]
t1_ms = 50
t2_ms = 400
[metrics]
listen = ""
[auth]
schemes = ["ntlm"]
sip_domain = "{DOMAIN}"
credentials = "{dir}/users"
nonce_key = "{dir}/nonce.key"
[auth.policy.phones]
schemes = ["digest"]
digest_algorithms = ["SHA-256", "MD5"]
[auth.listener.phones-tcp]
policy = "phones"
[auth.listener.phones-udp]
policy = "phones"
"#,
        dir = dir.display()
    );
    let settings = sagw_gateway::Config::parse(&text)
        .expect("parses")
        .validate()
        .expect("valid");
    let auth = settings.auth.clone().expect("auth on");
    for (u, p) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        sagw_gateway::users::add(&auth, u, p, None).expect("user");
    }
    sagw_gateway::start(settings).await.expect("starts")
}

fn listener(gw: &Running, name: &str, transport: Transport) -> SocketAddr {
    let l = gw
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("listener {name}: {:?}", gw.listeners));
    assert_eq!(l.transport, transport);
    l.addr
}

fn kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        _ => TransportKind::Tcp,
    }
}

fn offers(m: &Message) -> Vec<String> {
    m.header_all("WWW-Authenticate")
        .chain(m.header_all("Proxy-Authenticate"))
        .map(str::to_owned)
        .collect()
}

fn register(c: &Client, user: &str, cseq: u32, auth: Option<&str>) -> Message {
    let via = c.conn.kind().via();
    let local = c.conn.local_addr();
    let mut text = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{user}{cseq}x{n}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=t{cseq}\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: reg-{user}-{n}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: 600\r\n",
        n = unique()
    );
    if let Some(a) = auth {
        text.push_str(&format!("Authorization: {a}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(text.as_bytes()).expect("REGISTER parses")
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_listener_and_an_ntlm_listener_refuse_each_others_credentials() {
    let gw = gateway().await;
    for t in [Transport::Tcp, Transport::Udp] {
        let digest_at = listener(&gw, &format!("phones-{t}"), t);
        let ntlm_at = listener(&gw, &t.to_string(), t);

        // Digest on the phones listener: offered alone, and it signs bob in.
        let mut bob = Client::connect_to(
            digest_at,
            kind(t),
            config("bob", "bob-pw", AuthScheme::Digest, 4),
        )
        .await;
        let (r, seen) = bob.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{t} bob on phones: {f}\n{}", bob.trace()));
        assert_eq!(done.status, 200);
        let first = offers(&seen[0]);
        assert!(
            !first.is_empty() && first.iter().all(|o| o.starts_with("Digest ")),
            "{t}: {first:?}"
        );

        // NTLM on its listener: offered alone, and it signs alice in.
        let mut alice = Client::connect_to(
            ntlm_at,
            kind(t),
            config("alice", "alice-pw", AuthScheme::Ntlm, 4),
        )
        .await;
        let (r, seen) = alice.sign_in().await;
        let done = r.unwrap_or_else(|f| panic!("{t} alice on ntlm: {f}\n{}", alice.trace()));
        assert_eq!(done.status, 200);
        assert!(matches!(done.signature, SignatureCheck::Verified { .. }));
        let first = offers(&seen[0]);
        assert!(
            !first.is_empty() && first.iter().all(|o| o.starts_with("NTLM ")),
            "{t}: {first:?}"
        );

        // NTLM at the Digest listener: only Digest is offered, the client has nothing to answer.
        let mut wrong = Client::connect_to(
            digest_at,
            kind(t),
            config("alice", "alice-pw", AuthScheme::Ntlm, 4),
        )
        .await;
        let (r, _) = wrong.sign_in().await;
        assert!(
            matches!(r, Err(Failure::NoCommonScheme { .. })),
            "{t}: {r:?}"
        );
        // ... and a request signed with alice's NTLM SA (valid on the NTLM listener) is challenged
        // again there, with Digest.
        alice.conn = Connection::connect(digest_at, kind(t), None)
            .await
            .expect("connect");
        let (r, seen) = alice
            .request("OPTIONS", &format!("sip:bob@{DOMAIN}"), None)
            .await;
        assert!(matches!(r, Err(Failure::SaRejected { .. })), "{t}: {r:?}");
        let again = offers(seen.last().expect("a challenge"));
        assert!(
            again.iter().all(|o| o.starts_with("Digest ")),
            "{t}: {again:?}"
        );

        // Digest at the NTLM listener: valid credentials (accepted by the phones listener with
        // the same nonce) are not taken; the answer is a fresh NTLM-only challenge.
        let mut raw = Client::connect_to(
            digest_at,
            kind(t),
            config("bob", "bob-pw", AuthScheme::Digest, 4),
        )
        .await;
        let challenge = raw
            .send_raw(&register(&raw, "bob", 1, None), WAIT)
            .await
            .expect("challenge");
        let md5 = offers(&challenge)
            .into_iter()
            .find(|o| o.contains("algorithm=MD5"))
            .expect("MD5 offered");
        let p = parse_header(&md5).expect("challenge parses");
        let ch = DigestChallenge::from_params(p.pairs()).expect("challenge");
        let ha1 = Ha1::compute(ch.algorithm.base(), "bob", ch.realm, "bob-pw");
        let creds = |nc: u32| {
            authorize(
                &ch,
                "bob",
                &ha1,
                "REGISTER",
                &format!("sip:{DOMAIN}"),
                "c0ffee",
                nc,
            )
            .expect("authorize")
            .header_value()
        };
        let ok = raw
            .send_raw(&register(&raw, "bob", 2, Some(&creds(1))), WAIT)
            .await
            .expect("answer");
        assert_eq!(
            ok.status_code(),
            Some(200),
            "{t}: the credentials are good at the phones listener"
        );
        let mut elsewhere = Client::connect_to(
            ntlm_at,
            kind(t),
            config("bob", "bob-pw", AuthScheme::Digest, 4),
        )
        .await;
        let refused = elsewhere
            .send_raw(&register(&elsewhere, "bob", 3, Some(&creds(2))), WAIT)
            .await
            .expect("answer");
        assert_eq!(refused.status_code(), Some(401), "{t}: {refused:?}");
        let o = offers(&refused);
        assert!(
            !o.is_empty() && o.iter().all(|v| v.starts_with("NTLM ")),
            "{t}: {o:?}"
        );
        // The nonce was still good: the phones listener takes its next count.
        let ok = raw
            .send_raw(&register(&raw, "bob", 4, Some(&creds(3))), WAIT)
            .await
            .expect("answer");
        assert_eq!(ok.status_code(), Some(200), "{t}");
    }
    gw.shutdown(Duration::from_secs(2)).await;
}
