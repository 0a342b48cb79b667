#!/usr/bin/env python3
"""The seeds of the proxy_auth fuzz target (fuzz/seeds/make_seeds.py writes them to fuzz/seeds/proxy_auth/).

Input format (see fuzz_targets/proxy_auth.rs): chunks separated by 0xFF, each a control byte
(bits 0-1 sender: 0 alice as is, 1 alice signed by the harness, 2 mallory, 3 next hop; bits 2-4
time step; bits 5-7 repeat count) and a SIP message, in which ${via}, ${dialog}, ${rr}, ${route},
${contact}, ${epid} and ${opaque} are filled in by the harness (header placeholders expand to
whole lines, each ended by CRLF).

"""
ALICE, ALICE_SIGNED, MALLORY, HOP = 0, 1, 2, 3
GW = "192.0.2.1"
D = "example.com"
ALICE_ADDR = "198.51.100.7:50000"
MALLORY_ADDR = "203.0.113.66:5060"
HOP_ADDR = "198.51.100.10:5060"
EPID = "a1b2c3d4e5"


def ctl(sender, step=1, repeat=0):
    return bytes([sender | (step << 2) | (repeat << 5)])


def msg(*lines, body=""):
    text = "\r\n".join(lines) + "\r\n"
    text += f"Content-Length: {len(body.encode())}\r\n\r\n" + body
    return text.encode()


def chunk(sender, m, step=1, repeat=0):
    return ctl(sender, step, repeat) + m


def seed(*chunks):
    return b"\xff".join(chunks)


