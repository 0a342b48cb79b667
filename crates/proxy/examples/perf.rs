//! Runs one sipp workload of issue 6 (see `benches/workload.rs`) for a fixed number of flows, for
//! exact instruction counts of the proxy's steps under callgrind:
//!
//! ```sh
//! cargo build --release -p sagw-proxy --example perf
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Callgrind*' \
//!     target/release/examples/perf register 20000
//! ```
//!
//! Instructions per flow = the total `Ir` / the count. Only the proxy's steps of the measured
//! flows run inside [`Callgrind::run`]: the warm-up (reaching the steady state) and the peers'
//! side are not counted.

use sagw_sip::Message;

#[path = "../benches/workload.rs"]
mod workload;

/// The meter whose frames callgrind collects (by name: keep it out of line).
struct Callgrind;

impl workload::Meter for Callgrind {
    #[inline(never)]
    fn run(&mut self, step: impl FnOnce() -> Vec<Message>) -> Vec<Message> {
        step()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "register".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let t = std::time::Instant::now();
    match which.as_str() {
        "register" => {
            let mut load = workload::RegisterLoad::new();
            eprintln!("warm-up {:?}", t.elapsed());
            let t = std::time::Instant::now();
            for _ in 0..count {
                std::hint::black_box(load.refresh(&mut Callgrind));
            }
            eprintln!("{count} REGISTER in {:?}", t.elapsed());
        }
        "call" => {
            let mut load = workload::CallLoad::new();
            eprintln!("warm-up {:?}", t.elapsed());
            let t = std::time::Instant::now();
            for _ in 0..count {
                load.call(&mut Callgrind);
            }
            eprintln!("{count} calls in {:?}", t.elapsed());
        }
        other => {
            eprintln!("usage: perf register|call [count] (not {other:?})");
            std::process::exit(2);
        }
    }
}
