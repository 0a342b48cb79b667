#!/usr/bin/env python3
"""Tables of benches/pool/run.sh from results/r<round>/<step>.json: every round's figures, then the
median over the rounds and the ratios against the targets. Usage: summary.py RESULTS_DIR ROUNDS"""
import json
import os
import statistics
import sys

out, rounds = sys.argv[1], int(sys.argv[2])


def load(r, name):
    p = os.path.join(out, f"r{r}", f"{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None


def us(x):
    return f"{x * 1e6:.0f}" if x is not None else "-"


def ms(x):
    return f"{x:.2f}" if x is not None else "-"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def single(s, phase):
    """One-client step: (ok, failed, per_sec, p50, p99, gateway CPU per op, redis CPU per op)."""
    if s is None:
        return None
    c = s["clients"][0][phase]
    ok = c["ok"]
    cpu = sum(s["gateway_cpu_secs"])
    return {
        "ok": ok,
        "failed": c["failed"],
        "failures": c["failures"],
        "per_sec": c["per_sec"],
        "p50": c["latency"]["p50_ms"],
        "p99": c["latency"]["p99_ms"],
        "cpu": cpu / ok if ok else None,
        "redis": s["redis_cpu_secs"] / ok if ok else None,
        "gw_cpu_secs": cpu,
        "wall": s["wall_secs"],
        "dropped": s.get("events_dropped_warnings", 0),
    }


def pooled(s):
    """Two-client sign-in step: total sign-ins/s over the longest client's run, CPU of every gateway."""
    if s is None:
        return None
    cl = [c["sign_ins"] for c in s["clients"]]
    ok = sum(c["ok"] for c in cl)
    el = max(c["elapsed_secs"] for c in s["clients"])
    cpu = sum(s["gateway_cpu_secs"])
    return {
        "ok": ok,
        "failed": sum(c["failed"] for c in cl),
        "failures": {k: v for c in cl for k, v in c["failures"].items()},
        "per_sec": ok / el,
        "p50": max(c["latency"]["p50_ms"] for c in cl),
        "p99": max(c["latency"]["p99_ms"] for c in cl),
        "cpu": cpu / ok if ok else None,
        "redis": s["redis_cpu_secs"] / ok if ok else None,
        "gw_cpu_secs": cpu,
        "gw_cores": cpu / s["wall_secs"],
        "per_node": s["gateway_cpu_secs"],
        "wall": s["wall_secs"],
        "dropped": s.get("events_dropped_warnings", 0),
    }


rows = []  # (section, label, metric dict per round)
series = [
    ("1. signed MESSAGE round trips, paced", "msg-paced", "messages", single),
    ("1. signed MESSAGE round trips, unpaced", "msg-sat", "messages", single),
    ("2. NTLM sign-ins, paced", "ntlm", "sign_ins", single),
    ("2. Kerberos sign-ins, paced", "krb", "sign_ins", single),
    ("4. signed MESSAGE round trips, paced, during a sign-in storm", "storm", "messages", single),
]
data = {}
for title, step, phase, fn in series:
    for be in ("m", "a"):
        data[(step, be)] = [fn(load(r, f"{step}-{be}"), phase) for r in range(1, rounds + 1)]
for sch in ("ntlm", "krb"):
    for n in ("1", "2"):
        data[(f"pool{n}", sch)] = [pooled(load(r, f"pool{n}-{sch}")) for r in range(1, rounds + 1)]
storms = {be: [load(r, f"storm-{be}-storm") for r in range(1, rounds + 1)] for be in ("m", "a")}

BE = {"m": "memory", "a": "redis"}
print()
print("## Every round (gateway CPU per operation from /proc utime+stime, 10 ms ticks; latency from the load client)")
print()
print("| step | backend | round | ok | failed | achieved/s | p50 ms | p99 ms | gateway CPU/op µs | redis CPU/op µs | 'events dropped' warnings |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for title, step, phase, fn in series:
    for be in ("m", "a"):
        for r, x in enumerate(data[(step, be)], 1):
            if x is None:
                continue
            fails = "" if not x["failures"] else " " + json.dumps(x["failures"])
            print(f"| {title} | {BE[be]} | {r} | {x['ok']} | {x['failed']}{fails} | {x['per_sec']:.0f} | "
                  f"{ms(x['p50'])} | {ms(x['p99'])} | {us(x['cpu'])} | {us(x['redis'])} | {x['dropped']} |")
for sch in ("ntlm", "krb"):
    for n, label in (("1", "one node (2 clients at A)"), ("2", "two nodes (1 client at A, 1 at B)")):
        for r, x in enumerate(data[(f"pool{n}", sch)], 1):
            if x is None:
                continue
            fails = "" if not x["failures"] else " " + json.dumps(x["failures"])
            nodes = " + ".join(f"{c:.2f}" for c in x["per_node"])
            print(f"| 3. {'NTLM' if sch == 'ntlm' else 'Kerberos'} sign-ins, unpaced, {label} | redis | {r} | "
                  f"{x['ok']} | {x['failed']}{fails} | {x['per_sec']:.0f} | {ms(x['p50'])} | {ms(x['p99'])} | "
                  f"{us(x['cpu'])} (CPU s {nodes}) | {us(x['redis'])} | {x['dropped']} |")
for be in ("m", "a"):
    for r, s in enumerate(storms[be], 1):
        if s is None:
            continue
        c = s["sign_ins"]
        print(f"| 4. the storm itself ({'+'.join(s['by_scheme'].keys()) or '-'}) | {BE[be]} | {r} | {c['ok']} | "
              f"{c['failed']}{'' if not c['failures'] else ' ' + json.dumps(c['failures'])} | {c['per_sec']:.0f} | "
              f"{ms(c['latency']['p50_ms'])} | {ms(c['latency']['p99_ms'])} | | | |")


def m(step, be, key):
    return med([x[key] if x else None for x in data[(step, be)]])


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "-"


print()
print(f"## Median of {rounds} rounds")
print()
print("| measure | memory | redis | redis / memory |")
print("|---|---:|---:|---:|")
for title, step, key, f in [
    ("gateway CPU per signed MESSAGE round trip, paced (µs)", "msg-paced", "cpu", us),
    ("gateway CPU per signed MESSAGE round trip, unpaced (µs)", "msg-sat", "cpu", us),
    ("signed MESSAGE round trips/s, unpaced", "msg-sat", "per_sec", lambda v: f"{v:.0f}" if v else "-"),
    ("MESSAGE p99, paced (ms)", "msg-paced", "p99", ms),
    ("gateway CPU per NTLM sign-in, paced (µs)", "ntlm", "cpu", us),
    ("NTLM sign-in p50 (ms)", "ntlm", "p50", ms),
    ("NTLM sign-in p99 (ms)", "ntlm", "p99", ms),
    ("gateway CPU per Kerberos sign-in, paced (µs)", "krb", "cpu", us),
    ("Kerberos sign-in p50 (ms)", "krb", "p50", ms),
    ("Kerberos sign-in p99 (ms)", "krb", "p99", ms),
    ("redis-server CPU per NTLM sign-in (µs)", "ntlm", "redis", us),
    ("redis-server CPU per Kerberos sign-in (µs)", "krb", "redis", us),
    ("redis-server CPU per MESSAGE round trip, unpaced (µs)", "msg-sat", "redis", us),
]:
    a, b = m(step, "m", key), m(step, "a", key)
    if a is None and b is None:
        continue
    print(f"| {title} | {f(a)} | {f(b)} | {ratio(b, a)} |")

print()
print("| sign-ins, unpaced, Redis backend | one node | two-node pool | two / one |")
print("|---|---:|---:|---:|")
for sch, name in (("ntlm", "NTLM"), ("krb", "Kerberos")):
    if all(x is None for x in data[("pool1", sch)]):
        continue
    for title, key, f in [
        ("sign-ins/s", "per_sec", lambda v: f"{v:.0f}" if v else "-"),
        ("gateway CPU, cores (all nodes)", "gw_cores", lambda v: f"{v:.2f}" if v else "-"),
        ("gateway CPU per sign-in (µs, all nodes)", "cpu", us),
        ("redis-server CPU per sign-in (µs)", "redis", us),
        ("sign-in p99 (ms, worse client)", "p99", ms),
    ]:
        a, b = m("pool1", sch, key), m("pool2", sch, key)
        print(f"| {name}: {title} | {f(a)} | {f(b)} | {ratio(b, a)} |")

print()
print("| signed MESSAGE round trips (paced) | without a storm | during the storm | during / without |")
print("|---|---:|---:|---:|")
for be in ("m", "a"):
    for key, f in (("p50", ms), ("p99", ms), ("cpu", us)):
        a, b = m("msg-paced", be, key), m("storm", be, key)
        label = {"p50": "p50 (ms)", "p99": "p99 (ms)", "cpu": "gateway CPU per round trip, storm's sign-ins included (µs)"}[key]
        print(f"| {BE[be]}: {label} | {f(a)} | {f(b)} | {ratio(b, a)} |")
