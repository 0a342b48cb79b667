//! The PROXY protocol (HAProxy's spec, version 2 binary and version 1 text) on TCP and TLS
//! listeners behind a load balancer: the balancer writes a header naming the client's address
//! before the client's first byte, and that address becomes the connection's remote address for
//! everything (logs, `limits.max_connections_per_ip`, Via `received`/`rport`, flow tokens, SAs).
//!
//! Only connections from the listener's configured balancers (`[listen.proxy_protocol.<name>]
//! from`) are read for a header, and from them the header is required: anyone else could write
//! one and be believed. A connection from any other address is a direct client: its bytes are SIP
//! (or a TLS ClientHello) as on any listener, so a header it sends is not honoured; it is
//! unframeable input and closes its own connection.
//!
//! The decoder is a total function over a byte slice ([`decode`]): it never reads past the
//! header, so the bytes after it (the ClientHello, the first SIP message) stay in the socket, and
//! it never panics (see the sweeps in the tests).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature: the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header the spec allows (`PROXY TCP6` with two full IPv6 addresses), CRLF included.
const V1_MAX: usize = 107;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): this much may always be read
/// without reading past the header.
const MIN_HEADER: usize = 15;
/// The v2 fixed part: signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;
/// The largest v2 header accepted, TLVs included. The spec allows 16 + 65 535 bytes; balancers
/// write the addresses and a few TLVs (AWS NLB: the VPC endpoint id; HAProxy: SNI, unique id,
/// SSL details), far below this. A bound keeps a misbehaving balancer from making each
/// connection hold 64 KiB before the first SIP byte.
pub const MAX_HEADER: usize = 4096;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address and port as the balancer saw them.
    Client(SocketAddr),
    /// The balancer's own connection (v2 `LOCAL`, e.g. its health checks), or a family the
    /// gateway cannot use (v1 `UNKNOWN`, v2 `AF_UNSPEC` or `AF_UNIX`): the socket's address
    /// stands, as the spec asks.
    Balancer,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes are neither the v2 signature nor `PROXY `.
    #[error("not a PROXY protocol header")]
    NoSignature,
    /// A v2 header whose version nibble is not 2.
    #[error("unsupported PROXY protocol version {0}")]
    Version(u8),
    /// A v2 command other than LOCAL (0) and PROXY (1).
    #[error("unknown PROXY protocol v2 command {0}")]
    Command(u8),
    /// A v2 address family or transport this listener cannot carry (e.g. DGRAM on a stream).
    #[error("PROXY protocol v2 family/transport byte {0:#04x} is not a stream over IPv4 or IPv6")]
    Family(u8),
    /// The v2 length leaves no room for the addresses its family needs.
    #[error("PROXY protocol v2 address block of {got} bytes, {need} needed")]
    ShortAddresses {
        /// Bytes after the fixed part.
        got: usize,
        /// What the family needs.
        need: usize,
    },
    /// Longer than [`MAX_HEADER`] (v2) or the spec's 107 bytes (v1).
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    /// A v1 line that does not follow `PROXY TCP4|TCP6 src dst sport dport`.
    #[error("malformed PROXY protocol v1 line")]
    V1Syntax,
}

/// The result of [`decode`] on the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A complete header of `len` bytes.
    Header {
        /// What it says.
        source: Source,
        /// Its length: the bytes after it are the client's.
        len: usize,
    },
    /// Not complete: read until there are this many bytes in all, no more (the header is at
    /// least this long, so reading them never takes the client's bytes).
    NeedAtLeast(usize),
}

