#!/usr/bin/env python3
"""Reads the sagw-client summaries in RESULTS_DIR and writes an SVG chart (hand-written, no
dependencies): achieved throughput and p50/p99 latency against offered load for NTLM sign-ins,
Kerberos sign-ins and signed MESSAGEs. Prints a JSON digest (also CPU per operation and bytes per
SA) on stdout. Usage: chart.py RESULTS_DIR OUT.svg"""
import glob, json, os, sys

res, out = sys.argv[1], sys.argv[2]

def series(prefix, phase, rate_key):
    pts = []
    for p in glob.glob(os.path.join(res, prefix + "-*.json")):
        s = json.load(open(p))
        ph = s[phase]
        offered = s.get(rate_key) or 0
        ops = ph["ok"]
        pts.append({
            "offered": offered, "achieved": ph["per_sec"], "p50": ph["latency"]["p50_ms"],
            "p99": ph["latency"]["p99_ms"], "failed": ph["failed"],
            "cpu_us_per_op": 1e6 * s.get("gateway_cpu_secs", 0) / ops if ops else None,
        })
    return sorted(pts, key=lambda x: x["offered"])

data = {
    "NTLM sign-ins": series("ntlm-signin", "sign_ins", "offered_sign_in_rate"),
    "Kerberos sign-ins": series("kerberos-signin", "sign_ins", "offered_sign_in_rate"),
    "signed MESSAGEs": series("ntlm-message", "messages", "offered_message_rate"),
}
digest = {"series": data}
mem = os.path.join(res, "memory.json")
sas = os.path.join(res, "memory-sas.json")
if os.path.exists(mem) and os.path.exists(sas):
    m, s = json.load(open(mem)), json.load(open(sas))
    n = s["sign_ins"]["ok"]
    delta = (m["rss_after_kib"] - m["rss_before_kib"]) * 1024
    digest["memory"] = {"sas": n, "rss_delta_bytes": delta, "bytes_per_sa": delta / n if n else None}

W, H, M = 900, 360, 60
colors = {"NTLM sign-ins": "#1f77b4", "Kerberos sign-ins": "#2ca02c", "signed MESSAGEs": "#d62728"}

def panel(x0, title, key, ylabel, log_y=False):
    pts = [(n, p) for n, s in data.items() for p in s]
    if not pts:
        return f'<text x="{x0 + 20}" y="{M + 20}">no data</text>'
    xmax = max(p["offered"] for _, p in pts) * 1.05 or 1
    ymax = max(max(p[key] for _, p in pts), 1e-9) * 1.1
    pw, ph = W / 2 - 2 * M, H - 2 * M
    X = lambda v: x0 + M + pw * v / xmax
    Y = lambda v: M + ph - ph * v / ymax
    g = [f'<text x="{x0 + W / 4}" y="{M - 25}" text-anchor="middle" font-weight="bold">{title}</text>',
         f'<line x1="{X(0)}" y1="{Y(0)}" x2="{X(xmax)}" y2="{Y(0)}" stroke="black"/>',
         f'<line x1="{X(0)}" y1="{Y(0)}" x2="{X(0)}" y2="{Y(ymax)}" stroke="black"/>',
         f'<text x="{x0 + W / 4}" y="{H - 15}" text-anchor="middle">offered load (operations/s)</text>',
         f'<text x="{x0 + 15}" y="{H / 2}" transform="rotate(-90 {x0 + 15} {H / 2})" text-anchor="middle">{ylabel}</text>']
    for i in range(5):
        xv, yv = xmax * i / 4, ymax * i / 4
        g.append(f'<text x="{X(xv)}" y="{Y(0) + 15}" font-size="10" text-anchor="middle">{xv:.0f}</text>')
        g.append(f'<text x="{X(0) - 5}" y="{Y(yv) + 3}" font-size="10" text-anchor="end">{yv:.3g}</text>')
    for name, s in data.items():
        if not s:
            continue
        path = " ".join(f'{"M" if i == 0 else "L"}{X(p["offered"]):.1f},{Y(p[key]):.1f}' for i, p in enumerate(s))
        g.append(f'<path d="{path}" fill="none" stroke="{colors[name]}" stroke-width="2"/>')
        g += [f'<circle cx="{X(p["offered"]):.1f}" cy="{Y(p[key]):.1f}" r="3" fill="{colors[name]}"/>' for p in s]
    return "\n".join(g)

legend = "".join(
    f'<rect x="{M + i * 200}" y="{H + 5}" width="12" height="12" fill="{c}"/><text x="{M + i * 200 + 18}" y="{H + 16}">{n}</text>'
    for i, (n, c) in enumerate(colors.items()))
svg = f'''<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 30}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
{panel(0, "achieved throughput", "achieved", "achieved operations/s")}
{panel(W / 2, "latency p99 (ms)", "p99", "p99 latency, ms")}
{legend}
</svg>'''
open(out, "w").write(svg)
print(json.dumps(digest, indent=1))
