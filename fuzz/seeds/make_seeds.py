#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/ (issue 17).

Sources, all in this repository: the RFC 4475 torture messages (crates/sip/tests/data/rfc4475),
the recorded flows (crates/sip/tests/data/flows, tests/flows/data and the messages inlined in
tests/flows/*.flow), the real NTLM AUTHENTICATE of the OC 2007 R2 capture, and hand-written
inputs in each multi-message target's chunk format (see the target's module documentation:
chunks separated by 0xFF, a control byte then a payload). The seeds are committed (small:
`du -sh fuzz/seeds`); rerun after changing a source or a format, from anywhere:

    python3 fuzz/seeds/make_seeds.py

scripts/fuzz-smoke.sh and fuzz/campaign.sh give them to libFuzzer as a read-only corpus
directory after the grown one (fuzz/corpus/<target>/, not committed).
"""
import base64
import glob
import hashlib
import os
import re
import shutil

import proxy_auth
from proxy_auth import mallory_req, msg

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
D = "example.com"
EPID = "a1b2c3d4e5"
ALICE = "198.51.100.7:50000"
MALLORY = "203.0.113.66:5060"
HOP = "198.51.100.10:5060"
GW = "192.0.2.1"


def crlf(text):
    """LF or CRLF text to CRLF, with a head/body blank line kept."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def rfc4475():
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, "crates/sip/tests/data/rfc4475/*.dat"))):
        with open(p, "rb") as f:
            out.append((os.path.basename(p)[:-4], f.read()))
    return out


def recorded():
    """Messages of the recorded flows: .sip files and the blocks inlined in tests/flows/*.flow."""
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, "crates/sip/tests/data/flows/*.sip"))
                    + glob.glob(os.path.join(ROOT, "tests/flows/data/*.sip"))):
        with open(p, "rb") as f:
            out.append(("rec-" + os.path.basename(p)[:-4], f.read()))
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/flows/*.flow"))):
        with open(p) as f:
            text = f.read()
        name = os.path.basename(p)[:-5]
        for i, block in enumerate(re.findall(r"^send [^\n]*<<<\n(.*?)\n>>>", text, re.S | re.M)):
            if not re.match(r"^([A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3})", block):
                continue
            head, _, body = block.partition("\n\n")
            m = crlf(head).rstrip("\r\n") + "\r\n"
            if "Content-Length" not in m and "\r\nl:" not in m:
                m += f"Content-Length: {len(crlf(body).encode()) if body else 0}\r\n"
            out.append((f"flow-{name}-{i}", (m + "\r\n" + (crlf(body) if body else "")).encode()))
    return out


def capture():
    with open(os.path.join(ROOT, "crates/sip/tests/data/flows/oc2007r2-ntlm-register.txt")) as f:
        text = f.read()
    auth = base64.b64decode(re.search(r"AUTHENTICATE_B64=(\S+)", text).group(1))
    return text, auth


def auth_values(messages):
    """Values of the authentication headers in `messages`."""
    names = ("www-authenticate", "proxy-authenticate", "authorization", "proxy-authorization",
             "authentication-info", "proxy-authentication-info")
    vals = []
    for _, m in messages:
        head = m.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        for line in re.split(r"\r\n(?![ \t])", head)[1:]:
            n, _, v = line.partition(":")
            if n.strip().lower() in names and v.strip() not in vals:
                vals.append(v.strip())
    return vals


def alice_req(method, ruri, branch, extra=(), **kw):
    """alice's request as proxy_auth.py writes it, with her Contact."""
    return proxy_auth.alice_req(method, ruri, branch,
                                [f"Contact: <sip:alice@{ALICE};transport=tls>", *extra], **kw)


def chunks(*cs):
    return b"\xff".join(bytes([ctl]) + payload for ctl, payload in cs)


SDP = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def auth_decide_seeds(auth_token):
    # Control byte: bits 0-2 kind, 3-5 time step, 6-7 extra (see fuzz_targets/auth_decide.rs).
    MALLORY_RAW, SIGNED, AUTHZ, PROXY_AUTHZ, TOKEN, BOB, TAMPER, ALICE_RAW = range(8)
    register = alice_req("REGISTER", f"sip:{D}", "r2", to=f"<sip:alice@{D}>", cseq=5, callid="reg")
    message = alice_req("MESSAGE", f"sip:bob@{D}", "m1", ["Content-Type: text/plain"], body="hi")
    invite = alice_req("INVITE", f"sip:bob@{D}", "i1", ["Content-Type: application/sdp"], body=SDP)
    ok = msg("SIP/2.0 200 OK", f"Via: SIP/2.0/TLS {GW}:5061;branch=z9hG4bKsgw1",
             f"From: <sip:bob@{D}>;tag=b1", f"To: <sip:alice@{D}>;tag=a9;epid={EPID}",
             "Call-ID: from-bob", "CSeq: 1 MESSAGE")
    bob_reg = msg(f"REGISTER sip:{D} SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.8:50000;branch=z9hG4bKb2",
                  f"From: <sip:bob@{D}>;tag=b2", f"To: <sip:bob@{D}>", "Call-ID: bob-reg", "CSeq: 3 REGISTER",
                  "Contact: <sip:bob@198.51.100.8:50000;transport=tls>")
    bob_msg = msg(f"MESSAGE sip:alice@{D} SIP/2.0", "Via: SIP/2.0/TLS 198.51.100.8:50000;branch=z9hG4bKb3",
                  f"From: <sip:bob@{D}>;tag=b3", f"To: <sip:alice@{D}>", "Call-ID: bob-msg", "CSeq: 1 MESSAGE",
                  "Content-Type: text/plain", body="hello")
    forged = ('NTLM qop="auth", realm="SIP Communications Service", opaque="${opaque}", '
              'targetname="gw.example.com", crand="0000002a", cnum="7", response="0100000000000000deadbeef00000000"')
    digest = ('Digest username="bob", realm="example.com", nonce="00", uri="sip:example.com", '
              'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"')
    return {
        "signed-register-message-invite": chunks((SIGNED, register), (SIGNED, message), (SIGNED, invite)),
        "signed-response": chunks((SIGNED, ok)),
        "signed-replay": chunks((SIGNED | 2 << 6, message)),
        "signed-after-idle-and-lifetime": chunks((SIGNED | 5 << 3, message), (SIGNED | 7 << 3, message)),
        "signed-from-bob": chunks((SIGNED, bob_msg)),
        "tamper-call-id": chunks((TAMPER, b"\x00\xc0\x01" + message)),
        "tamper-body": chunks((TAMPER, b"\x01\x90\x20" + invite)),
        "bob-digest": chunks((BOB, bob_reg), (BOB, bob_msg), (BOB | 4 << 3, bob_msg)),
        "mallory-forged-sa": chunks((MALLORY_RAW, mallory_req("MESSAGE", f"sip:bob@{D}", "f1",
                                                              [f"Proxy-Authorization: {forged}"]))),
        "mallory-credentials": chunks((AUTHZ, forged.encode()), (PROXY_AUTHZ, digest.encode())),
        "mallory-authenticate": chunks((TOKEN, auth_token)),
        "alice-unsigned": chunks((ALICE_RAW, message), (ALICE_RAW, ok)),
    }


STATUS = [100, 180, 181, 182, 183, 199, 200, 202, 204, 300, 302, 400, 401, 403, 404, 407, 408, 480,
          486, 487, 500, 503, 600, 603]


def st(code):
    return bytes([STATUS.index(code)])


def proxy_edge_seeds():
    # Control byte: bits 0-2 kind, 3-5 time step, 6-7 which request the hop answers.
    SIGNED, ALICE_RAW, MALLORY_MSG, ANSWER, ANSWER_TWICE, CANCEL, ACK, HOP_SENDS = range(8)
    invite = alice_req("INVITE", f"sip:bob@{D}", "c1", ["Content-Type: application/sdp"], body=SDP,
                       callid="call-1")
    message = alice_req("MESSAGE", f"sip:bob@{D}", "m1", ["Content-Type: text/plain"], body="hi")
    reg = alice_req("REGISTER", f"sip:{D}", "r9", to=f"<sip:alice@{D}>", cseq=9, callid="setup-alice")
    to_alice = msg(f"MESSAGE sip:alice@{D} SIP/2.0", f"Via: SIP/2.0/UDP {HOP};branch=z9hG4bKh1",
                   "Max-Forwards: 70", f"From: <sip:bob@{D}>;tag=h1", f"To: <sip:alice@{D}>",
                   "Call-ID: hop-msg-1", "CSeq: 1 MESSAGE", "Content-Type: text/plain", body="hello alice")
    cancel_of_invite = msg("CANCEL sip:bob@example.com SIP/2.0",
                           f"Via: SIP/2.0/TLS {ALICE};branch=z9hG4bKc1", "Max-Forwards: 70",
                           f"From: <sip:alice@{D}>;tag=ac1;epid={EPID}", f"To: <sip:bob@{D}>",
                           "Call-ID: call-1", "CSeq: 1 CANCEL")
    alice_ok = b"SIP/2.0 200 OK\r\n${via}${dialog}Content-Length: 0\r\n\r\n"
    stray = msg("SIP/2.0 200 OK", f"Via: SIP/2.0/UDP {GW}:5060;branch=z9hG4bKsgw0123456789ab.1",
                f"Via: SIP/2.0/TCP 127.0.0.1:22;branch=z9hG4bKvictim", f"From: <sip:alice@{D}>;tag=1",
                f"To: <sip:bob@{D}>;tag=2", "Call-ID: stray", "CSeq: 1 INVITE")
    return {
        "call-answered": chunks((SIGNED, invite), (ANSWER, st(100)), (ANSWER | 1 << 3, st(180)),
                                (ANSWER | 2 << 3, st(200)), (ACK, b"")),
        "call-cancelled": chunks((SIGNED, invite), (ANSWER, st(180)), (CANCEL | 2 << 3, b""),
                                 (ANSWER, st(200)), (ANSWER | 1 << 6, st(487)), (ACK, b"")),
        "call-rejected-retransmitted": chunks((SIGNED, invite), (ANSWER, st(183)),
                                              (ANSWER_TWICE | 1 << 3, st(486)), (ACK, b"")),
        "call-timer-c": chunks((SIGNED, invite), (ANSWER, st(180)), (ANSWER | 5 << 3, st(200))),
        "call-challenged-downstream": chunks((SIGNED, invite),
                                             (ANSWER, st(407) + b'Proxy-Authenticate: Digest realm="far", nonce="1"\r\n'),
                                             (ACK, b"")),
        "message-and-register": chunks((SIGNED, message), (ANSWER, st(200)), (SIGNED | 3 << 3, reg),
                                       (ANSWER | 4 << 3, st(503) + b"Retry-After: 5\r\n")),
        # An unsigned CANCEL of alice's INVITE: honoured from her flow, not from mallory's.
        "unsigned-cancel": chunks((SIGNED, invite), (ANSWER, st(180)),
                                  (MALLORY_MSG, cancel_of_invite), (ALICE_RAW, cancel_of_invite),
                                  (ANSWER | 1 << 6, st(487)), (ANSWER, st(200))),
        "route-to-names": chunks((SIGNED, alice_req("MESSAGE", f"sip:bob@{D}", "n1",
                                                    ["Route: <sip:internal.example.net:22;transport=tcp;lr>"])),
                                 (SIGNED, alice_req("OPTIONS", f"sip:bob@{D}", "n2",
                                                    ["Route: <sip:hops.example.net;lr>"])),
                                 (ANSWER, st(200))),
        "hop-to-alice": chunks((HOP_SENDS, to_alice), (SIGNED, alice_ok), (ALICE_RAW, alice_ok)),
        "mallory-and-unsigned": chunks((MALLORY_MSG, mallory_req("INVITE", f"sip:bob@{D}", "mi1")),
                                       (MALLORY_MSG, stray), (ALICE_RAW, message), (ALICE_RAW, stray)),
    }


def main():
    rfc = rfc4475()
    rec = recorded()
    cap_text, auth_token = capture()
    messages = rfc + rec
    values = auth_values(messages) + [
        v for v in re.findall(r'^(?:Authorization|WWW-Authenticate): (.*)$', cap_text, re.M)]
    tok = base64.b64encode(auth_token).decode()
    values += [
        'NTLM qop="auth", realm="SIP Communications Service", targetname="gw.example.com", gssapi-data="", version=4',
        f'NTLM qop="auth", realm="SIP Communications Service", opaque="ABCD1234", targetname="gw.example.com", '
        f'gssapi-data="{tok}", version=4, crand="0a0b0c0d", cnum="1", response="01000000e615438a917661be64000000"',
        'NTLM opaque="ABCD1234", gssapi-data="TlRMTVNTUAACAAAAAAAAADgAAAA=", targetname="gw.example.com", '
        'realm="SIP Communications Service", version=4',
        'Kerberos qop="auth", realm="SIP Communications Service", targetname="sip/gw.example.com", '
        'gssapi-data="YIIB", version=4',
        'TLS-DSK qop="auth", realm="SIP Communications Service", targetname="gw.example.com", '
        'sspi-data="FgMBAA==", version=4',
        'Digest realm="example.com", nonce="AAAAAGlbsRAAAAAAAAAAAA", algorithm=SHA-256, qop="auth", '
        'opaque="x", stale=TRUE, userhash=true',
        'Digest realm="example.com", nonce="n", algorithm=MD5, qop="auth,auth-int", '
        'NTLM realm="SIP Communications Service", targetname="gw.example.com", version=4',
        'Digest username="alice", realm="example.com", nonce="n", uri="sip:example.com", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001, opaque="x"',
        'NTLM rspauth="01000000E615438A917661BE64000000", srand="9616454F", snum="1", opaque="ABCD1234", '
        'qop="auth", targetname="gw.example.com", realm="SIP Communications Service"',
        'qop=auth, rspauth="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", nc=00000001, nextnonce="x"',
        'Basic YWxpY2U6cHc=',
        'Digest username="a\\"b", realm="r\r\n x", nonce=""',
    ]
    seeds = {t: {} for t in ["sip_message", "sip_stream", "auth_header", "digest_authorization",
                             "ntlm_authenticate", "auth_decide", "proxy_edge", "proxy_auth"]}
    for name, m in messages:
        seeds["sip_message"][name] = m
    # Streams: a split-choosing byte, then messages back to back (framed by Content-Length).
    framed = [m for _, m in rec if b"Content-Length" in m]
    for i in range(0, len(framed), 3):
        seeds["sip_stream"][f"stream-{i // 3}"] = bytes([i * 7 % 256]) + b"".join(framed[i:i + 3])
    seeds["sip_stream"]["stream-keepalives"] = b"\x05\r\n\r\n\r\n" + framed[0] + b"\r\n\r\n"
    for i, v in enumerate(values):
        seeds["auth_header"][f"value-{i}"] = v.encode()
    seeds["auth_header"]["builder"] = b"NTLM\x01gssapi-data\x01TlRMTVNTUAAB"
    for i, v in enumerate(v for v in values if v.startswith("Digest")):
        seeds["digest_authorization"][f"value-{i}"] = bytes([i]) + v[7:].encode()
    for sel, alg in enumerate(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"]):
        seeds["digest_authorization"][f"genuine-{alg}"] = bytes([sel * 2]) + (
            f'username="alice", realm="fuzz.example", nonce="@N", uri="sip:fuzz.example", '
            f'response="@R", algorithm={alg}, qop=auth, nc=00000001, cnonce="0a4f113b"').encode()
    seeds["digest_authorization"]["rfc2069"] = b"\x01" + (
        b'username="alice", realm="fuzz.example", nonce="@N", uri="sip:fuzz.example", response="@R"')
    seeds["ntlm_authenticate"]["capture-authenticate"] = auth_token
    for flags in range(4):
        seeds["ntlm_authenticate"][f"initiator-{flags}"] = (
            b"\xa5" + bytes([flags | 0x50]) + bytes(range(1, 25)) + b"alice" + b"\x00\x48\x01\x10\x02")
    seeds["auth_decide"] = auth_decide_seeds(auth_token)
    seeds["proxy_edge"] = proxy_edge_seeds()
    seeds["proxy_auth"] = proxy_auth.SEEDS
    total = 0
    for target, files in seeds.items():
        out = os.path.join(HERE, target)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for name, data in files.items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
            total += len(data)
        print(f"{len(files):4} seeds in fuzz/seeds/{target}")
    print(f"{total} bytes")


if __name__ == "__main__":
    main()
