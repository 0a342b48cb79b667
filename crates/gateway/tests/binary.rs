//! The `sagw` binary: check-config, JSON logs without secrets, graceful SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sagw");

/// Waits up to 10 s for `child`, signalled to stop, to exit; it must exit 0.
fn stopped_gracefully(child: &mut std::process::Child) {
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.signal().is_none(),
            "killed by signal {:?}",
            status.signal()
        );
    }
    assert!(status.success(), "graceful exit: {status:?}");
}

/// Sends `sig` (`-HUP`, `-TERM`) to `child` with kill(1); it must be delivered.
fn signal(child: &std::process::Child, sig: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A gateway on one TCP port of loopback, JSON logs at info, no metrics, no authentication.
const TCP_ONLY_JSON: &str = "[log]\nlevel = \"info\"\nformat = \"json\"\n[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[metrics]\nlisten = \"\"\n[auth]\nenabled = false\n";

/// A warning of another test's concern than the spoofable-trust test's.
fn is_another_warning(line: &str) -> bool {
    line.contains("authentication is disabled") || line.contains("is not in proxy.trusted_peers")
}

/// What `sagw check-config` writes on standard error for `cfg` (its warnings), which it accepts.
fn check_config_warnings(cfg: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sagw-bin-{}-{name}", std::process::id()))
}

#[test]
fn check_config_accepts_the_default_and_names_bad_keys() {
    let out = Command::new(BIN).arg("check-config").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK (embedded default)"));

    let bad = temp("bad.toml");
    std::fs::write(&bad, "[timers]\nt1_ms = 0\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`timers.t1_ms`"));

    std::fs::write(&bad, "[proxy]\nmodee = \"edge\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("modee"));

    // The retired handshake caps still load, with a warning each.
    std::fs::write(
        &bad,
        "[auth]\npending_max = 65536\npending_max_per_source = 32\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("auth.pending_max is deprecated and ignored"),
        "{err}"
    );
    assert!(
        err.contains("auth.pending_max_per_source is deprecated"),
        "{err}"
    );
    let _ = std::fs::remove_file(&bad);
}

/// check-config prints what each policy offers to whom, and refuses policies the gateway cannot
/// serve: Kerberos without a keytab under "refuse", a policy left empty under "skip", a bad
/// User-Agent pattern, a listener naming an unknown policy.
#[test]
fn check_config_shows_and_checks_the_policies() {
    let out = Command::new(BIN).arg("check-config").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("policy default: digest (SHA-256, MD5; realm example.com)"),
        "{text}"
    );
    assert!(
        text.contains("policy md5-only: digest (MD5; realm example.com)"),
        "{text}"
    );
    assert!(text.contains("User-Agent ~ ^(baresip|libre)"), "{text}");
    assert!(text.contains("policy mssipae: "), "{text}");
    assert!(text.contains("(epid in From)"), "{text}");

    let f = temp("policies.toml");
    let keytab = temp("no.keytab");
    let check = |body: &str| {
        std::fs::write(&f, body).unwrap();
        Command::new(BIN)
            .env("KRB5_KTNAME", format!("FILE:{}", keytab.display()))
            .args(["check-config", "--config"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = check(&format!(
        "[auth]\nkerberos_keytab = \"{}\"\n[auth.policy.lync]\nschemes = [\"kerberos\", \"ntlm\"]\n",
        keytab.display()
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`auth.policy.lync.schemes`: offers kerberos, which the gateway cannot serve"),
        "{err}"
    );

    let out = check(&format!(
        "[auth]\nkerberos_keytab = \"{}\"\nkerberos_without_keytab = \"skip\"\n[auth.policy.krb]\nschemes = [\"kerberos\"]\n",
        keytab.display()
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`auth.policy.krb.schemes`: offers only kerberos"),
        "{err}"
    );

    let out = check("[[auth.client]]\nuser_agent = \"[\"\npolicy = \"default\"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`auth.client[0].user_agent`"));

    let out = check("[auth.listener.tls]\npolicy = \"lync\"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("`auth.listener.tls.policy`: no policy is named `lync`")
    );
    let _ = std::fs::remove_file(&f);
}

/// Trust by source address is spoofable over UDP: check-config and the start-up log say so, naming
/// each trusted peer and UDP next hop, and say nothing when servers are reached over TCP or TLS.
#[test]
fn trust_by_a_spoofable_udp_source_address_is_warned_about() {
    let cfg = temp("trust.toml");
    std::fs::write(
        &cfg,
        "[proxy]\nmode = \"edge\"\nnext_hops = [\"udp:192.0.2.10:5060\", \"tcp:192.0.2.11:5060\"]\n\
         trusted_peers = [\"192.0.2.20\"]\n[auth]\nenabled = false\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Besides the one about authentication being off on listeners open to all (below), and the
    // one about a TCP next hop not in trusted_peers (its own test).
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("warning") && !is_another_warning(l))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    let peer = warnings
        .iter()
        .find(|l| l.contains("192.0.2.20"))
        .expect("peer warned");
    assert!(
        peer.contains("trusted_peers") && peer.contains("forge"),
        "{peer}"
    );
    let hop = warnings
        .iter()
        .find(|l| l.contains("udp:192.0.2.10:5060"))
        .expect("hop warned");
    assert!(hop.contains("next_hops") && hop.contains("tls"), "{hop}");
    assert!(
        !warnings.iter().any(|l| l.contains("192.0.2.11")),
        "a TCP next hop is not spoofable: {err}"
    );
    let tcp_hop = err
        .lines()
        .find(|l| l.contains("tcp:192.0.2.11:5060 is not in proxy.trusted_peers"))
        .unwrap_or_else(|| panic!("a TCP next hop outside trusted_peers, in edge mode: {err}"));
    assert!(tcp_hop.contains("challenged"), "{tcp_hop}");

    // Servers over TCP only and no UDP listener: nothing to forge.
    std::fs::write(
        &cfg,
        "[listen]\nudp = \"\"\n[proxy]\nmode = \"edge\"\nnext_hops = [\"tcp:192.0.2.11:5060\"]\n\
         trusted_peers = [\"192.0.2.20\"]\n[auth]\nenabled = false\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.lines()
            .any(|l| l.contains("warning") && !is_another_warning(l)),
        "{err}"
    );

    // A next hop by name that DNS may resolve to UDP targets is warned about; one whose
    // transport is named is not.
    std::fs::write(
        &cfg,
        "[listen]\nudp = \"\"\n[proxy]\nmode = \"edge\"\n\
         next_hops = [\"sip:maybe-udp.invalid\", \"sip:tcp-only.invalid;transport=tcp\"]\n\
         [auth]\nenabled = false\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("maybe-udp.invalid") && l.contains("UDP")),
        "{err}"
    );
    assert!(
        !warnings.iter().any(|l| l.contains("tcp-only.invalid")),
        "{err}"
    );
    let _ = std::fs::remove_file(&cfg);
}

/// Authentication off with listeners open beyond the host, and a metrics listener open beyond
/// it, are warned about by check-config (and at start): a benchmark's configuration started in
/// production made an open relay with one line in the start log.
#[test]
fn listeners_open_to_all_without_authentication_are_warned_about() {
    let cfg = temp("open.toml");
    let check = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        check_config_warnings(&cfg)
    };
    let err = check("[metrics]\nlisten = \"0.0.0.0:9464\"\n[auth]\nenabled = false\n");
    let open = err
        .lines()
        .find(|l| l.contains("warning") && l.contains("authentication is disabled"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        open.contains("0.0.0.0:5060") && open.contains("0.0.0.0:5061"),
        "{open}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains("metrics.listen = 0.0.0.0:9464")),
        "{err}"
    );
    // On loopback only, or with authentication on: neither.
    let err = check(
        "[listen]\nudp = \"127.0.0.1:5060\"\ntcp = \"127.0.0.1:5060\"\ntls = \"127.0.0.1:5061\"\n\
         [auth]\nenabled = false\n",
    );
    assert!(!err.contains("authentication is disabled"), "{err}");
    let err = check("");
    assert!(
        !err.contains("authentication is disabled") && !err.contains("metrics.listen"),
        "{err}"
    );
    let _ = std::fs::remove_file(&cfg);
}

#[test]
fn runs_logs_json_without_secrets_and_stops_on_sigterm() {
    let cfg = temp("run.toml");
    let data = temp("data");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:0\"\n[tls]\ngenerated_dir = \"{}\"\n[metrics]\nlisten = \"\"\n[auth]\nenabled = false\n[proxy]\nworkers = \"3\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "--config",
        ])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut tcp = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tcp.is_none() && Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("sagw listening") {
            // "tcp":"Some(127.0.0.1:PORT)"
            let start = line.find("\"tcp\":\"Some(").unwrap() + 12;
            let end = start + line[start..].find(')').unwrap();
            tcp = Some(line[start..end].to_owned());
        }
        lines.push(line);
    }
    let tcp = tcp.expect("listening line");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"starting\"") && l.contains("\"workers\":3")),
        "the runtime's worker count (proxy.workers) is in the start line: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("sha256")),
        "certificate fingerprint logged"
    );
    let mut s = TcpStream::connect(&tcp).unwrap();
    let secret = "TlRMTVNTUAADAAAAGAAYAHAAAAAYSECRET";
    let reg = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKbin\r\n\
