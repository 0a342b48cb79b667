#!/usr/bin/env bash
# Reproduces every figure of benches/load/RESULTS.md with one command:
#   benches/load/run.sh            (full run; SA_COUNT=1000000 for the memory figure)
#   QUICK=1 benches/load/run.sh    (short smoke run)
# It builds sagw and sagw-client in release mode, starts the gateway on loopback with the
# configuration in $GATEWAY_CONFIG (default: benches/load/gateway.toml), and drives it with
# sagw-client. Everything stays on 127.0.0.1 and every loop is bounded in count and time.
#
# Figures:
#   1. NTLM sign-ins/s and latency against offered sign-in rate (TCP)
#   2. Kerberos sign-ins/s and latency against offered rate (needs KRB5_CONFIG, a KDC and a
#      gateway keytab; skipped with a notice otherwise)
#   3. signed MESSAGEs/s and latency against offered message rate (NTLM SAs)
#   4. gateway CPU per sign-in and per signed MESSAGE (utime+stime of the gateway from /proc)
#   5. gateway RSS with SA_COUNT established SAs (bytes per SA = RSS delta / SAs), over UDP
# Output: results/*.json (one sagw-client summary per point), results/summary.json, chart.svg.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/results"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
GATEWAY_CONFIG="${GATEWAY_CONFIG:-$HERE/gateway.toml}"
PORT="${PORT:-25060}"
SERVER="127.0.0.1:$PORT"
SIP_DOMAIN="${SIP_DOMAIN:-example.com}"
NTLM_DOMAIN="${NTLM_DOMAIN:-EXAMPLE}"
USERS="${USERS:-1000}"
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  RATES="${RATES-200 500}"; MSG_RATES="${MSG_RATES-1000 2000}"; POINT_SECS=5; SA_COUNT="${SA_COUNT:-20000}"
else
  RATES="${RATES-250 500 1000 2000 4000 8000}"; MSG_RATES="${MSG_RATES-1000 2500 5000 10000 20000 40000}"
  POINT_SECS="${POINT_SECS:-20}"; SA_COUNT="${SA_COUNT:-1000000}"
fi
KRB_RATES="${KRB_RATES-$RATES}"  # an empty list skips a series (RATES="" MSG_RATES="": memory only)
CONC="${CONC:-64}"

mkdir -p "$OUT"
cd "$ROOT"
cargo build --release -p sagw-gateway -p sagw-client >&2
SAGW="$TARGET/release/sagw"
CLIENT="$TARGET/release/sagw-client"

"$SAGW" --config "$GATEWAY_CONFIG" check-config >&2 || {
  echo "run.sh: $GATEWAY_CONFIG is not a valid gateway configuration (see docs/configuration.md)" >&2
  exit 3
}
sed "s/25060/$PORT/g" "$GATEWAY_CONFIG" >"$OUT/gateway.toml"
# Credentials for load0..load<USERS-1> (NT hash + Digest HA1 for the sip_domain realm), and
# Kerberos when KRB_KEYTAB (keytab of sip/$KRB_FQDN) is given with KRB5_CONFIG/KRB_REALM.
CREDS=$(awk -F'"' '/^credentials/ {print $2}' "$OUT/gateway.toml")
mkdir -p "$(dirname "$CREDS")"
(umask 077 && python3 "$HERE/make_users.py" "$USERS" "$SIP_DOMAIN" >"$CREDS")
# The MESSAGE target: a client that answers every MESSAGE with a signed 200 (added the operator's
# way, `sagw user add`, password on stdin).
printf 'echo-pw\n' | "$SAGW" --config "$OUT/gateway.toml" user add echo >&2
if [ -n "${KRB_KEYTAB:-}" ]; then
  sed -i -e 's/^schemes = .*/schemes = ["ntlm", "kerberos", "digest"]/' \
    -e "s|^kerberos_keytab = .*||" -e "s|^fqdn = .*|fqdn = \"${KRB_FQDN:?KRB_FQDN}\"|" "$OUT/gateway.toml"
  echo "kerberos_keytab = \"$KRB_KEYTAB\"" >>"$OUT/gateway.toml"
fi
"$SAGW" --config "$OUT/gateway.toml" --log-level warn run >"$OUT/gateway.log" 2>&1 &
GW=$!
ECHO=""
trap 'kill $ECHO "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "$GW" 2>/dev/null; then
  echo "run.sh: the gateway did not start:" >&2
  cat "$OUT/gateway.log" >&2
  exit 3
fi

