//! The gateway binary. The socket driver arrives with the gateway issue; until then it only
//! states what it is, so nobody mistakes it for a working edge.

fn main() {
    eprintln!("sagw: the network driver is not built yet; the security core lives in crates/auth");
    std::process::exit(2);
}