def mallory_req(method, ruri, branch, extra=(), to=f"<sip:bob@{D}>", body=""):
    return msg(
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {MALLORY_ADDR};branch=z9hG4bK{branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@{D}>;tag=m{branch};epid={EPID}",
        f"To: {to}",
        f"Call-ID: {branch}@mallory",
        f"CSeq: 1 {method}",
        *extra,
        body=body,
    )


def alice_req(method, ruri, branch, extra=(), to=f"<sip:bob@{D}>", body="", cseq=1, callid=None):
    return msg(
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/TLS {ALICE_ADDR};branch=z9hG4bK{branch}",
        "Max-Forwards: 70",
        f"From: <sip:alice@{D}>;tag=a{branch};epid={EPID}",
        f"To: {to}",
        f"Call-ID: {callid or branch + '@alice'}",
        f"CSeq: {cseq} {method}",
        *extra,
        body=body,
    )


SEEDS = {
    # Mallory sends a MESSAGE as alice (her From and epid), without credentials: challenged, and
    # nothing may be signed with alice's SA for it.
    "seed-mallory-message-as-alice": seed(
        chunk(MALLORY, mallory_req("MESSAGE", f"sip:bob@{D}", "mm1",
                                   ["Content-Type: text/plain"], body="hi, it is alice")),
    ),
    # A response with a forged Via: our host on top (a branch of ours in form only), a victim
    # below, from mallory, from alice and from the next hop.
    "seed-forged-via-response": seed(*[
        chunk(who, msg(
            "SIP/2.0 200 OK",
            f"Via: SIP/2.0/UDP {GW}:5060;branch=z9hG4bKsgw0123456789ab.{n}",
            f"Via: SIP/2.0/TCP 127.0.0.1:22;branch=z9hG4bKvictim{n}",
            f"From: <sip:alice@{D}>;tag=1;epid={EPID}",
            f"To: <sip:bob@{D}>;tag=2;epid={EPID}",
            f"Call-ID: stray{n}",
            "CSeq: 1 INVITE",
        ))
        for n, who in enumerate([MALLORY, ALICE, HOP])
    ]),
    # Mallory registers alice's AOR with alice's epid: a plain REGISTER, then the first NTLM leg
    # (an attacker starting a handshake with alice's epid).
    "seed-mallory-register-alice": seed(
        chunk(MALLORY, mallory_req("REGISTER", f"sip:{D}", "mr1",
                                   [f"Contact: <sip:alice@{MALLORY_ADDR}>", "Expires: 3600"],
                                   to=f"<sip:alice@{D}>")),
        chunk(MALLORY, mallory_req("REGISTER", f"sip:{D}", "mr2",
                                   [f"Contact: <sip:alice@{MALLORY_ADDR}>", "Expires: 3600",
                                    'Authorization: NTLM qop="auth", realm="SIP Communications Service", '
                                    f'targetname="gw.{D}", gssapi-data="", version=4'],
                                   to=f"<sip:alice@{D}>")),
    ),
    # A request with a Route to 127.0.0.1:22: signed by alice (authenticated), then from mallory.
    "seed-route-to-loopback": seed(
        chunk(ALICE_SIGNED, alice_req("MESSAGE", f"sip:bob@{D}", "ar1",
                                      ["Route: <sip:127.0.0.1:22;transport=tcp;lr>",
                                       "Content-Type: text/plain"], body="ssh?")),
        chunk(MALLORY, mallory_req("MESSAGE", f"sip:bob@{D}", "mr3",
                                   ["Route: <sip:127.0.0.1:22;transport=tcp;lr>"])),
        chunk(ALICE_SIGNED, alice_req("OPTIONS", "sip:127.0.0.1:22;transport=tcp", "ar2")),
    ),
    # A Route naming a host: the edge asks for it to be resolved (the harness resolves names to
    # loopback, and every other one also to the next hop); the policy is judged on the addresses.
    "seed-route-to-name": seed(
        chunk(ALICE_SIGNED, alice_req("MESSAGE", f"sip:bob@{D}", "rn1",
                                      ["Route: <sip:internal.example.net:22;transport=tcp;lr>",
                                       "Content-Type: text/plain"], body="ssh?")),
        chunk(ALICE_SIGNED, alice_req("MESSAGE", f"sip:bob@{D}", "rn2",
                                      ["Route: <sip:hops.example.net;lr>"], body="x")),
        chunk(MALLORY, mallory_req("MESSAGE", f"sip:bob@{D}", "rn3",
                                   ["Route: <sip:internal.example.net:22;transport=tcp;lr>"])),
    ),
    # A call from alice through the next hop: INVITE (signed), 180 and 200 from the next hop
    # (built from the request it got), ACK and BYE along the Record-Route.
    "seed-call-through-hop": seed(
        chunk(ALICE_SIGNED, alice_req("INVITE", f"sip:bob@{D}", "ac1",
                                      [f"Contact: <sip:alice@{ALICE_ADDR};transport=tls>"],
                                      callid="call-1")),
        chunk(HOP, b"SIP/2.0 180 Ringing\r\n${via}${rr}${dialog}Content-Length: 0\r\n\r\n"),
        chunk(HOP, b"SIP/2.0 200 OK\r\n${via}${rr}${dialog}"
                   b"Contact: <sip:bob@" + HOP_ADDR.encode() + b">\r\nContent-Length: 0\r\n\r\n"),
        chunk(ALICE_SIGNED, b"ACK ${contact} SIP/2.0\r\nVia: SIP/2.0/TLS " + ALICE_ADDR.encode() +
              b";branch=z9hG4bKac2\r\n${route}Max-Forwards: 70\r\nFrom: <sip:alice@" + D.encode() +
              b">;tag=aac1;epid=" + EPID.encode() + b"\r\nTo: <sip:bob@" + D.encode() +
              b">;tag=fz\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"),
        chunk(MALLORY, b"BYE sip:bob@" + HOP_ADDR.encode() + b" SIP/2.0\r\nVia: SIP/2.0/UDP " +
              MALLORY_ADDR.encode() + b";branch=z9hG4bKmb1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@" +
              D.encode() + b">;tag=aac1;epid=${epid}\r\nTo: <sip:bob@" + D.encode() +
              b">;tag=fz\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"),
    ),
    # The next hop sends alice a MESSAGE (she is registered): it reaches her signed; she answers
    # (signed), mallory answers too with alice's opaque in a forged Authorization.
    "seed-hop-message-to-alice": seed(
        chunk(HOP, msg(
            f"MESSAGE sip:alice@{D} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOP_ADDR};branch=z9hG4bKh1",
            "Max-Forwards: 70",
            f"From: <sip:bob@{D}>;tag=h1",
            f"To: <sip:alice@{D}>",
            "Call-ID: hop-msg-1",
            "CSeq: 1 MESSAGE",
            "Content-Type: text/plain",
            body="hello alice",
        )),
        chunk(MALLORY, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP " + GW.encode() +
              b":5060;branch=z9hG4bKsgw0\r\nFrom: <sip:bob@" + D.encode() +
              b">;tag=h1\r\nTo: <sip:alice@" + D.encode() + b">;tag=x;epid=${epid}\r\n"
              b"Call-ID: hop-msg-1\r\nCSeq: 1 MESSAGE\r\n"
              b"Authorization: NTLM opaque=\"${opaque}\", crand=\"1\", cnum=\"1\", response=\"00\"\r\n"
              b"Content-Length: 0\r\n\r\n"),
        chunk(ALICE_SIGNED, b"SIP/2.0 200 OK\r\n${via}${dialog}Content-Length: 0\r\n\r\n"),
    ),
    # Issue 12 point 6: a flood of first NTLM legs from one address in alice's name (no epid), 40
    # back to back, over the per-source cap of pending handshakes; then alice signs a request.
    "seed-mallory-handshake-flood": seed(
        chunk(MALLORY, msg(
            f"REGISTER sip:{D} SIP/2.0",
            f"Via: SIP/2.0/UDP {MALLORY_ADDR};branch=z9hG4bKfl1;rport",
            "Max-Forwards: 70",
            f"From: <sip:alice@{D}>;tag=fl1",
            f"To: <sip:alice@{D}>",
            "Call-ID: flood@mallory",
            "CSeq: 1 REGISTER",
            f"Contact: <sip:alice@{MALLORY_ADDR}>",
            'Authorization: NTLM qop="auth", realm="SIP Communications Service", '
            f'targetname="gw.{D}", gssapi-data="", version=4',
        ), repeat=7),
        chunk(ALICE_SIGNED, alice_req("MESSAGE", f"sip:bob@{D}", "af1",
                                      ["Content-Type: text/plain"], body="still here")),
    ),
    # Mallory tries Digest as bob (wrong response), and an OPTIONS keep-alive to the domain.
    "seed-mallory-digest-and-options": seed(
        chunk(MALLORY, mallory_req("REGISTER", f"sip:{D}", "md1",
                                   [f"Contact: <sip:bob@{MALLORY_ADDR}>",
                                    f'Authorization: Digest username="bob", realm="{D}", nonce="00", '
                                    f'uri="sip:{D}", response="00000000000000000000000000000000", '
                                    'algorithm=MD5, qop=auth, nc=00000001, cnonce="c"'],
                                   to=f"<sip:bob@{D}>")),
        chunk(MALLORY, mallory_req("OPTIONS", f"sip:{D}", "mo1", to=f"<sip:{D}>")),
    ),
}
