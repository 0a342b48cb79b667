#!/usr/bin/env python3
"""Writes the libFuzzer dictionaries fuzz/dict/<target>.dict (issue 17).

libFuzzer's comparison tracing does not see through `eq_ignore_ascii_case` on header names,
`SIP/2.0` or scheme names, so without these tokens random mutation almost never builds a SIP
message. Each dictionary holds the tokens its target's input is made of: SIP methods, `SIP/2.0`,
header names (full and compact forms), URI and header parameters, authentication schemes and
their parameter names, plus the target's own control bytes and placeholders (for proxy_auth,
the hand-written fuzz/dict/proxy_auth.extra). Rerun after changing a list, from anywhere:

    python3 fuzz/dict/make_dicts.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

METHODS = ["REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE", "SUBSCRIBE",
           "NOTIFY", "PUBLISH", "INFO", "PRACK", "UPDATE", "REFER", "SERVICE", "BENOTIFY"]
LINES = ["SIP/2.0", " SIP/2.0\r\n", "SIP/2.0 ", "SIP/2.0/UDP ", "SIP/2.0/TCP ", "SIP/2.0/TLS ",
         "\r\n", "\r\n\r\n", ": ", "\r\n ", "sip:", "sips:", "tel:", "<sip:", ">", ";tag=",
         ";branch=z9hG4bK", ";lr", ";transport=tcp", ";transport=tls", ";transport=udp", ";rport",
         ";received=", ";maddr=", ";epid=", ";expires=", ";q=0.5", "@example.com",
         "sip:alice@example.com", "sip:bob@example.com", "192.0.2.1", "198.51.100.10:5060"]
HEADERS = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m",
           "Content-Length", "l", "Content-Type", "c", "Content-Encoding", "e", "Subject", "s",
           "Supported", "k", "Max-Forwards", "Route", "Record-Route", "Expires", "Min-Expires",
           "Allow", "Require", "Proxy-Require", "Unsupported", "User-Agent", "Server", "Date",
           "Event", "o", "Refer-To", "r", "Referred-By", "b", "Allow-Events", "u", "Retry-After",
           "Reason", "P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "Path",
           "Service-Route", "Timestamp", "WWW-Authenticate", "Proxy-Authenticate",
           "Authorization", "Proxy-Authorization", "Authentication-Info",
           "Proxy-Authentication-Info", "ms-keep-alive", "Ms-Client-Diagnostics"]
SCHEMES = ["NTLM", "Kerberos", "TLS-DSK", "Digest", "Basic", "Negotiate"]
AUTH_PARAMS = ["realm", "targetname", "opaque", "gssapi-data", "sspi-data", "version", "qop",
               "crand", "cnum", "srand", "snum", "rspauth", "response", "username", "userhash",
               "uri", "nonce", "cnonce", "nc", "algorithm", "stale", "nextnonce", "auth", "auth-int",
               "MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess",
               "TRUE", "00000001", "SIP Communications Service", "gw.example.com", "\"", "=\"", "\", "]
NTLM = ["NTLMSSP\x00", "\x01\x00\x00\x00", "\x02\x00\x00\x00", "\x03\x00\x00\x00", "TlRMTVNTUA",
        "TlRMTVNTUAAD", "\x01\x01\x00\x00", "\x02\x00\x0a\x00", "\x06\x00\x04\x00"]
CHUNK = ["\xff\x00", "\xff\x01", "\xff\x02", "\xff\x03", "\xff\x04", "\xff\x05", "\xff\x06", "\xff\x07",
         "${opaque}", "${epid}"]
EDGE = ["${via}", "${dialog}", "${rr}", "${route}", "${contact}"]

SIP = [m + " " for m in METHODS] + LINES + [h + ": " for h in HEADERS] + ["\r\n" + h + ":" for h in HEADERS]
AUTH = SCHEMES + [s + " " for s in SCHEMES] + AUTH_PARAMS + [p + "=" for p in AUTH_PARAMS[:22]]

TARGETS = {
    "sip_message": SIP + ["Digest ", "NTLM "],
    "sip_stream": SIP + ["Content-Length: 0\r\n\r\n", "l: 0\r\n\r\n"],
    "auth_header": AUTH + ["\x01"],
    "digest_authorization": AUTH + ["@N", "@R", "sip:fuzz.example", "fuzz.example"],
    "ntlm_authenticate": NTLM + ["\xa5", "COSMO", "C\x00O\x00S\x00M\x00O\x00"],
    "auth_decide": SIP + AUTH + CHUNK,
    "proxy_edge": SIP + AUTH + CHUNK + EDGE,
    "proxy_auth": SIP + AUTH + CHUNK + EDGE,
}


def quote(tok):
    out = []
    for ch in tok.encode("latin-1"):
        if ch in (0x22, 0x5C) or ch < 0x20 or ch > 0x7E:
            out.append(f"\\x{ch:02x}")
        else:
            out.append(chr(ch))
    return '"' + "".join(out) + '"'


def main():
    for target, tokens in TARGETS.items():
        seen, lines = set(), [f"# libFuzzer dictionary for {target}: written by fuzz/dict/make_dicts.py."]
        for t in tokens:
            if t not in seen:
                seen.add(t)
                lines.append(quote(t))
        extra = os.path.join(HERE, f"{target}.extra")
        if os.path.exists(extra):
            with open(extra) as f:
                lines.append(f"# From {target}.extra (hand-written).")
                lines += [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
        with open(os.path.join(HERE, f"{target}.dict"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{len(lines) - 1:4} entries in fuzz/dict/{target}.dict")


if __name__ == "__main__":
    main()
