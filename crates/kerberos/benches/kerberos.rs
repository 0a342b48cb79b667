//! accept() per AP-REQ and get_mic/verify_mic per message, AES and RC4,
//! against a real MIT KDC started for the bench (see tests/support).

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sagw_kerberos::initiator;
use sagw_kerberos::{KerberosAcceptor, KerberosConfig};
use support::{AES_FQDN, ALICE, ALICE_PW, KdcOptions, RC4_FQDN};

/// A typical [MS-SIPAE] signature buffer (~250 bytes).
const BUFFER: &[u8] = b"<Kerberos><41c2a0b4><3><EXAMPLE.TEST><sip/gw.example.test><6E2B01F4>\
<REGISTER><sip:alice@example.test><8a1b7c2d><sip:alice@example.test><sip:alice@example.test;tag=8a1b7c2d>\
<sip:alice@example.test><><><><200><3600>";

fn bench(c: &mut Criterion) {
    let Some(kdc) = support::kdc(KdcOptions::default()) else {
        return;
    };
    let ccache = kdc.kinit(ALICE, ALICE_PW, None);
    for (label, fqdn, keytab) in [
        ("aes", AES_FQDN, &kdc.aes_keytab),
        ("rc4", RC4_FQDN, &kdc.rc4_keytab),
    ] {
        let mut cfg = KerberosConfig::new(fqdn);
        cfg.keytab = Some(keytab.clone());
        cfg.replay_cache = Some(kdc.rcache());
        let acc = KerberosAcceptor::new(cfg).expect("acceptor");

        c.bench_function(&format!("initiate/{label} (client, cached ticket)"), |b| {
            b.iter(|| initiator::initiate(fqdn, Some(&ccache), false).expect("initiate"))
        });
        c.bench_function(&format!("accept/{label} (file2 replay cache)"), |b| {
            b.iter_batched(
                || {
                    initiator::initiate(fqdn, Some(&ccache), false)
                        .expect("initiate")
                        .0
                },
                |ap_req| acc.accept(&ap_req).expect("accept"),
                BatchSize::SmallInput,
            )
        });

        // The same with the replay cache on tmpfs, to separate the cost of
        // the file I/O (the default above lives on the temp dir's disk).
        let shm = std::path::Path::new("/dev/shm");
        if label == "aes" && shm.is_dir() {
            let rc_path = shm.join(format!("sagw-krb-bench-{}", std::process::id()));
            let mut cfg = KerberosConfig::new(fqdn);
            cfg.keytab = Some(keytab.clone());
            cfg.replay_cache = Some(format!("file2:{}", rc_path.display()));
            let acc_shm = KerberosAcceptor::new(cfg).expect("acceptor");
            c.bench_function(&format!("accept/{label} (replay cache on tmpfs)"), |b| {
                b.iter_batched(
                    || {
                        initiator::initiate(fqdn, Some(&ccache), false)
                            .expect("initiate")
                            .0
                    },
                    |ap_req| acc_shm.accept(&ap_req).expect("accept"),
                    BatchSize::SmallInput,
                )
            });
            let _ = std::fs::remove_file(&rc_path);
        }

        let (ap_req, client) = initiator::initiate(fqdn, Some(&ccache), false).unwrap();
        let server = acc.accept(&ap_req).unwrap().session;
        let client_mic = client.get_mic(BUFFER).unwrap();
        c.bench_function(&format!("get_mic/{label}"), |b| {
            b.iter(|| server.get_mic(std::hint::black_box(BUFFER)).unwrap())
        });
        c.bench_function(&format!("verify_mic/{label}"), |b| {
            b.iter(|| {
                server
                    .verify_mic(std::hint::black_box(BUFFER), &client_mic)
                    .unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