From: <sip:a@example.com>;tag=1;epid=e\r\nTo: <sip:a@example.com>\r\nCall-ID: bin\r\nCSeq: 1 REGISTER\r\n\
Proxy-Authorization: NTLM qop=\"auth\", gssapi-data=\"{secret}\"\r\nContact: <sip:a@127.0.0.1:1;transport=tcp>\r\n\
Content-Length: 0\r\n\r\n"
    );
    s.write_all(reg.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));

    signal(&child, "-TERM");
    stopped_gracefully(&mut child);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    lines.extend(rest.lines().map(str::to_owned));
    let all = lines.join("\n");
    assert!(all.contains("recv"), "trace logs show SIP messages");
    assert!(all.contains("<redacted>"));
    assert!(!all.contains(secret), "a credential reached the log");
    assert!(all.contains("stopped"));
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        assert!(l.trim_start().starts_with('{'), "not JSON: {l}");
    }
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_dir_all(&data);
}

/// A SIGHUP sent the moment the gateway says it listens reloads it. Before, the handlers were
/// installed only after that line: a SIGHUP in between took the default action and ended the
/// process (CI saw it, killed by signal 1, in `a_reload_keeps_the_filter_rust_log_set`).
#[test]
fn a_sighup_the_moment_the_gateway_listens_reloads_it() {
    let cfg = temp("hup-at-once.toml");
    std::fs::write(&cfg, TCP_ONLY_JSON).unwrap();
    for round in 0..3 {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut saw = |what: &str| loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                return false;
            }
            if line.contains(what) {
                return true;
            }
        };
        assert!(
            saw("sagw listening"),
            "round {round}: the gateway did not start"
        );
        signal(&child, "-HUP");
        assert!(
            saw("configuration reloaded"),
            "round {round}: the gateway ended on the SIGHUP instead of reloading: {:?}",
            child.wait()
        );
        signal(&child, "-TERM");
        stopped_gracefully(&mut child);
    }
    let _ = std::fs::remove_file(&cfg);
}

