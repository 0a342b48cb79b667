//! The floor of the sipp Digest REGISTER flow over UDP (issue 16): what answering those datagrams
//! costs a server that does nothing else. It reads and writes them as the gateway's core thread
//! does (one pinned thread, `epoll` through mio, batches of 32 through `recvmmsg` / `sendmmsg`)
//! and answers each REGISTER statelessly from its own headers: 401 with a fixed Digest challenge
//! when it carries no `Authorization`, else 200 with its Contact. It checks nothing, keeps
//! nothing, allocates nothing per datagram: the remaining cost is the kernel's (the system calls,
//! the loopback delivery of each answer, which wakes the sipp waiting for it, and the sleeps and
//! wake-ups of this thread) plus a copy of a few headers. `scripts/bench-sipp.sh --servers
//! kamailio,sagw,floor --auth --scenarios register` runs it beside the two servers, so a run shows
//! how much of each server's CPU a flow is the part no server can avoid on that host.
//!
//! ```sh
//! cargo build --release -p sagw-gateway --example udp_floor
//! target/release/examples/udp_floor 127.0.0.1:15064 [open]
//! ```
//!
//! `open`: every REGISTER gets its 200 at once (the bench without `--auth`).
//!
//! Not a SIP server: no retransmission handling, no validation, answers only what the bench sends.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams per system call, as the gateway's core thread.
const BATCH: usize = 32;
/// A receive slot: the bench's REGISTERs are well under this.
const SLOT: usize = 4096;
/// The challenge: sipp's `auth="true"` answers it; the second REGISTER is not checked.
const CHALLENGE: &[u8] = b"WWW-Authenticate: Digest realm=\"sagw.bench\", \
nonce=\"Zmxvb3ItYmVuY2gtbm9uY2UtMDEyMzQ1Njc4OWFiY2RlZg\", algorithm=MD5, qop=\"auth\"\r\n";

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15064".into())
        .parse()
        .unwrap_or_else(|e| fail(&format!("the address to bind: {e}")));
    // Pinned like the gateway's core thread (`proxy.core_cpu = "auto"`: the last allowed CPU).
    if let Some(last) = core_affinity::get_core_ids().and_then(|ids| ids.last().copied()) {
        core_affinity::set_for_current(last);
    }
    let open = std::env::args().nth(2).as_deref() == Some("open");
    let mut socket = bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let mut poll = Poll::new().unwrap_or_else(|e| fail(&format!("epoll: {e}")));
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)
        .unwrap_or_else(|e| fail(&format!("register: {e}")));
    let fd = socket.as_raw_fd();
    let mut events = Events::with_capacity(8);
    let mut rx = vec![0u8; SLOT * BATCH];
    let mut tx = vec![0u8; SLOT * BATCH];
    let mut rx_headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut tx_headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut got: [(usize, Option<SockaddrStorage>); BATCH] = [(0, None); BATCH];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            fail(&format!("epoll_wait: {e}"));
        }
        // Edge-triggered: read until a batch comes back short (the socket is then empty).
        loop {
            let n = {
                let mut slots = rx.chunks_exact_mut(SLOT);
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
                match recvmmsg(
                    fd,
                    &mut rx_headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        let mut n = 0;
                        for (slot, r) in got.iter_mut().zip(results) {
                            *slot = (r.bytes, r.address);
                            n += 1;
                        }
                        n
                    }
                    Err(nix::errno::Errno::EAGAIN) => 0,
                    // An ICMP error reported on the socket, say: the datagrams behind it are
                    // read on, as the gateway does.
                    Err(_) => continue,
                }
            };
            let mut lens = [0usize; BATCH];
            let mut to: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
            let mut k = 0;
            for (i, (len, from)) in got.iter().take(n).enumerate() {
                let request = &rx[i * SLOT..i * SLOT + (*len).min(SLOT)];
                let out = &mut tx[k * SLOT..(k + 1) * SLOT];
                if let (Some(w), Some(from)) = (answer(request, open, out), from) {
                    lens[k] = w;
                    to[k] = Some(*from);
                    k += 1;
                }
            }
            if k > 0 {
                let mut slots = tx.chunks_exact(SLOT).zip(lens);
                let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                    [IoSlice::new(slots.next().map_or(&[][..], |(s, l)| &s[..l]))]
                });
                // As the gateway's flush: the kernel stops at a datagram it refuses, which is
                // lost (sipp retransmits), and the rest go in the next call.
                let mut at = 0;
                while at < k {
                    let sent = sendmmsg(
                        fd,
                        &mut tx_headers,
                        iovs[at..k].iter(),
                        &to[at..k],
                        [],
                        MsgFlags::empty(),
                    )
                    .map_or(0, |r| r.count());
                    at += sent.max(1);
                }
            }
            if n < BATCH {
                break;
            }
        }
    }
}

/// The socket as the gateway binds its own (`driver/setup.rs::bind_udp`): a 4 MiB receive
/// buffer (the default, about 200 KB, dropped datagrams in a warm-up at 8000/s that the
/// gateway's did not), non-blocking.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(4 << 20) {
        eprintln!("udp_floor: cannot enlarge the UDP receive buffer: {e}");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(UdpSocket::from_std(sock.into()))
}

fn fail(what: &str) -> ! {
    eprintln!("udp_floor: {what}");
    std::process::exit(1);
}

/// The answer to `request` written into `out` (`open`: never a challenge): its length, or `None`
/// for what is not a REGISTER.
fn answer(request: &[u8], open: bool, out: &mut [u8]) -> Option<usize> {
    if !request.starts_with(b"REGISTER ") {
        return None;
    }
    let mut w = Writer { out, at: 0 };
    let mut credentials = false;
    let mut contact: &[u8] = b"";
    let mut copied: [&[u8]; 4] = [b""; 4];
    let mut vias = 0;
    let mut via_lines: [&[u8]; 4] = [b""; 4];
    for line in request.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let name = line
            .split(|&b| b == b':')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        let is = |a: &[u8], b: &[u8]| name.eq_ignore_ascii_case(a) || name.eq_ignore_ascii_case(b);
        if is(b"via", b"v") && vias < via_lines.len() {
            via_lines[vias] = line;
            vias += 1;
        } else if is(b"from", b"f") {
            copied[0] = line;
        } else if is(b"to", b"t") {
            copied[1] = line;
        } else if is(b"call-id", b"i") {
            copied[2] = line;
        } else if is(b"cseq", b"cseq") {
            copied[3] = line;
        } else if is(b"contact", b"m") {
            contact = line;
        } else if is(b"authorization", b"authorization") {
            credentials = true;
        }
    }
    let credentials = credentials || open;
    w.put(if credentials {
        b"SIP/2.0 200 OK\r\n"
    } else {
        b"SIP/2.0 401 Unauthorized\r\n"
    });
    for via in &via_lines[..vias] {
        w.line(via);
    }
    w.line(copied[0]);
    w.put(copied[1]);
    w.put(b";tag=floor\r\n");
    w.line(copied[2]);
    w.line(copied[3]);
    if credentials {
        w.put(contact);
        w.put(b";expires=3600\r\n");
    } else {
        w.put(CHALLENGE);
    }
    w.put(b"Content-Length: 0\r\n\r\n");
    (!w.overflowed()).then_some(w.at)
}

/// Bytes appended to a fixed buffer; what does not fit marks it overflowed.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
    fn line(&mut self, bytes: &[u8]) {
        self.put(bytes);
        self.put(b"\r\n");
    }
    fn overflowed(&self) -> bool {
        self.at > self.out.len()
    }
}