/// Decodes the header at the start of `buf`. Total: any input gives a value or an error.
pub fn decode(buf: &[u8]) -> Result<Decoded, HeaderError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    let v2_prefix = buf.get(..seen) == V2_SIGNATURE.get(..seen);
    let seen1 = buf.len().min(V1_PREFIX.len());
    let v1_prefix = buf.get(..seen1) == V1_PREFIX.get(..seen1);
    if buf.len() < MIN_HEADER {
        return if v2_prefix || v1_prefix {
            Ok(Decoded::NeedAtLeast(MIN_HEADER))
        } else {
            Err(HeaderError::NoSignature)
        };
    }
    if v2_prefix {
        decode_v2(buf)
    } else if v1_prefix {
        decode_v1(buf)
    } else {
        Err(HeaderError::NoSignature)
    }
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, HeaderError> {
    let Some(fixed) = buf.get(..V2_FIXED) else {
        return Ok(Decoded::NeedAtLeast(V2_FIXED));
    };
    let ver_cmd = fixed.get(12).copied().unwrap_or(0);
    let fam = fixed.get(13).copied().unwrap_or(0);
    let body_len = usize::from(u16::from_be_bytes([
        fixed.get(14).copied().unwrap_or(0),
        fixed.get(15).copied().unwrap_or(0),
    ]));
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(HeaderError::Command(c)),
    };
    let total = V2_FIXED + body_len;
    if total > MAX_HEADER {
        return Err(HeaderError::TooLong(MAX_HEADER));
    }
    // Family in the high nibble (0 unspec, 1 inet, 2 inet6, 3 unix), transport in the low one
    // (0 unspec, 1 stream, 2 dgram): the spec's whole table.
    let need = match fam {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        other => return Err(HeaderError::Family(other)),
    };
    if body_len < need {
        return Err(HeaderError::ShortAddresses {
            got: body_len,
            need,
        });
    }
    let Some(body) = buf.get(V2_FIXED..total) else {
        return Ok(Decoded::NeedAtLeast(total));
    };
    // LOCAL: "the receiver must accept this connection as valid and must use the real
    // connection endpoints and discard the protocol block including the family". TLVs after the
    // addresses are skipped: nothing in them changes who the client is.
    let source = match (local, fam) {
        (true, _) | (false, 0x00 | 0x31) => Source::Balancer,
        (false, 0x11) => {
            let ip = Ipv4Addr::from(array::<4>(body, 0));
            let port = u16::from_be_bytes(array::<2>(body, 8));
            Source::Client(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (false, _) => {
            let ip = Ipv6Addr::from(array::<16>(body, 0));
            let port = u16::from_be_bytes(array::<2>(body, 32));
            Source::Client(SocketAddr::new(IpAddr::V6(ip), port))
        }
    };
    Ok(Decoded::Header { source, len: total })
}

/// `N` bytes of `b` from `at`, zeros past its end (callers checked the length first).
fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, HeaderError> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or(buf);
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(HeaderError::TooLong(V1_MAX))
        } else {
            // The line ends at the first CRLF: one byte more at a time never reads past it.
            Ok(Decoded::NeedAtLeast(buf.len() + 1))
        };
    };
    let line = window
        .get(V1_PREFIX.len()..cr)
        .ok_or(HeaderError::V1Syntax)?;
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1Syntax)?;
    let len = cr + 2;
    let mut fields = line.split(' ');
    let source = match fields.next() {
        // "the receiver must ignore anything presented before the CRLF is found".
        Some("UNKNOWN") => Source::Balancer,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(_dst), Some(sport), Some(_dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(HeaderError::V1Syntax);
            };
            let ip: IpAddr = src.parse().map_err(|_| HeaderError::V1Syntax)?;
            if ip.is_ipv4() != (proto == "TCP4") {
                return Err(HeaderError::V1Syntax);
            }
            // Decimal without sign or leading zeros, as the spec writes them.
            if sport.is_empty()
                || !sport.bytes().all(|b| b.is_ascii_digit())
                || (sport.len() > 1 && sport.starts_with('0'))
            {
                return Err(HeaderError::V1Syntax);
            }
            let port: u16 = sport.parse().map_err(|_| HeaderError::V1Syntax)?;
            Source::Client(SocketAddr::new(ip, port))
        }
        _ => return Err(HeaderError::V1Syntax),
    };
    Ok(Decoded::Header { source, len })
}

/// Reading a header from a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// What arrived is not a header the gateway accepts.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The connection ended or failed before the header was complete.
    #[error("connection ended before the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header at the start of `stream`, never a byte past it. The caller bounds the time.
pub async fn read_header<S>(stream: &mut S) -> Result<Source, ReadError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(64);
    loop {
        match decode(&buf)? {
            Decoded::Header { source, .. } => return Ok(source),
            Decoded::NeedAtLeast(n) => {
                let have = buf.len();
                // `decode` never asks for more than MAX_HEADER (it refuses longer headers).
                buf.resize(n.min(MAX_HEADER).max(have + 1), 0);
                let Some(rest) = buf.get_mut(have..) else {
                    return Err(HeaderError::TooLong(MAX_HEADER).into());
                };
                stream.read_exact(rest).await?;
            }
        }
    }
}

/// An address or prefix a balancer connects from (`10.0.0.7`, `10.0.0.0/24`, `2001:db8::/48`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix(ipnet::IpNet);

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Prefix(ipnet::IpNet::from(ip)));
        }
        let net: ipnet::IpNet = s
            .parse()
            .map_err(|_| format!("`{s}` is neither an IP address nor an address/prefix-length"))?;
        if net.network() != net.addr() {
            // 10.0.0.7/24 is most likely a typo for one of two things: say which was meant.
            return Err(format!(
                "`{s}` has host bits set: write {} for the network or {} for the host",
                net.trunc(),
                net.addr()
            ));
        }
        Ok(Prefix(net))
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The balancers of one listener: connections from them carry a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancers {
    prefixes: Vec<Prefix>,
}

