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

/// Receive buffers and headers for [`recvmmsg`], reused for every batch.
pub(super) struct RecvBatch {
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Length and source of each datagram of the last batch.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    pub(super) fn new() -> Self {
        RecvBatch {
            buf: vec![0; SLOT * BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Reads up to [`BATCH`] waiting datagrams from the non-blocking socket `fd`: how many, or the
    /// error (`WouldBlock` when none waits).
    pub(super) fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.got.clear();
        let mut slots = self.buf.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let results = recvmmsg(
            fd,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
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