cpu_ticks() { awk '{print $14+$15}' "/proc/$GW/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$GW/status"; }
TICK=$(getconf CLK_TCK)

common=(--server "$SERVER" --sip-domain "$SIP_DOMAIN" --domain "$NTLM_DOMAIN" --timeout 10 --json)

# The gateway must authenticate: a probe that gets 200 without credentials means it does not.
if ! LOAD0_PW="${LOAD0_PW:-load0-pw}" "$CLIENT" probe "${common[@]}" --user load0 \
     --password-env LOAD0_PW --scheme ntlm >"$OUT/probe.json" 2>&1; then
  label=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("failure_label",""))' "$OUT/probe.json" 2>/dev/null || true)
  if [ "$label" = "protocol" ]; then
    echo "run.sh: the gateway at $SERVER accepted REGISTER without authentication." >&2
    echo "        It has no auth configured (issue 7: wire the security core into sagw), so there is" >&2
    echo "        nothing MS-SIPAE to measure. See $OUT/probe.json." >&2
    exit 3
  fi
  echo "run.sh: the NTLM probe failed; see $OUT/probe.json" >&2
  exit 3
fi

point() { # name, then sagw-client load args; records CPU ticks and the summary
  local name=$1; shift
  local t0; t0=$(cpu_ticks)
  "$CLIENT" load "${common[@]}" "$@" >"$OUT/$name.json"
  local t1; t1=$(cpu_ticks)
  python3 - "$OUT/$name.json" "$((t1 - t0))" "$TICK" <<'PY'
import json, sys
p, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = json.load(open(p)); s["gateway_cpu_secs"] = ticks / hz
json.dump(s, open(p, "w"), indent=1)
PY
}

for r in $RATES; do
  point "ntlm-signin-$r" --scheme ntlm --users "$USERS" --endpoints $((r * POINT_SECS)) \
    --concurrency "$CONC" --rate "$r" --duration "$POINT_SECS"
done
if [ -n "${KRB5_CONFIG:-}" ] && [ -n "${KRB_REALM:-}" ] && [ -n "${KRB_KEYTAB:-}" ]; then
  for r in $KRB_RATES; do
    point "kerberos-signin-$r" --scheme kerberos --krb-realm "$KRB_REALM" --users "${KRB_USERS:-20}" \
      --endpoints $((r * POINT_SECS)) --concurrency "$CONC" --rate "$r" --duration "$POINT_SECS"
  done
else
  echo "run.sh: KRB5_CONFIG/KRB_REALM/KRB_KEYTAB not set: Kerberos points skipped" >&2
fi
# sip:echo@$SIP_DOMAIN (the default --message-target) signs in and answers: every MESSAGE is
# verified and re-signed by the gateway in both directions (A -> gateway -> echo -> gateway -> A).
ECHO_PW=echo-pw "$CLIENT" probe --server "$SERVER" --sip-domain "$SIP_DOMAIN" --domain "$NTLM_DOMAIN" \
  --user echo --password-env ECHO_PW --scheme ntlm --listen 36000 >"$OUT/echo.log" 2>&1 &
ECHO=$!
sleep 2
for r in $MSG_RATES; do
  point "ntlm-message-$r" --scheme ntlm --users "$USERS" --endpoints "$CONC" --concurrency "$CONC" \
    --messages $((r * POINT_SECS / CONC + 1)) --message-rate "$r" --duration "$POINT_SECS"
done

kill "$ECHO" 2>/dev/null || true; ECHO=""

# Memory: SA_COUNT sign-ins that stay established (no un-REGISTER). MEM_TRANSPORT=udp (default)
# leaves each REGISTER's server transaction in the table for Timer J (64*T1 = 32 s), so above
# ~1000 sign-ins/s the [proxy] max_transactions cap (100 000) answers 503 and the RSS includes those
# transactions; MEM_TRANSPORT=tcp (Timer J = 0) measures SA + registrar binding alone.
rss0=$(rss_kib)
point "memory-sas" --transport "${MEM_TRANSPORT:-udp}" --scheme ntlm --users "$USERS" --endpoints "$SA_COUNT" \
  --concurrency "$CONC" --duration "${MEM_SECS:-3000}"
rss1=$(rss_kib)
echo "{\"rss_before_kib\": $rss0, \"rss_after_kib\": $rss1}" >"$OUT/memory.json"

python3 "$HERE/chart.py" "$OUT" "$HERE/chart.svg" >"$OUT/summary.json"
echo "run.sh: results in $OUT, chart in $HERE/chart.svg" >&2