impl Balancers {
    /// The balancers at these addresses and prefixes.
    pub fn new(prefixes: Vec<Prefix>) -> Balancers {
        Balancers { prefixes }
    }

    /// True when a connection from `ip` comes from one of them. An IPv4 balancer seen on a
    /// dual-stack socket (`::ffff:10.0.0.7`) is its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.prefixes.iter().any(|p| p.0.contains(&ip))
    }

    /// The configured prefixes.
    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn inet4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b
    }

    #[test]
    fn v2_inet_and_inet6_name_the_client() {
        let mut h = v2(
            1,
            0x11,
            &inet4([203, 0, 113, 9], [10, 0, 0, 1], 40001, 5061),
        );
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01"); // the ClientHello that follows is not the header's
        assert_eq!(
            decode(&h),
            Ok(Decoded::Header {
                source: Source::Client("203.0.113.9:40001".parse().unwrap()),
                len
            })
        );
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&5555u16.to_be_bytes());
        body.extend_from_slice(&5060u16.to_be_bytes());
        // A TLV after the addresses (PP2_TYPE_AUTHORITY) is skipped.
        body.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'b', b'c']);
        let h = v2(1, 0x21, &body);
        assert_eq!(
            decode(&h),
            Ok(Decoded::Header {
                source: Source::Client("[2001:db8::7]:5555".parse().unwrap()),
                len: h.len()
            })
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_socket_address() {
        for h in [
            v2(0, 0x00, &[]),
            v2(0, 0x11, &inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
            v2(1, 0x00, &[]),
            v2(1, 0x31, &[0u8; 216]),
        ] {
            assert_eq!(
                decode(&h),
                Ok(Decoded::Header {
                    source: Source::Balancer,
                    len: h.len()
                }),
                "{h:?}"
            );
        }
    }

    #[test]
    fn v2_refusals() {
        let mut wrong_version = v2(1, 0x11, &inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
        wrong_version[12] = 0x11;
        assert_eq!(decode(&wrong_version), Err(HeaderError::Version(1)));
        assert_eq!(
            decode(&v2(2, 0x11, &inet4([1; 4], [2; 4], 1, 2))),
            Err(HeaderError::Command(2))
        );
        assert_eq!(
            decode(&v2(1, 0x12, &inet4([1; 4], [2; 4], 1, 2))),
            Err(HeaderError::Family(0x12)),
            "DGRAM on a stream listener"
        );
        assert_eq!(
            decode(&v2(1, 0x11, &[0; 11])),
            Err(HeaderError::ShortAddresses { got: 11, need: 12 })
        );
        assert_eq!(
            decode(&v2(1, 0x11, &vec![0; MAX_HEADER])),
            Err(HeaderError::TooLong(MAX_HEADER))
        );
        // Refused from the fixed part alone: the body of an oversized header is never awaited.
        let mut fixed = V2_SIGNATURE.to_vec();
        fixed.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(decode(&fixed), Err(HeaderError::TooLong(MAX_HEADER)));
    }

    #[test]
    fn v1_lines() {
        let h = b"PROXY TCP4 198.51.100.22 10.0.0.1 35646 5060\r\nOPTIONS";
        assert_eq!(
            decode(h),
            Ok(Decoded::Header {
                source: Source::Client("198.51.100.22:35646".parse().unwrap()),
                len: h.len() - 7
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 5061\r\n";
        assert_eq!(
            decode(h),
            Ok(Decoded::Header {
                source: Source::Client("[2001:db8::1]:1".parse().unwrap()),
                len: h.len()
            })
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Decoded::Header {
                source: Source::Balancer,
                len: 24
            })
        );
        for bad in [
            &b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 70000 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 10.0.0.1 1 2\r\n",
        ] {
            assert_eq!(
                decode(bad),
                Err(HeaderError::V1Syntax),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert_eq!(decode(long.as_bytes()), Err(HeaderError::TooLong(V1_MAX)));
    }

    #[test]
    fn never_asks_for_a_byte_past_the_header() {
        // Every prefix of a valid header asks for at most the header's length, so the reader
        // never takes the ClientHello or the first SIP byte.
        let mut headers = vec![
            v2(1, 0x11, &inet4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
            v2(0, 0x00, &[]),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ];
        headers.push(v2(1, 0x21, &[7u8; 40]));
        for h in headers {
            for cut in 0..h.len() {
                match decode(&h[..cut]) {
                    Ok(Decoded::NeedAtLeast(n)) => {
                        assert!(
                            n > cut && n <= h.len(),
                            "cut {cut}: asks {n} of {}",
                            h.len()
                        )
                    }
                    other => panic!("cut {cut} of {h:?}: {other:?}"),
                }
            }
            assert!(matches!(decode(&h), Ok(Decoded::Header { len, .. }) if len == h.len()));
        }
    }

    #[test]
    fn garbage_is_refused_at_the_first_byte() {
        assert_eq!(decode(b"O"), Err(HeaderError::NoSignature));
        assert_eq!(decode(b"\x16\x03\x01"), Err(HeaderError::NoSignature));
        assert_eq!(decode(b"\r\n\r\nX"), Err(HeaderError::NoSignature));
        assert_eq!(
            decode(b"OPTIONS sip:a SIP/2.0\r\n"),
            Err(HeaderError::NoSignature)
        );
        assert_eq!(decode(b""), Ok(Decoded::NeedAtLeast(MIN_HEADER)));
    }

    /// A small deterministic generator (xorshift): the sweep is the same on every run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    /// Checks the contract on one input: no panic, a request for more is always for more than
    /// there is and within the bound, a header never claims more bytes than it was given.
    fn check(input: &[u8]) {
        match decode(input) {
            Ok(Decoded::NeedAtLeast(n)) => {
                assert!(n > input.len() && n <= MAX_HEADER, "{input:?} asks {n}")
            }
            Ok(Decoded::Header { len, .. }) => assert!(len <= input.len(), "{input:?}"),
            Err(_) => {}
        }
    }

    #[test]
    fn no_panic_on_truncated_oversized_or_garbage_input() {
        // Exhaustive over the v2 control bytes (version/command, family, both length bytes at a
        // few values), each body truncated at every length up to the declared one.
        for ver_cmd in 0..=255u8 {
            for fam in 0..=255u8 {
                for len in [0u16, 11, 12, 36, 216, 4081, 65535] {
                    let mut h = V2_SIGNATURE.to_vec();
                    h.extend_from_slice(&[ver_cmd, fam]);
                    h.extend_from_slice(&len.to_be_bytes());
                    h.extend(std::iter::repeat_n(0xa5, usize::from(len.min(220))));
                    for cut in [13, 15, 16, 28, h.len()] {
                        check(&h[..cut.min(h.len())]);
                    }
                }
            }
        }
        // Random bytes behind each valid prefix, and plain random input, at every length.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let prefixes: [&[u8]; 4] = [&V2_SIGNATURE, b"PROXY ", b"PROXY TCP4 ", b""];
        for _ in 0..2_000 {
            let p = prefixes[usize::from(rng.byte()) % prefixes.len()];
            let n = usize::try_from(rng.next() % 160).unwrap();
            let mut input = p.to_vec();
            input.extend((0..n).map(|_| rng.byte()));
            for cut in 0..=input.len() {
                check(&input[..cut]);
            }
        }
        // Oversized: a v1 line without CRLF, a v2 body far past the bound.
        check(&[b'P'; 70_000]);
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        big.resize(70_000, 1);
        check(&big);
    }

    #[tokio::test]
    async fn the_reader_leaves_the_clients_bytes_in_the_stream() {
        let mut input = v2(1, 0x11, &inet4([192, 0, 2, 1], [10, 0, 0, 1], 7, 5060));
        input.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        let mut r = &input[..];
        assert_eq!(
            read_header(&mut r).await.unwrap(),
            Source::Client("192.0.2.1:7".parse().unwrap())
        );
        assert_eq!(r, b"OPTIONS sip:x SIP/2.0\r\n");
        let mut v1 = &b"PROXY UNKNOWN\r\nREGISTER"[..];
        assert_eq!(read_header(&mut v1).await.unwrap(), Source::Balancer);
        assert_eq!(v1, b"REGISTER");
        let mut short = &input[..20];
        assert!(matches!(
            read_header(&mut short).await,
            Err(ReadError::Io(_))
        ));
        let mut sip = &b"OPTIONS sip:x SIP/2.0\r\n"[..];
        assert!(matches!(
            read_header(&mut sip).await,
            Err(ReadError::Header(HeaderError::NoSignature))
        ));
    }

    #[test]
    fn balancer_prefixes() {
        let b = Balancers::new(vec![
            "10.0.0.0/24".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "2001:db8::/48".parse().unwrap(),
        ]);
        assert!(b.contains("10.0.0.200".parse().unwrap()));
        assert!(b.contains("::ffff:10.0.0.3".parse().unwrap()));
        assert!(!b.contains("10.0.1.1".parse().unwrap()));
        assert!(b.contains("192.0.2.7".parse().unwrap()));
        assert!(!b.contains("192.0.2.8".parse().unwrap()));
        assert!(b.contains("2001:db8:0:1::5".parse().unwrap()));
        let e = "10.0.0.7/24".parse::<Prefix>().unwrap_err();
        assert!(e.contains("10.0.0.0/24") && e.contains("10.0.0.7"), "{e}");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("balancer".parse::<Prefix>().is_err());
    }
}
