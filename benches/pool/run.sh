#!/usr/bin/env bash
# Pools: the Redis backend against the memory backend, and a two-node pool against one node
# (issue 13, "What it must show"). One command, one run, everything on loopback:
#   benches/pool/run.sh                 (≈ 6 - 8 min after the build on 2 vCPUs)
#   ROUNDS=1 SECS=3 benches/pool/run.sh (smoke run)
#
# What it starts, all in a temporary directory removed at exit:
#   * redis-server on a free loopback port (--save "" --appendonly no: nothing on disk),
#   * a throw-away MIT KDC (benches/load/kdc.sh) when krb5kdc/kdb5_util/kadmin.local are installed
#     (else the Kerberos points are skipped and the storm of point 4 is an NTLM one),
#   * gateways from the release `sagw` binary with generated configuration files, all with the same
#     pool.key, users from benches/load/make_users.py and `sagw user add echo`:
#       M  [state] backend = "memory"
#       A  [state] backend = "redis", node "a"
#       B  [state] backend = "redis", node "b" (started only for the two-node steps)
#   * for each of M and A, the MESSAGE target: `sagw-client probe --listen` as user echo, which
#     verifies every MESSAGE and answers a signed 200.
# The load is `sagw-client load` over TCP. Gateway CPU is utime+stime of /proc/<pid>/stat before and
# after each step (every thread of the process: core thread, runtime, store task, Kerberos workers);
# redis-server's CPU likewise. Latencies are the load client's own (HDR histograms).
#
# Each round starts from fresh gateways M and A and an empty Redis (so does each step of 3), then
# runs, interleaved (the backend order alternates from round to round):
#   1. signed MESSAGE round trips on the owning node, paced (MSG_RATE/s) and unpaced, M vs A
#   2. NTLM and Kerberos sign-ins, paced (NTLM_RATE/s, KRB_RATE/s), M vs A
#   3. sign-ins/s, unpaced, two load clients (CONC/2 connections each): both at A (one node), then
#      one at A and one at B (two-node pool), for NTLM and Kerberos
#   4. the paced MESSAGE load of 1 again, during a Kerberos sign-in storm (STORM_RATE/s) on the
#      same gateway, M vs A; point 1's paced step is the "without a storm" figure
# Output: results/r<round>/<step>.json (the load clients' summaries with the CPU figures),
# results/summary.md (the tables; also printed on stdout), results/*.log (the gateways').
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="${OUT:-$HERE/results}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-4}"                 # length of each step
CONC="${CONC:-32}"                # connections of each step (split over two clients in 3)
USERS="${USERS:-4000}"            # NTLM users load0..; max_bindings_per_aor stays far away
MSG_RATE="${MSG_RATE:-2000}"      # paced signed MESSAGE round trips per second (1, 4)
MSG_SAT="${MSG_SAT:-60000}"       # unpaced MESSAGE step: at most this many (bounded by SECS)
NTLM_RATE="${NTLM_RATE:-1000}"    # paced NTLM sign-ins per second (2)
KRB_RATE="${KRB_RATE:-500}"       # paced Kerberos sign-ins per second (2)
STORM_RATE="${STORM_RATE:-1500}"  # Kerberos (or NTLM) sign-ins per second of the storm (4)
SAT_N="${SAT_N:-3000}"            # unpaced sign-in steps (3): this many per client, at most
KRB_USERS="${KRB_USERS:-40}"      # Kerberos principals (one kinit each, before the clock starts)
SIP_DOMAIN=example.com
NTLM_DOMAIN=EXAMPLE

cd "$ROOT"
cargo build --release -p sagw-gateway -p sagw-client >&2
SAGW="$TARGET/release/sagw"
CLIENT="$TARGET/release/sagw-client"
command -v redis-server >/dev/null || { echo "run.sh: redis-server is not installed (apt-get install redis-server)" >&2; exit 3; }

