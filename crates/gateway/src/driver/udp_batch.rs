//! Datagrams read and written in batches (Linux `recvmmsg` / `sendmmsg`, through `nix`): one
//! system call for up to [`BATCH`] datagrams instead of one each. The core thread reads a batch,
//! handles every datagram of it, and queues the datagrams its answers produce; the queue leaves in
//! one `sendmmsg` per batch at the end of the pass (`Core::flush_udp`), every datagram still with its
//! own outcome, so a failed one reports `send_failed` for its token as a single `sendto` did.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use sagw_proxy::SendToken;

/// Datagrams per system call.
pub(super) const BATCH: usize = 32;
/// One receive slot: any UDP payload (at most 65 507 bytes) fits, so none is truncated and the
/// size limit judges the whole datagram, as with one `recv_from` into a 64 KiB buffer. The slots
/// are zeroed lazily by the kernel (calloc'd pages): a slot costs memory only once used.
const SLOT: usize = 65_536;

/// The address family of a UDP socket, which decides the headers its batches are read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    /// IPv6, dual-stack included: its IPv4 peers come as IPv4-mapped IPv6 addresses.
    V6,
}

impl Family {
    pub(super) fn of(addr: SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

/// Receive buffers and headers for [`recvmmsg`], reused for every batch.
pub(super) struct RecvBatch {
    buf: Vec<u8>,
    /// One set per address family. The kernel writes each source's length back into its header's
    /// `msg_namelen`, which is also what the next call offers as the room for the next source, and
    /// `nix` does not set it again: after an IPv4 socket's batch an IPv6 read had room for 16 of
    /// its 28 bytes, and its source was made of the rest of the previous one's. A socket's sources
    /// are all of one length, so each family keeps headers of its own.
    headers_v4: MultiHeaders<SockaddrStorage>,
    headers_v6: MultiHeaders<SockaddrStorage>,
    /// Length and source of each datagram of the last batch.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    pub(super) fn new() -> Self {
        RecvBatch {
            buf: vec![0; SLOT * BATCH],
            headers_v4: MultiHeaders::preallocate(BATCH, None),
            headers_v6: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Reads up to [`BATCH`] waiting datagrams from the non-blocking socket `fd` of `family`: how
    /// many, or the error (`WouldBlock` when none waits).
    pub(super) fn recv(&mut self, fd: RawFd, family: Family) -> std::io::Result<usize> {
        self.got.clear();
        let mut slots = self.buf.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let headers = match family {
            Family::V4 => &mut self.headers_v4,
            Family::V6 => &mut self.headers_v6,
        };
        let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(std::io::Error::from)?;
        for r in results {
            self.got
                .push((r.bytes, r.address.as_ref().and_then(socket_addr)));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last batch and where it came from (`None`: a source that is not an
    /// IP address, which a UDP/IP socket does not produce).
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (n, from) = *self.got.get(i)?;
        let start = i.checked_mul(SLOT)?;
        Some((self.buf.get(start..start + n.min(SLOT))?, from?))
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// A datagram waiting for the end of the pass.
pub(super) struct Outgoing {
    /// Index of the socket it leaves from (in the core's UDP listener order).
    pub(super) sock: usize,
    pub(super) to: SocketAddr,
    pub(super) bytes: Vec<u8>,
    pub(super) token: Option<SendToken>,
}

/// Headers for [`sendmmsg`], reused for every flush.
pub(super) struct SendBatch {
    headers: MultiHeaders<SockaddrStorage>,
}

impl SendBatch {
    pub(super) fn new() -> Self {
        SendBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Sends `out` (all for socket `fd`, at most [`BATCH`]) with one `sendmmsg`, more when one
    /// fails: returns how many datagrams, from the start, the kernel took before the first that
    /// it refused (`out.len()` when it took them all). The caller reports the refused one and
    /// calls again with the rest.
    pub(super) fn send(&mut self, fd: RawFd, out: &[Outgoing]) -> usize {
        let out = out.get(..out.len().min(BATCH)).unwrap_or(out);
        let mut iovs: [[IoSlice<'_>; 1]; BATCH] = [[IoSlice::new(&[])]; BATCH];
        let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        for ((iov, addr), o) in iovs.iter_mut().zip(addrs.iter_mut()).zip(out) {
            *iov = [IoSlice::new(&o.bytes)];
            *addr = Some(SockaddrStorage::from(o.to));
        }
        let n = out.len();
        let (Some(iovs), Some(addrs)) = (iovs.get(..n), addrs.get(..n)) else {
            return 0;
        };
        // A failure of the first datagram is an error; a later one ends the call early (the
        // count says where), and its error is left for the next call, as `sendmmsg(2)` says.
        match sendmmsg(
            fd,
            &mut self.headers,
            iovs.iter(),
            addrs,
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => results.count(),
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s
    }

    fn out(to: SocketAddr, bytes: &[u8]) -> Outgoing {
        Outgoing {
            sock: 0,
            to,
            bytes: bytes.to_vec(),
            token: None,
        }
    }

    #[test]
    fn a_batch_reads_every_waiting_datagram_with_its_source() {
        let server = bound();
        server.set_nonblocking(true).expect("non-blocking");
        let (a, b) = (bound(), bound());
        let to = server.local_addr().expect("addr");
        a.send_to(b"one", to).expect("send");
        b.send_to(b"two", to).expect("send");
        a.send_to(&[7u8; 9000], to).expect("send");
        let mut rx = RecvBatch::new();
        // Loopback delivers synchronously, but give a slow host a moment.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rx.recv(server.as_raw_fd(), Family::V4).expect("batch"), 3);
        let a_addr = a.local_addr().expect("addr");
        assert_eq!(rx.get(0), Some((&b"one"[..], a_addr)));
        assert_eq!(
            rx.get(1),
            Some((&b"two"[..], b.local_addr().expect("addr")))
        );
        assert_eq!(rx.get(2), Some((&[7u8; 9000][..], a_addr)));
        assert_eq!(rx.get(3), None);
        let e = rx.recv(server.as_raw_fd(), Family::V4).expect_err("empty");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(rx.get(0), None, "an empty read leaves no datagram behind");
    }

    /// One batch reads sockets of both families in turn (the core's listeners): each source is
    /// whole, however long the one before it in the same slot was.
    #[test]
    fn sources_stay_whole_across_sockets_of_both_families() {
        let v4 = bound();
        v4.set_nonblocking(true).expect("non-blocking");
        let v6 = UdpSocket::bind("[::]:0").expect("dual-stack bind");
        v6.set_nonblocking(true).expect("non-blocking");
        let v6_port = v6.local_addr().expect("addr").port();
        let mut rx = RecvBatch::new();
        for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            let c = UdpSocket::bind((from, 0)).expect("bind");
            c.send_to(b"v6", ("127.0.0.1", v6_port)).expect("send");
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(rx.recv(v6.as_raw_fd(), Family::V6).expect("batch"), 1);
            let (_, seen) = rx.get(0).expect("datagram");
            let seen = match seen {
                SocketAddr::V6(a) => a.ip().to_ipv4_mapped().map(|ip| (ip, a.port())),
                SocketAddr::V4(a) => Some((*a.ip(), a.port())),
            };
            let sent = c.local_addr().expect("addr");
            assert_eq!(
                seen,
                match sent {
                    SocketAddr::V4(a) => Some((*a.ip(), a.port())),
                    SocketAddr::V6(_) => None,
                },
                "the IPv6 socket's source"
            );
            // An IPv4 socket's read in the same slots between two IPv6 ones.
            let d = bound();
            d.send_to(b"v4", v4.local_addr().expect("addr"))
                .expect("send");
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(rx.recv(v4.as_raw_fd(), Family::V4).expect("batch"), 1);
            assert_eq!(rx.get(0), Some((&b"v4"[..], d.local_addr().expect("addr"))));
        }
    }

    #[test]
    fn a_refused_datagram_is_reported_alone_and_the_rest_still_leave() {
        let sender = bound();
        let (c, d) = (bound(), bound());
        let (c_addr, d_addr) = (c.local_addr().expect("addr"), d.local_addr().expect("addr"));
        // An IPv6 destination from an IPv4 socket: the kernel refuses that datagram only.
        let v6: SocketAddr = "[::1]:9".parse().expect("addr");
        let queue = [
            out(c_addr, b"first"),
            out(v6, b"refused"),
            out(d_addr, b"third"),
        ];
        let mut tx = SendBatch::new();
        let fd = sender.as_raw_fd();
        assert_eq!(tx.send(fd, &queue), 1, "sent up to the refused one");
        assert_eq!(tx.send(fd, &queue[1..]), 0, "the refused one fails first");
        assert_eq!(tx.send(fd, &queue[2..]), 1, "then the rest leaves");
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).expect("c gets its datagram");
        assert_eq!(
            (&buf[..n], from),
            (&b"first"[..], sender.local_addr().expect("addr"))
        );
        let (n, _) = d.recv_from(&mut buf).expect("d gets its datagram");
        assert_eq!(&buf[..n], b"third");
    }
}