/// `RUST_LOG` outranks `log.level` (docs/configuration.md), and keeps doing so across reloads, as
/// `--log-level` does: before, a reload put the file's `log.level` in place of `RUST_LOG`'s filter.
#[test]
fn a_reload_keeps_the_filter_rust_log_set() {
    let cfg = temp("rust-log.toml");
    std::fs::write(&cfg, TCP_ONLY_JSON).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,sagw_gateway::driver=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    while !listening && Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        listening = line.contains("sagw listening");
    }
    assert!(listening, "the gateway did not start");
    // The file's level changed, then two reloads: the second one's own lines would show under a
    // filter the first one changed.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    for _ in 0..2 {
        signal(&child, "-HUP");
        std::thread::sleep(Duration::from_millis(700));
    }
    signal(&child, "-TERM");
    stopped_gracefully(&mut child);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let shown: Vec<&str> = rest
        .lines()
        .filter(|l| {
            (l.contains("\"level\":\"INFO\"") || l.contains("\"level\":\"DEBUG\""))
                && !l.contains("sagw_gateway::driver")
        })
        .collect();
    assert!(
        shown.is_empty(),
        "info lines under RUST_LOG=warn after a reload: {shown:#?}"
    );
    let _ = std::fs::remove_file(&cfg);
}

/// check-config reads the files a start would refuse: the credentials file (a user twice) and the
/// TLS private keys (readable by others), naming the key to fix; before, both passed here and the
/// start failed.
#[test]
fn check_config_reads_the_credentials_file_and_the_tls_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let users = dir.path().join("users");
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let pair = rcgen::KeyPair::generate().unwrap();
    let c = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    std::fs::write(&cert, c.pem()).unwrap();
    std::fs::write(&key, pair.serialize_pem()).unwrap();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&key, 0o600);
    let nt = "8846F7EAEE8FB117AD06BDD830B7586C";
    std::fs::write(&users, format!("alice nt {nt}\nbob nt {nt}\n")).unwrap();
    mode(&users, 0o600);
    let cfg = dir.path().join("sagw.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"127.0.0.1:0\"\n[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n[metrics]\nlisten = \"\"\n[admin]\nlisten = \"\"\n[auth]\nschemes = [\"ntlm\"]\ncredentials = \"{d}/users\"\n[state]\nkey_file = \"{d}/pool.key\"\nsnapshot = \"\"\n"
        ),
    )
    .unwrap();
    let check = || {
        Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(2 users)"), "{text}");
    assert!(text.contains("TLS private key:"), "{text}");

    std::fs::write(&users, format!("alice nt {nt}\nALICE nt {nt}\n")).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`auth.credentials`") && err.contains("line 2") && !err.contains(nt),
        "{err}"
    );

    std::fs::write(&users, format!("alice nt {nt}\n")).unwrap();
    mode(&key, 0o644);
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`tls.key`") && err.contains("chmod 600"),
        "{err}"
    );

    // A key that is not the certificate's, and a next hops' CA that is not there: a start fails
    // on each, and so does check-config (it said OK to both).
    mode(&key, 0o600);
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2), "a key of another certificate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`tls.cert`"), "{err}");
    std::fs::write(&key, pair.serialize_pem()).unwrap();
    assert!(check().status.success());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "[tls]\n",
            &format!("[tls]\nnext_hop_ca = \"{d}/nowhere.pem\"\n"),
        ),
    )
    .unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2), "a missing next-hop CA");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere.pem"), "{err}");
}