TMP=$(mktemp -d /tmp/sagw-pool-bench.XXXXXX)
chmod 700 "$TMP"
rm -rf "$OUT"; mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -x "$TMP/kdc/stop" ] && "$TMP/kdc/stop" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { # [ip]: a port free for both TCP and UDP there
  python3 - "${1:-127.0.0.1}" <<'PY'
import socket, sys
ip = sys.argv[1]
while True:
    t = socket.socket(); t.bind((ip, 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind((ip, p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()
PY
}
wait_tcp() { # ip:port pid name
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: $3 did not start" >&2; cat "$OUT/$3.log" >&2 2>/dev/null || true; exit 3
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# --- Redis --------------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
  --logfile "$OUT/redis.log" &
REDIS=$!; PIDS+=("$REDIS")
wait_tcp "127.0.0.1:$REDIS_PORT" "$REDIS" redis
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on $REDIS_URL" >&2

# --- Kerberos -----------------------------------------------------------------------------------
KRB=0
if command -v krb5kdc >/dev/null && command -v kdb5_util >/dev/null && command -v kadmin.local >/dev/null \
   && command -v kinit >/dev/null; then
  eval "$(KRB_USERS=$KRB_USERS KDC_PORT=$(free_port) "$ROOT/benches/load/kdc.sh" "$TMP/kdc")"
  KRB=1
else
  echo "run.sh: no MIT KDC tools (krb5-kdc, krb5-admin-server, krb5-user): Kerberos points skipped," \
       "the storm of point 4 is an NTLM one" >&2
fi

# --- Gateways -----------------------------------------------------------------------------------
head -c 32 /dev/urandom >"$TMP/pool.key"; chmod 600 "$TMP/pool.key"
(umask 077 && python3 "$ROOT/benches/load/make_users.py" "$USERS" "$SIP_DOMAIN" >"$TMP/users")
# Each gateway on a loopback address of its own, so that the pool's gateways trust each other by
# address (proxy.trusted_peers) while the load clients come from 127.0.0.1.
gw_ip() { case $1 in m) echo 127.0.0.1 ;; a) echo 127.0.0.2 ;; b) echo 127.0.0.3 ;; esac; }
gw_config() { # name port backend peers
  local schemes='["ntlm", "digest"]' krb=""
  if [ "$KRB" = 1 ]; then
    schemes='["ntlm", "kerberos", "digest"]'; krb="kerberos_keytab = \"$KRB_KEYTAB\""
  fi
  cat >"$TMP/$1.toml" <<CONF
[log]
level = "warn"
[listen]
udp = "$(gw_ip "$1"):$2"
tcp = "$(gw_ip "$1"):$2"
tls = ""
advertise = "$(gw_ip "$1")"
[tls]
generated_dir = "$TMP/$1-data"
[proxy]
mode = "registrar"
# Several gateways on two cores: none pinned (the default "auto" would pin all to the last CPU).
core_cpu = "none"
trusted_peers = [$4]
[registrar]
max_expires_secs = 7200
[metrics]
listen = ""
[auth]
enabled = true
schemes = $schemes
sip_domain = "$SIP_DOMAIN"
fqdn = "${KRB_FQDN:-sagw.example.com}"
credentials = "$TMP/users"
nonce_key = "$TMP/$1.nonce.key"
sa_idle_secs = 3600
$krb
[state]
backend = "$3"
snapshot = "$TMP/$1.snapshot"
key_file = "$TMP/pool.key"
redis = ["$REDIS_URL"]
node_id = "$1"
CONF
  "$SAGW" --config "$TMP/$1.toml" check-config >&2
}
start_gw() { # name port -> sets GWPID (the log is appended to: B starts once per round)
  "$SAGW" --config "$TMP/$1.toml" --log-level warn run >>"$OUT/$1.log" 2>&1 &
  GWPID=$!; PIDS+=("$GWPID")
  wait_tcp "$(gw_ip "$1"):$2" "$GWPID" "$1"
}
M_PORT=$(free_port 127.0.0.1); A_PORT=$(free_port 127.0.0.2); B_PORT=$(free_port 127.0.0.3)
gw_config m "$M_PORT" memory ""
gw_config a "$A_PORT" redis '"127.0.0.3"'
gw_config b "$B_PORT" redis '"127.0.0.2"'
printf 'echo-pw\n' | "$SAGW" --config "$TMP/m.toml" user add echo >&2
B=""; M=""; A=""; ECHO_M=""; ECHO_A=""

base=(--sip-domain "$SIP_DOMAIN" --domain "$NTLM_DOMAIN" --timeout 10 --json)
common=("${base[@]}" --no-progress)
stop() { local q; for q in "$@"; do if [ -n "$q" ]; then kill "$q" 2>/dev/null || true; wait "$q" 2>/dev/null || true; fi; done; }
echo_client() { # name port -> sets ECHOPID
  ECHO_PW=echo-pw "$CLIENT" probe --server "$(gw_ip "$1"):$2" "${base[@]}" --user echo \
    --password-env ECHO_PW --scheme ntlm --listen 36000 >>"$OUT/echo-$1.log" 2>&1 &
  ECHOPID=$!; PIDS+=("$ECHOPID")
}
# Every round, and every step of 3, starts from fresh gateways and an empty Redis: under unpaced
# sign-ins a Redis-backed gateway can fall into a loop of republishing (see docs/BENCHMARKS.md),
# which must not spill over into the next step. M and A restart together, so they stay alike.
fresh() { # [m] [a]: restart those (with their echo clients); a flushes Redis
  local g
  for g in "$@"; do
    if [ "$g" = m ]; then stop "$ECHO_M" "$M"; else stop "$ECHO_A" "$A"; fi
  done
  for g in "$@"; do
    if [ "$g" = a ]; then redis-cli -p "$REDIS_PORT" flushall >/dev/null; fi
    if [ "$g" = m ]; then
      start_gw m "$M_PORT"; M=$GWPID; echo_client m "$M_PORT"; ECHO_M=$ECHOPID
    else
      start_gw a "$A_PORT"; A=$GWPID; echo_client a "$A_PORT"; ECHO_A=$ECHOPID
    fi
  done
  sleep 1.5
}
dropped() { cat "$OUT"/?.log 2>/dev/null | grep -c 'receiver behind' || true; }

# --- Steps --------------------------------------------------------------------------------------
# step DIR NAME "GATEWAY PIDS" -- then one or more client specs separated by "::", each
# "IP:PORT args...". The clients run at once; CPU is measured around all of them.
step() {
  local dir=$1 name=$2 gws=$3; shift 3
  [ "${1:-}" = "--" ] && shift
  local -a t0=() specs=() cpids=()
  local spec="" a
  for a in "$@"; do
    if [ "$a" = "::" ]; then specs+=("$spec"); spec=""; else spec+="${spec:+ }$a"; fi
  done
  [ -n "$spec" ] && specs+=("$spec")
  local g; for g in $gws $REDIS; do t0+=("$(ticks "$g")"); done
  local w0; w0=$(date +%s.%N); local d0; d0=$(dropped)
  local k=0
  for spec in "${specs[@]}"; do
    # shellcheck disable=SC2086
    set -- $spec
    local port=$1; shift
    "$CLIENT" load --server "$port" "${common[@]}" "$@" >"$dir/$name.c$k.json" &
    cpids+=("$!"); k=$((k + 1))
  done
  for a in "${cpids[@]}"; do wait "$a" || true; done  # non-zero when some operations failed
  local w1; w1=$(date +%s.%N)
  local -a t1=(); for g in $gws $REDIS; do t1+=("$(ticks "$g")"); done
  local d1; d1=$(dropped)
  python3 - "$dir" "$name" "$k" "$TICK" "$w0" "$w1" "${t0[*]}" "${t1[*]}" "$((d1 - d0))" <<'PY'
import json, sys
d, name, k, hz, w0, w1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
dropped = int(sys.argv[9])
t0 = [int(x) for x in sys.argv[7].split()]; t1 = [int(x) for x in sys.argv[8].split()]
cpu = [(b - a) / hz for a, b in zip(t0, t1)]
out = {"clients": [json.load(open(f"{d}/{name}.c{i}.json")) for i in range(k)],
       "gateway_cpu_secs": cpu[:-1], "redis_cpu_secs": cpu[-1], "wall_secs": w1 - w0,
       "events_dropped_warnings": dropped}
json.dump(out, open(f"{d}/{name}.json", "w"), indent=1)
PY
  rm -f "$dir/$name".c*.json
}
krb_args() { echo "--scheme kerberos --krb-realm $KRB_REALM"; }
# The storm: sign-ins at STORM_RATE on the gateway for SECS + 2 s, the paced MESSAGE load starting
# once the storm's clients have their tickets (the kinits run before the storm's clock starts).
storm() { # dir name gwpid port
  local dir=$1 name=$2 gw=$3 port=$4 sargs
  if [ "$KRB" = 1 ]; then sargs="$(krb_args) --users $KRB_USERS"; else sargs="--scheme ntlm --users $USERS"; fi
  # shellcheck disable=SC2086
  "$CLIENT" load --server "$port" "${common[@]}" $sargs --concurrency "$CONC" \
    --endpoints $((STORM_RATE * (SECS + 3))) --rate "$STORM_RATE" --duration $((SECS + 3)) \
    >"$dir/$name-storm.json" &
  local sp=$!
  sleep "${STORM_LEAD:-2}"
  step "$dir" "$name" "$gw" -- "$port" $MSGU --endpoints "$CONC" \
    --concurrency "$CONC" --messages $((MSG_RATE * SECS / CONC + 1)) --message-rate "$MSG_RATE" \
    --duration "$SECS"
  wait "$sp" || true
}

# The MESSAGE senders: the last CONC users (none of them a Kerberos principal of the storm).
MSGU="--scheme ntlm --users $CONC --first-user $((USERS - CONC))"
HALF=$((USERS / 2)); KHALF=$((KRB_USERS / 2)); AS=127.0.0.2:$A_PORT; BS=127.0.0.3:$B_PORT
for r in $(seq 1 "$ROUNDS"); do
  D="$OUT/r$r"; mkdir -p "$D"
  if [ $((r % 2)) = 1 ]; then order="m a"; else order="a m"; fi
  echo "round $r/$ROUNDS (order: $order)" >&2
  fresh m a
  for be in $order; do
    if [ "$be" = m ]; then gw=$M; port=127.0.0.1:$M_PORT; else gw=$A; port=127.0.0.2:$A_PORT; fi
    step "$D" "msg-paced-$be" "$gw" -- "$port" $MSGU --endpoints "$CONC" \
      --concurrency "$CONC" --messages $((MSG_RATE * SECS / CONC + 1)) --message-rate "$MSG_RATE" \
      --duration "$SECS"
    step "$D" "msg-sat-$be" "$gw" -- "$port" $MSGU --endpoints "$CONC" \
      --concurrency "$CONC" --messages $((MSG_SAT / CONC)) --duration "$SECS"
    step "$D" "ntlm-$be" "$gw" -- "$port" --scheme ntlm --users "$USERS" \
      --endpoints $((NTLM_RATE * SECS)) --concurrency "$CONC" --rate "$NTLM_RATE" --duration "$SECS"
    if [ "$KRB" = 1 ]; then
      # shellcheck disable=SC2046
      step "$D" "krb-$be" "$gw" -- "$port" $(krb_args) --users "$KRB_USERS" \
        --endpoints $((KRB_RATE * SECS)) --concurrency "$CONC" --rate "$KRB_RATE" --duration "$SECS"
    fi
    storm "$D" "storm-$be" "$gw" "$port"
  done
  # 3: one node (two clients at A) and a two-node pool (one client at A, one at B), alternating.
  schemes="ntlm"; [ "$KRB" = 1 ] && schemes="ntlm krb"
  if [ $((r % 2)) = 1 ]; then pool_order="one two"; else pool_order="two one"; fi
  for sch in $schemes; do
    if [ "$sch" = ntlm ]; then
      s1="--scheme ntlm --users $HALF --first-user 0"; s2="--scheme ntlm --users $HALF --first-user $HALF"
    else
      s1="$(krb_args) --users $KHALF --first-user 0"; s2="$(krb_args) --users $KHALF --first-user $KHALF"
    fi
    lim="--endpoints $SAT_N --concurrency $((CONC / 2)) --duration $SECS"
    for p in $pool_order; do
      fresh a
      if [ "$p" = one ]; then
        # shellcheck disable=SC2086
        step "$D" "pool1-$sch" "$A" -- "$AS" $s1 $lim :: "$AS" $s2 $lim
      else
        start_gw b "$B_PORT"; B=$GWPID; sleep 1
        # shellcheck disable=SC2086
        step "$D" "pool2-$sch" "$A $B" -- "$AS" $s1 $lim :: "$BS" $s2 $lim
        kill "$B"; wait "$B" 2>/dev/null || true; B=""
      fi
    done
  done
done
echo "keys in redis at the end: $(redis-cli -p "$REDIS_PORT" dbsize)" | tee "$OUT/redis-keys.txt" >&2
# The pool's own warnings: a store task that fell behind its events (a republish follows).
for g in m a b; do
  echo "$g.log: $(grep -c 'receiver behind' "$OUT/$g.log" || true) 'events dropped' warnings" \
    "(each one a republish of every SA the node owns), $(grep -c 'WARN' "$OUT/$g.log" || true) warnings in all"
done >"$OUT/warnings.txt"

{
  echo "# benches/pool/run.sh: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "# $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "# ROUNDS=$ROUNDS SECS=$SECS CONC=$CONC USERS=$USERS MSG_RATE=$MSG_RATE MSG_SAT=$MSG_SAT NTLM_RATE=$NTLM_RATE KRB_RATE=$KRB_RATE STORM_RATE=$STORM_RATE KRB_USERS=$KRB_USERS kerberos=$KRB"
  echo "# $(cat "$OUT/redis-keys.txt")"
  sed 's/^/# /' "$OUT/warnings.txt"
  python3 "$HERE/summary.py" "$OUT" "$ROUNDS"
} | tee "$OUT/summary.md"
