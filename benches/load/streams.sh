#!/usr/bin/env bash
# Issue 16, stream transports: gateway CPU per NTLM sign-in over UDP, TCP and TLS, same build,
# same run, each point on a fresh gateway (so that UDP's lingering transactions and the
# registrar's bindings of one point never weigh on the next).
#   benches/load/streams.sh                        (builds release sagw + sagw-client)
#   SAGW="/path/a /path/b" ROUNDS=3 benches/load/streams.sh   (interleaves several gateway builds)
#   PERF=1 ...   also the gateway's task-clock (CPU ms, finer than /proc's ticks), context switches
#                and syscalls per sign-in (perf stat), and
#                PERF_EVENTS (e.g. syscalls:sys_enter_futex) per sign-in
#   WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" ENDPOINTS=2500 ...
#                runs each gateway under that command prefix: the instruction count of a point,
#                whose difference between two ENDPOINTS values is the count per sign-in (the CPU
#                figures of such a run mean nothing)
# Environment: ENDPOINTS (30000 sign-ins per point), CONC (30 connections), TRANSPORTS
# ("udp tcp tls"), USERS (5000: 6 endpoints per user, under registrar.max_bindings_per_aor),
# PORT (25060: UDP and TCP; TLS on PORT+1). Output: one line per point on stdout
#   build transport sign-ins/s ok failed cpu_us_per_signin core_us_per_signin [task-clock cs syscalls, per sign-in] load1
# where core_us_per_signin is the CPU of the core thread alone (schedstat of the thread named
# sagw-core): what bounds one gateway's sign-ins per second on a host with cores to spare.
# and each point's sagw-client summary in benches/load/results/streams-*.json.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/results"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PORT="${PORT:-25060}"
TLS_PORT=$((PORT + 1))
ENDPOINTS="${ENDPOINTS:-30000}"
CONC="${CONC:-30}"
USERS="${USERS:-5000}"
ROUNDS="${ROUNDS:-1}"
TRANSPORTS="${TRANSPORTS:-udp tcp tls}"
PERF="${PERF:-0}"
WRAP="${WRAP:-}"
SIP_DOMAIN=example.com

mkdir -p "$OUT"
cd "$ROOT"
if [ -z "${SAGW:-}" ]; then
  cargo build --release -p sagw-gateway -p sagw-client >&2
  SAGW="$TARGET/release/sagw"
fi
CLIENT="${CLIENT:-$TARGET/release/sagw-client}"

# benches/load/gateway.toml with a TLS listener (certificate generated under [tls] generated_dir).
CONF="$OUT/streams-gateway.toml"
sed -e "s/25060/$PORT/g" -e "s|^tls = \"\"|tls = \"127.0.0.1:$TLS_PORT\"|" "$HERE/gateway.toml" >"$CONF"
CREDS=$(awk -F'"' '/^credentials/ {print $2}' "$CONF")
mkdir -p "$(dirname "$CREDS")"
(umask 077 && python3 "$HERE/make_users.py" "$USERS" "$SIP_DOMAIN" >"$CREDS")
TICK=$(getconf CLK_TCK)

GW=""
trap '[ -n "$GW" ] && kill "$GW" 2>/dev/null; wait 2>/dev/null || true' EXIT

# Nanoseconds the core thread has run (0 when there is none by that name).
core_ns() {
  local t
  for t in /proc/"$GW"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = sagw-core ]; then
      cut -d' ' -f1 "$t/schedstat"
      return
    fi
  done
  echo 0
}

point() { # binary, transport
  local bin=$1 transport=$2 server=127.0.0.1:$PORT
  [ "$transport" = tls ] && server=127.0.0.1:$TLS_PORT
  # shellcheck disable=SC2086 # WRAP is a command prefix, split on purpose
  $WRAP "$bin" --config "$CONF" --log-level warn run >"$OUT/streams-gateway.log" 2>&1 &
  GW=$!
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null && break
    sleep 0.1
  done
  local perf_pid="" perf_out="$OUT/streams-perf.txt"
  if [ "$PERF" = 1 ]; then
    perf stat -x, -e "task-clock,context-switches,raw_syscalls:sys_enter${PERF_EVENTS:+,$PERF_EVENTS}" -p "$GW" \
      -o "$perf_out" &
    perf_pid=$!
    sleep 0.3
  fi
  local t0 t1 c0 c1 json="$OUT/streams-$(basename "$bin")-$transport.json"
  t0=$(awk '{print $14+$15}' "/proc/$GW/stat")
  c0=$(core_ns)
  "$CLIENT" load --server "$server" --transport "$transport" --insecure --sip-domain "$SIP_DOMAIN" \
    --domain EXAMPLE --scheme ntlm --users "$USERS" --endpoints "$ENDPOINTS" \
    --concurrency "$CONC" --duration 600 --timeout 10 --json --no-progress >"$json"
  t1=$(awk '{print $14+$15}' "/proc/$GW/stat")
  c1=$(core_ns)
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
  fi
  kill "$GW"
  wait "$GW" 2>/dev/null || true
  GW=""
  python3 - "$json" "$((t1 - t0))" "$TICK" "$bin" "$transport" "$PERF" "$perf_out" "$((c1 - c0))" <<'PY'
import json, os, sys
p, ticks, hz, binary, transport, perf, perf_out, core_ns = sys.argv[1:9]
s = json.load(open(p))
ok, failed, rate = s["sign_ins"]["ok"], s["sign_ins"]["failed"], s["sign_ins"]["per_sec"]
cpu = int(ticks) / int(hz)
extra = ""
if perf == "1" and ok:
    counts = {}
    for line in open(perf_out):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            counts[f[2]] = float(f[0])
    extra = " task-clock %.1f us/sign-in cs/sign-in %.2f syscalls/sign-in %.2f" % (
        counts.pop("task-clock", 0) * 1e3 / ok, counts.pop("context-switches", 0) / ok, counts.pop("raw_syscalls:sys_enter", 0) / ok)
    extra += "".join(" %s %.2f" % (k.split(":")[-1], v / ok) for k, v in counts.items())
print("%s %s %.0f/s ok %d failed %d cpu %.1f us/sign-in core %.1f us/sign-in%s load1 %s" % (
    binary, transport, rate, ok, failed, cpu * 1e6 / max(ok, 1), int(core_ns) / 1e3 / max(ok, 1), extra,
    os.getloadavg()[0]), flush=True)
PY
}

for _ in $(seq "$ROUNDS"); do
  for bin in $SAGW; do
    for t in $TRANSPORTS; do
      point "$bin" "$t"
    done
  done
done