/// Users added under one SIP domain have Digest HA1 values for that realm only: once the domain
/// (the default Digest realm) changes, Digest refuses them all as unknown. check-config says so,
/// with the count and the remedy; before, it printed "configuration OK".
#[test]
fn users_without_an_ha1_for_the_realm_in_force_are_warned_about() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = dir.path().join("sagw.toml");
    let write = |domain: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n[metrics]\nlisten = \"\"\n[admin]\nlisten = \"\"\n\
                 [auth]\nschemes = [\"ntlm\", \"digest\"]\nsip_domain = \"{domain}\"\ncredentials = \"{d}/users\"\n\
                 [state]\nkey_file = \"{d}/pool.key\"\nsnapshot = \"\"\n"
            ),
        )
        .unwrap();
    };
    write("a.example");
    let mut add = Command::new(BIN)
        .args(["--config"])
        .arg(&cfg)
        .args(["user", "add", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"alice-pw\n").unwrap();
    assert!(add.wait().unwrap().success());
    let check = || check_config_warnings(&cfg);
    assert!(!check().contains("no Digest HA1"), "{}", check());
    write("b.example");
    let err = check();
    assert!(
        err.contains("1 of 1 users have no Digest HA1 for realm \"b.example\"")
            && err.contains("sagw user add"),
        "{err}"
    );
}

/// check-config writes nothing: a generated certificate that is not for `tls.subject_names` is
/// reported and left as it is (run as another user, making it again would leave a key the
/// service cannot read); the start makes it again.
#[test]
fn check_config_leaves_a_generated_certificate_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = dir.path().join("sagw.toml");
    let write = |names: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[listen]\nudp = \"\"\ntcp = \"\"\ntls = \"127.0.0.1:0\"\n[tls]\ngenerated_dir = \"{d}/gen\"\nsubject_names = [{names}]\n\
                 [metrics]\nlisten = \"\"\n[admin]\nlisten = \"\"\n[auth]\nenabled = false\n\
                 [state]\nkey_file = \"{d}/pool.key\"\nsnapshot = \"\"\n"
            ),
        )
        .unwrap();
    };
    write("\"localhost\"");
    // Made by a start's loading of it (the same function), not by check-config.
    let settings = sagw_gateway::Config::parse(&std::fs::read_to_string(&cfg).unwrap())
        .unwrap()
        .validate()
        .unwrap();
    sagw_gateway::tls::load_identity(&settings.cert).expect("generated");
    let key = dir.path().join("gen/sagw-key.pem");
    let before = std::fs::read(&key).unwrap();
    write("\"localhost\", \"sip.example.com\"");
    let out = Command::new(BIN)
        .args(["check-config", "--offline", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("is not for tls.subject_names"), "{text}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was left as it was"
    );
}

/// A TCP next hop in edge mode is warned about until its address is a trusted peer: a server
/// that sends the clients' requests over a connection of its own is challenged otherwise (what
/// tests/edge_registrar.rs shows with Kamailio).
#[test]
fn a_tcp_next_hop_outside_trusted_peers_is_warned_about_in_edge_mode() {
    let cfg = temp("tcp_hop.toml");
    let base = "[listen]\nudp = \"\"\ntcp = \"127.0.0.1:0\"\ntls = \"\"\n[proxy]\nmode = \"edge\"\nnext_hops = [\"tcp:192.0.2.11:5060\"]\n";
    std::fs::write(&cfg, base).unwrap();
    let err = check_config_warnings(&cfg);
    assert!(
        err.contains("tcp:192.0.2.11:5060 is not in proxy.trusted_peers"),
        "{err}"
    );
    std::fs::write(&cfg, format!("{base}trusted_peers = [\"192.0.2.11\"]\n")).unwrap();
    let err = check_config_warnings(&cfg);
    assert!(!err.contains("is not in proxy.trusted_peers"), "{err}");
    let _ = std::fs::remove_file(&cfg);
}
