//! The security core's per-message and per-handshake server CPU, beside the crypto floor measured on
//! the same buffer in the same run: one HMAC-MD5 pass (what a signature must cost at least) and
//! HMAC-MD5 plus a fresh RC4 key schedule (what a naive connectionless MAC costs).

#[path = "sa_fixture.rs"]
mod sa_fixture;
#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use rc4::StreamCipher;
use sagw_auth::{
    Binding, BufferParams, ChallengeFamily, Counters, Decision, Opaque, SaManager,
    SecurityAssociation, SignatureBuffer, XorShiftRng,
};
use sagw_sip::Message;
use support::*;

const REGISTER_200: &[u8] =
    include_bytes!("../../../../shared/reference/flows/oc2007r2-register-200ok.sip");

/// Counts allocations (and reallocations, which may move) and their bytes, so that the bench can
/// print what one sign, one verification and one sign-in allocate. Two relaxed atomic adds per
/// allocation; the timed figures carry that small cost for code that allocates.
struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f`, adding the allocations and bytes it made to `total`.
fn counting<R>(total: &mut (u64, u64), f: impl FnOnce() -> R) -> R {
    let count = || {
        (
            ALLOCS.load(Ordering::Relaxed),
            ALLOC_BYTES.load(Ordering::Relaxed),
        )
    };
    let (a0, b0) = count();
    let r = f();
    let (a1, b1) = count();
    total.0 += a1 - a0;
    total.1 += b1 - b0;
    r
}

/// Prints allocations and bytes per unit of `total`, counted over `n` units.
fn print_allocations(what: &str, n: u64, total: (u64, u64)) {
    println!(
        "allocations per {what}: {:.2} ({:.0} bytes)",
        total.0 as f64 / n as f64,
        total.1 as f64 / n as f64
    );
}

/// Allocations and bytes per call of `f` over `n` calls, printed beside the criterion figures.
fn report_allocations(what: &str, n: u64, mut f: impl FnMut()) {
    let mut total = (0, 0);
    counting(&mut total, || {
        for _ in 0..n {
            f();
        }
    });
    print_allocations(what, n, total);
}

fn established(core: &sagw_auth::SecurityCore, c: &mut NtlmClient) -> sagw_auth::SaHandle {
    let mut rng = rng();
    match c.sign_in(core, t0(), &mut rng) {
        Decision::Authenticated(a) => match a.binding {
            Binding::Sa { sa, .. } => sa,
            Binding::Digest { .. } => unreachable!("NTLM"),
        },
        other => panic!("sign-in failed: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let core = core();
    let mut client = NtlmClient::new("alice", "alice-pw", "0a0b0c0d0e");
    let sa = established(&core, &mut client);

    // The buffer a typical REGISTER 200 OK signs (vector A's layout, 193 bytes).
    let ok = Message::parse(REGISTER_200).expect("200 OK");
    let buffer = SignatureBuffer::build(
        &ok,
        &BufferParams {
            scheme: "NTLM",
            rand: "9616454F",
            num: "1",
            realm: REALM,
            targetname: TARGET,
            version: 4,
        },
    );
    report_allocation_counts(&core, &sa, &mut client, &ok);

    let key = [0x42u8; 16];
    let mut g = c.benchmark_group("floor");
    g.bench_function("hmac_md5", |b| {
        b.iter(|| {
            let mut m = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(&key).expect("key");
            m.update(&100u32.to_le_bytes());
            m.update(black_box(buffer.as_bytes()));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("hmac_md5+rc4_key_schedule", |b| {
        b.iter(|| {
            let mut m = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(&key).expect("key");
            m.update(&100u32.to_le_bytes());
            m.update(black_box(buffer.as_bytes()));
            let mac = m.finalize().into_bytes();
            let mut out = [0u8; 8];
            out.copy_from_slice(&mac[..8]);
            let mut rc4 = <rc4::Rc4 as rc4::KeyInit>::new_from_slice(black_box(&key)).expect("key");
            rc4.apply_keystream(&mut out);
            black_box(out)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("core");
    g.bench_function("signature_buffer_200ok", |b| {
        let params = BufferParams {
            scheme: "NTLM",
            rand: "9616454F",
            num: "1",
            realm: REALM,
            targetname: TARGET,
            version: 4,
        };
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            SignatureBuffer::write(black_box(&ok), &params, &mut out);
            black_box(out.len())
        })
    });
    // A fresh copy of the 200 OK per call (made outside the timing): signing one message over and
    // over would grow its edit arena by a header per call, which no response does.
    g.bench_function("sign_register_200ok", |b| {
        let mut rng = rng();
        b.iter_batched_ref(
            || ok.clone(),
            |msg| {
                core.sign(msg, &sa, ChallengeFamily::Www, t0(), &mut rng)
                    .expect("sign");
            },
            BatchSize::SmallInput,
        )
    });
    // The transport context is made once, outside the timed code: parsing its address from text
    // is the harness's work, not the core's.
    let ctx = ctx();
    g.bench_function("verify_signed_register", |b| {
        let mut rng = rng();
        let mut client_rng = XorShiftRng::new(99);
        b.iter_batched(
            || {
                let text = client.request("REGISTER", &["Expires: 3600"]);
                client.signed(&text, &mut client_rng)
            },
            |m| {
                let d = core.on_request(&m, &ctx, t0(), &mut rng);
                assert!(matches!(d, Decision::Authenticated(_)));
            },
            BatchSize::SmallInput,
        )
    });
    // The stateless NTLM challenge: HMAC-SHA256 of (opaque, window, epid) under the challenge
    // key, computed once at leg 1 and once at leg 3.
    g.bench_function("ntlm_challenge_mac", |b| {
        use sagw_auth::ChallengeSource as _;
        let key = sagw_auth::ChallengeKey::new(&[0x42; 32]);
        let mut o = 0u32;
        b.iter(|| {
            o = o.wrapping_add(1);
            black_box(key.server_challenge(Opaque(o), black_box("0a0b0c0d0e"), 58_920_120))
        })
    });
    // Server CPU per full NTLM sign-in: leg 1 (challenge) + leg 3 (AUTHENTICATE, v4 signature); the
    // client's work in between is not timed. The clock moves 1 ms per sign-in (1 000 sign-ins a
    // second), so the table of final legs kept for one-time use holds what it would at that rate
    // (two 30 s windows' worth) instead of every sign-in of the run. The clock and the randomness
    // live across samples (criterion calls this closure once per sample): restarting them would
    // draw the same opaques again, each already remembered as used.
    let mut handshake_rng = rng();
    let mut n = 0u64;
    g.bench_function("ntlm_handshake_server_cpu", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                n += 1;
                let now = t0() + Duration::from_millis(n);
                let mut c = NtlmClient::new("alice", "alice-pw", &format!("{i:010x}"));
                let leg1 = c.leg1("REGISTER");
                let t = Instant::now();
                let d = core.on_request(&leg1, &ctx, now, &mut handshake_rng);
                total += t.elapsed();
                let Decision::Continue(ch) = d else {
                    panic!("leg 2")
                };
                let leg3 = c.leg3("REGISTER", &ch, now, &mut handshake_rng);
                let t = Instant::now();
                let d = core.on_request(&leg3, &ctx, now, &mut handshake_rng);
                total += t.elapsed();
                assert!(matches!(d, Decision::Authenticated(_)));
                if n.is_multiple_of(1024) {
                    core.expire(now);
                }
            }
            total
        })
    });
    g.finish();

    cpu_time_group(c, &ok, &buffer, &ctx);

    // A Digest refusal for a known user with a wrong password and for a user the store does not
    // have: the unknown one is checked against a decoy HA1, so both cost the nonce MAC and a
    // response computation and the time does not tell which users exist.
    let mut g = c.benchmark_group("digest_refusal");
    let mut rng = rng();
    let register = |user: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKd\r\n\
             From: <sip:{user}@example.com>;tag=f\r\nTo: <sip:{user}@example.com>\r\nCall-ID: d-{user}\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:{user}@192.0.2.9:5060>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let offer = match core.on_request(&parse(&register("alice")), &ctx, t0(), &mut rng) {
        Decision::Challenge(ch) => ch
            .headers
            .iter()
            .map(|(_, v)| v.clone())
            .find(|v| v.starts_with("Digest ") && v.contains("SHA-256"))
            .expect("a SHA-256 Digest challenge"),
        other => panic!("challenge expected: {other:?}"),
    };
    for user in ["alice", "mallory"] {
        let hp = sagw_digest::client::parse_header(&offer).expect("challenge");
        let ch = sagw_digest::client::Challenge::from_params(hp.pairs()).expect("params");
        let ha1 = sagw_digest::Ha1::compute(ch.algorithm.base(), user, ch.realm, "wrong-pw");
        let creds = sagw_digest::client::authorize(
            &ch,
            user,
            &ha1,
            "REGISTER",
            "sip:example.com",
            "0a4f113b",
            1,
        )
        .expect("authorize")
        .header_value();
        let mut m = parse(&register(user));
        m.push_header("Authorization", &creds);
        let name = if user == "alice" {
            "known_user_wrong_password_sha256"
        } else {
            "unknown_user_sha256"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let d = core.on_request(black_box(&m), &ctx, t0(), &mut rng);
                assert!(matches!(d, Decision::Challenge(_)));
                d
            })
        });
    }
    g.finish();

    // Lookup among 1 M established SAs.
    let manager: SaManager = SaManager::new(sagw_auth::manager::ManagerLimits {
        recent_final_legs_max: 16,
    });
    let counters = Counters::default();
    manager.reserve(1_000_000);
    let esk = sagw_ntlm::Key16::from_bytes([7; 16]);
    let mut opaques = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000u32 {
        let opaque = Opaque(i.wrapping_mul(2_654_435_761));
        let session =
            sagw_ntlm::NtlmSession::from_exported_session_key(&esk, 0x6298_8255).expect("session");
        manager
            .establish(
                SecurityAssociation::new(sa_fixture::new_sa(opaque, i, session)),
                &counters,
            )
            .expect("distinct opaques");
        opaques.push(opaque);
    }
    let mut g = c.benchmark_group("sa_manager_1M");
    g.bench_function("lookup", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7919) % opaques.len();
            black_box(manager.lookup(opaques[i], 1_767_603_601, &counters))
        })
    });
    g.finish();
}

/// CPU time of the calling thread: unlike the wall clock, it does not count the time this thread
/// waited for a CPU while other work (a fuzz campaign, builds) ran on the shared machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `iters` calls in rounds of at most `max` (each round makes its inputs, then times its
/// calls) and adds up the rounds' times.
fn in_rounds(iters: u64, max: u64, mut round: impl FnMut(u64) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(max);
        left -= n;
        total += round(n);
    }
    total
}

/// The floor, sign, verification and sign-in again, timed with the thread's CPU clock (read
/// once per batch, outside the loop of calls; inputs made before the clock starts).
fn cpu_time_group(
    c: &mut Criterion,
    ok: &Message,
    buffer: &SignatureBuffer,
    ctx: &sagw_auth::TransportContext,
) {
    // A core and SA of their own: the wall-clock sign-in bench above signs `alice` in thousands
    // of times, which ends the SA made before it (16 SAs per identity).
    let core = &support::core();
    let mut client = NtlmClient::new("alice", "alice-pw", "0c0d0e0f10");
    let sa = &established(core, &mut client);
    let mut g = c.benchmark_group("cpu_time");
    let key = [0x42u8; 16];
    g.bench_function("floor_hmac_md5", |b| {
        b.iter_custom(|iters| {
            let t = thread_cpu();
            for _ in 0..iters {
                let mut m = <hmac::Hmac<md5::Md5> as KeyInit>::new_from_slice(&key).expect("key");
                m.update(&100u32.to_le_bytes());
                m.update(black_box(buffer.as_bytes()));
                black_box(m.finalize().into_bytes());
            }
            thread_cpu() - t
        })
    });
    // Each call signs a fresh copy of the 200 OK, as the gateway signs each response once. The
    // copies are made in rounds of 64, outside the clock: just made, they are in the cache as a
    // response the gateway has just built would be.
    g.bench_function("sign_register_200ok", |b| {
        let mut rng = rng();
        b.iter_custom(|iters| {
            in_rounds(iters, 64, |round| {
                let mut msgs: Vec<Message> = (0..round).map(|_| ok.clone()).collect();
                let t = thread_cpu();
                for m in &mut msgs {
                    core.sign(m, sa, ChallengeFamily::Www, t0(), &mut rng)
                        .expect("sign");
                }
                thread_cpu() - t
            })
        })
    });
    g.bench_function("verify_signed_register", |b| {
        let mut rng = rng();
        let mut client_rng = XorShiftRng::new(98);
        // Requests made in rounds of 64 outside the clock (in the cache, as a request the gateway
        // has just parsed is).
        b.iter_custom(|iters| {
            in_rounds(iters, 64, |round| {
                let requests: Vec<Message> = (0..round)
                    .map(|_| {
                        let text = client.request("REGISTER", &["Expires: 3600"]);
                        client.signed(&text, &mut client_rng)
                    })
                    .collect();
                let t = thread_cpu();
                for m in &requests {
                    let d = core.on_request(m, ctx, t0(), &mut rng);
                    assert!(matches!(d, Decision::Authenticated(_)));
                }
                thread_cpu() - t
            })
        })
    });
    // A core of its own, so that these sign-ins do not end the SA the benches above sign with.
    let signin_core = support::core();
    let mut handshake_rng = rng();
    let mut n = 0u64;
    g.bench_function("ntlm_handshake_server_cpu", |b| {
        b.iter_custom(|iters| {
            // In rounds of at most 1 000 sign-ins, 1 ms apart, as in `core/...` above.
            in_rounds(iters, 1000, |round| {
                let start = n;
                n += round;
                let at = |k: u64| t0() + Duration::from_millis(start + k + 1);
                let mut clients: Vec<NtlmClient> = (0..round)
                    .map(|k| NtlmClient::new("alice", "alice-pw", &format!("{:010x}", start + k)))
                    .collect();
                let leg1s: Vec<Message> = clients.iter_mut().map(|c| c.leg1("REGISTER")).collect();
                let t = thread_cpu();
                let challenges: Vec<Decision> = leg1s
                    .iter()
                    .enumerate()
                    .map(|(k, m)| signin_core.on_request(m, ctx, at(k as u64), &mut handshake_rng))
                    .collect();
                let mut spent = thread_cpu() - t;
                let leg3s: Vec<Message> = clients
                    .iter_mut()
                    .zip(&challenges)
                    .enumerate()
                    .map(|(k, (c, d))| {
                        let Decision::Continue(ch) = d else {
                            panic!("leg 2")
                        };
                        c.leg3("REGISTER", ch, at(k as u64), &mut handshake_rng)
                    })
                    .collect();
                let t = thread_cpu();
                for (k, m) in leg3s.iter().enumerate() {
                    let d = signin_core.on_request(m, ctx, at(k as u64), &mut handshake_rng);
                    assert!(matches!(d, Decision::Authenticated(_)));
                }
                spent += thread_cpu() - t;
                signin_core.expire(at(round));
                spent
            })
        })
    });
    g.finish();
}

/// What one sign (of a fresh copy of the recorded 200 OK), one verification of a signed REGISTER
/// and one server side of an NTLM sign-in allocate; the messages are made outside the count.
fn report_allocation_counts(
    core: &sagw_auth::SecurityCore,
    sa: &sagw_auth::SaHandle,
    client: &mut NtlmClient,
    ok: &Message,
) {
    const N: u64 = 1000;
    let mut rng = rng();
    let mut oks: Vec<Message> = (0..N).map(|_| ok.clone()).collect();
    report_allocations("sign of the recorded 200 OK", N, || {
        let mut m = oks.pop().expect("one per call");
        core.sign(&mut m, sa, ChallengeFamily::Www, t0(), &mut rng)
            .expect("sign");
        drop(m);
    });
    let mut client_rng = XorShiftRng::new(7);
    let mut requests: Vec<Message> = (0..N)
        .map(|_| {
            let text = client.request("REGISTER", &["Expires: 3600"]);
            client.signed(&text, &mut client_rng)
        })
        .collect();
    requests.reverse();
    report_allocations("verification of a signed REGISTER", N, || {
        let m = requests.pop().expect("one per call");
        let d = core.on_request(&m, &ctx(), t0(), &mut rng);
        assert!(matches!(d, Decision::Authenticated(_)));
        drop(m);
    });
    // The server side of sign-ins: leg 1 and leg 3 counted, the client's messages made outside.
    // A core of their own: a thousand sign-ins of one identity would end the benches' SA.
    let core = &support::core();
    let ctx = ctx();
    let mut total = (0, 0);
    for i in 0..N {
        let mut c = NtlmClient::new("alice", "alice-pw", &format!("{:010x}", 0xA000_0000 + i));
        let leg1 = c.leg1("REGISTER");
        let d = counting(&mut total, || core.on_request(&leg1, &ctx, t0(), &mut rng));
        let Decision::Continue(ch) = d else {
            panic!("leg 2")
        };
        let leg3 = c.leg3("REGISTER", &ch, t0(), &mut rng);
        let d = counting(&mut total, || core.on_request(&leg3, &ctx, t0(), &mut rng));
        assert!(matches!(d, Decision::Authenticated(_)));
    }
    print_allocations("NTLM sign-in (server side, leg 1 + leg 3)", N, total);
}

criterion_group!(benches, bench);
criterion_main!(benches);
