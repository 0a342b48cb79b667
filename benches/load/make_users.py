#!/usr/bin/env python3
"""Writes a sagw credentials file (format of crates/auth/src/credentials.rs) for the load users
load0..load<N-1> with passwords load<n>-pw: NT hash for NTLM, SHA-256 and MD5 HA1 for Digest.
Usage: make_users.py N DIGEST_REALM [PREFIX] > users.txt   (then chmod 600); PREFIX (default load)
names the users <PREFIX><n> with passwords <PREFIX><n>-pw."""
import hashlib, sys

def md4(data: bytes) -> bytes:
    # hashlib's md4 is often disabled (OpenSSL 3); a plain RFC 1320 implementation instead.
    def f(x, y, z): return (x & y) | (~x & z)
    def g(x, y, z): return (x & y) | (x & z) | (y & z)
    def h(x, y, z): return x ^ y ^ z
    def rol(v, s): v &= 0xFFFFFFFF; return ((v << s) | (v >> (32 - s))) & 0xFFFFFFFF
    msg = bytearray(data); ml = len(data) * 8
    msg.append(0x80)
    while len(msg) % 64 != 56: msg.append(0)
    msg += ml.to_bytes(8, "little")
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        X = [int.from_bytes(msg[off + 4 * i: off + 4 * i + 4], "little") for i in range(16)]
        aa, bb, cc, dd = a, b, c, d
        for i in range(16):
            k = i; s = [3, 7, 11, 19][i % 4]
            if i % 4 == 0: a = rol(a + f(b, c, d) + X[k], s)
            elif i % 4 == 1: d = rol(d + f(a, b, c) + X[k], s)
            elif i % 4 == 2: c = rol(c + f(d, a, b) + X[k], s)
            else: b = rol(b + f(c, d, a) + X[k], s)
        for i in range(16):
            k = (i % 4) * 4 + i // 4; s = [3, 5, 9, 13][i % 4]
            if i % 4 == 0: a = rol(a + g(b, c, d) + X[k] + 0x5A827999, s)
            elif i % 4 == 1: d = rol(d + g(a, b, c) + X[k] + 0x5A827999, s)
            elif i % 4 == 2: c = rol(c + g(d, a, b) + X[k] + 0x5A827999, s)
            else: b = rol(b + g(c, d, a) + X[k] + 0x5A827999, s)
        order = [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15]
        for i in range(16):
            k = order[i]; s = [3, 9, 11, 15][i % 4]
            if i % 4 == 0: a = rol(a + h(b, c, d) + X[k] + 0x6ED9EBA1, s)
            elif i % 4 == 1: d = rol(d + h(a, b, c) + X[k] + 0x6ED9EBA1, s)
            elif i % 4 == 2: c = rol(c + h(d, a, b) + X[k] + 0x6ED9EBA1, s)
            else: b = rol(b + h(c, d, a) + X[k] + 0x6ED9EBA1, s)
        a, b, c, d = [(x + y) & 0xFFFFFFFF for x, y in zip((a, b, c, d), (aa, bb, cc, dd))]
    return b"".join(v.to_bytes(4, "little") for v in (a, b, c, d))

assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"  # RFC 1320 test suite
n, realm = int(sys.argv[1]), sys.argv[2]
prefix = sys.argv[3] if len(sys.argv) > 3 else "load"
for i in range(n):
    user, pw = f"{prefix}{i}", f"{prefix}{i}-pw"
    print(f"{user} nt {md4(pw.encode('utf-16-le')).hex().upper()}")
    for alg, fn in (("SHA-256", hashlib.sha256), ("MD5", hashlib.md5)):
        print(f"{user} ha1 {alg} {fn(f'{user}:{realm}:{pw}'.encode()).hexdigest()} {realm}")
