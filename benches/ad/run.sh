#!/usr/bin/env bash
# NTLM sign-ins verified by an Active Directory domain (winbind) against the credentials file, on
# one machine (issue 15's figures in docs/BENCHMARKS.md):
#   benches/ad/run.sh            (full run)
#   QUICK=1 benches/ad/run.sh    (short smoke run)
# Root only (the Samba DC runs as root, and libwbclient needs the privileged winbind pipe). It
# provisions a throw-away Samba AD DC on $DC_IP (default 127.0.0.9) with winbindd on the default
# socket directory /run/samba/winbindd, which is where libwbclient looks: it takes the lock the
# test suite's DCs take (/run/samba/sagw-test-dc.lock), so it never runs beside an AD test.
# It creates $USERS users ad0..ad<USERS-1> in the domain and the same users in a credentials
# file, then measures, against the same gateway build:
#   1. file: NTLM sign-ins with the NT hashes in the credentials file;
#   2. winbind: the same sign-ins verified by the DC through winbind ([auth.domain] ntlm = "winbind");
#   each with $CONC concurrent clients as fast as answered: sign-ins/s, latency p50/p99, gateway CPU
#   per sign-in and the DC's (all samba processes) CPU per sign-in;
#   3. signed MESSAGEs at $MSG_RATE/s on established SAs (file users), alone and while the winbind
#      sign-in load of 2. runs beside them: p50/p99 of the MESSAGEs in both cases.
# Output: benches/ad/results/*.json and a table on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/results"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DC_IP="${DC_IP:-127.0.0.9}"
PORT="${PORT:-25070}"
SERVER="127.0.0.1:$PORT"
USERS="${USERS:-64}"
CONC="${CONC:-64}"
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then SIGNINS="${SIGNINS:-640}"; MSG_SECS=5; else SIGNINS="${SIGNINS:-6400}"; MSG_SECS="${MSG_SECS:-20}"; fi
MSG_RATE="${MSG_RATE:-1000}"
ADMIN_PW='Adm1nPassw0rd!'
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (Samba DC, privileged winbind pipe)" >&2; exit 3; }
for t in samba samba-tool wbinfo; do
  command -v "$t" >/dev/null || { echo "run.sh: $t missing: scripts/setup-debian.sh installs it" >&2; exit 3; }
done

mkdir -p "$OUT" /run/samba
LAB=$(mktemp -d /tmp/sagw-ad-bench.XXXXXX)
DC="$LAB/dc"
exec 9>/run/samba/sagw-test-dc.lock
echo "run.sh: waiting for the machine's winbind DC lock (an AD test may hold it)" >&2
flock 9
SAMBA=""; GW=""; ECHO=""
cleanup() {
  for p in $ECHO $GW; do kill "$p" 2>/dev/null || true; done
  if [ -n "$SAMBA" ]; then kill -TERM "$SAMBA" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$SAMBA" 2>/dev/null || break; sleep 0.1; done; fi
  rm -f /run/samba/winbindd/pipe
  rm -rf "$LAB"
}
trap cleanup EXIT

cd "$ROOT"
cargo build --release -p sagw-gateway -p sagw-client >&2
SAGW="$TARGET/release/sagw"
CLIENT="$TARGET/release/sagw-client"

# The DC (samba-ad-notes.md §2-§4), winbindd on the default socket directory.
mkdir -p "$DC/run" "$DC/log"
samba-tool domain provision -s /dev/null --targetdir="$DC" --realm=EXAMPLE.TEST --domain=EXAMPLE \
  --server-role=dc --dns-backend=SAMBA_INTERNAL --adminpass="$ADMIN_PW" --use-rfc2307 \
  --host-name=dc1 --host-ip="$DC_IP" --option="netbios name=DC1" \
  --option="interfaces=$DC_IP/8" --option="bind interfaces only=yes" \
  --option="pid directory=$DC/run" --option="ncalrpc dir=$DC/run/ncalrpc" \
  --option="ntp signd socket directory=$DC/run/ntp_signd" \
  --option="log file=$DC/log/log.%m" --option="logging=file" --option="dns forwarder=" \
  --option="disable spoolss=yes" --option="printcap name=/dev/null" \
  --option="server services=-nbt -wrepl -drepl -kcc -dnsupdate -ntp_signd" >"$LAB/provision.log" 2>&1 \
  || { tail -20 "$LAB/provision.log" >&2; exit 3; }
rm -f /run/samba/winbindd/pipe
samba -F -M single -s "$DC/etc/smb.conf" --debug-stdout -d0 >"$DC/log/samba.out" 2>&1 &
SAMBA=$!
for _ in $(seq 150); do wbinfo -P >/dev/null 2>&1 && break; sleep 0.2; done
wbinfo -P >/dev/null || { echo "run.sh: the DC's winbindd did not answer" >&2; tail -20 "$DC/log/samba.out" >&2; exit 3; }
S=(-s "$DC/etc/smb.conf" -H "ldap://$DC_IP" -U "Administrator%$ADMIN_PW")
samba-tool domain passwordsettings set --min-pwd-age=0 --max-pwd-age=0 --complexity=off --min-pwd-length=1 "${S[@]}" >/dev/null
echo "run.sh: creating $USERS domain users" >&2
for n in $(seq 0 $((USERS - 1))); do
  samba-tool user create "ad$n" "ad$n-pw" "${S[@]}" >/dev/null
done
wbinfo -a "EXAMPLE\\ad0%ad0-pw" >/dev/null || { echo "run.sh: ad0 cannot log on through winbind" >&2; exit 3; }

# The file gateway knows the ad users' NT hashes; the domain gateway knows only the MESSAGE
# senders load0..load15 and their echo target (file users), and sends the ad users to the DC.
python3 "$ROOT/benches/load/make_users.py" "$USERS" example.com ad >"$LAB/users.file"
python3 "$ROOT/benches/load/make_users.py" 16 example.com load >"$LAB/users.domain"
chmod 600 "$LAB"/users.*
gateway_config() { # credentials file, extra TOML
  cat <<TOML
[log]
level = "warn"
[listen]
udp = "127.0.0.1:$PORT"
tcp = "127.0.0.1:$PORT"
tls = ""
advertise = "127.0.0.1"
[tls]
generated_dir = "$LAB/sagw-data"
[proxy]
mode = "registrar"
[metrics]
listen = ""
[auth]
enabled = true
schemes = ["ntlm"]
sip_domain = "example.com"
fqdn = "sagw.example.com"
credentials = "$1"
nonce_key = "$LAB/nonce.key"
version = 4
ntlm_netbios_domain = "EXAMPLE"
pending_max_per_source = 65536
pending_max = 65536
$2
TOML
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
samba_ticks() { # every process of the DC (samba, smbd, winbindd and their workers)
  local total=0 p
  for p in $(pgrep -f -- "$DC/etc/smb.conf" || true); do total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
  echo "$total"
}
TICK=$(getconf CLK_TCK)
start_gateway() { # name, credentials, extra
  gateway_config "$2" "$3" >"$LAB/$1.toml"
  "$SAGW" --config "$LAB/$1.toml" check-config >&2
  "$SAGW" --config "$LAB/$1.toml" run >"$OUT/$1-gateway.log" 2>&1 &
  GW=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  kill -0 "$GW" || { cat "$OUT/$1-gateway.log" >&2; exit 3; }
}
stop_gateway() { kill "$GW"; wait "$GW" 2>/dev/null || true; GW=""; }
common=(--server "$SERVER" --sip-domain example.com --domain EXAMPLE --timeout 10 --json --no-progress)
signins() { # name
  local g0 s0 g1 s1
  g0=$(cpu_ticks "$GW"); s0=$(samba_ticks)
  "$CLIENT" load "${common[@]}" --scheme ntlm --user-pattern 'ad{n}' --password-pattern 'ad{n}-pw' \
    --users "$USERS" --endpoints "$SIGNINS" --concurrency "$CONC" --duration 600 >"$OUT/$1.json"
  g1=$(cpu_ticks "$GW"); s1=$(samba_ticks)
  python3 - "$OUT/$1.json" "$((g1 - g0))" "$((s1 - s0))" "$TICK" <<'PY'
import json, sys
p, g, s, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = json.load(open(p)); d["gateway_cpu_secs"] = g / hz; d["dc_cpu_secs"] = s / hz
json.dump(d, open(p, "w"), indent=1)
PY
}

start_gateway file "$LAB/users.file" ""
signins signin-file
stop_gateway

printf 'echo-pw\n' | "$SAGW" --config <(gateway_config "$LAB/users.domain" "") user add echo >&2
start_gateway winbind "$LAB/users.domain" $'[auth.domain]\nntlm = "winbind"'
signins signin-winbind
ECHO_PW=echo-pw "$CLIENT" probe --server "$SERVER" --sip-domain example.com --domain EXAMPLE \
  --user echo --password-env ECHO_PW --scheme ntlm --listen 100000 >"$OUT/echo.log" 2>&1 &
ECHO=$!
sleep 2
messages() { # name: 16 file users' SAs, signed MESSAGEs to echo at MSG_RATE
  "$CLIENT" load "${common[@]}" --scheme ntlm --user-pattern 'load{n}' --password-pattern 'load{n}-pw' \
    --users 16 --endpoints 16 --concurrency 16 --messages $((MSG_RATE * MSG_SECS / 16 + 1)) \
    --message-rate "$MSG_RATE" --duration "$MSG_SECS" >"$OUT/$1.json"
}
messages messages-alone
# The same MESSAGE load while $CONC clients keep signing in through the DC as fast as answered.
"$CLIENT" load "${common[@]}" --scheme ntlm --user-pattern 'ad{n}' --password-pattern 'ad{n}-pw' \
  --users "$USERS" --endpoints 1000000 --concurrency "$CONC" --duration $((MSG_SECS + 4)) >"$OUT/signin-winbind-beside.json" &
BESIDE=$!
sleep 2
messages messages-beside-signins
wait "$BESIDE"
stop_gateway

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(n): return json.load(open(os.path.join(out, n + ".json")))
print("| NTLM sign-ins, %s concurrent | sign-ins/s | p50 ms | p99 ms | gateway CPU µs/sign-in | DC CPU µs/sign-in | failed |" % os.environ.get("CONC", "64"))
print("|---|---:|---:|---:|---:|---:|---:|")
for name, label in (("signin-file", "credentials file"), ("signin-winbind", "domain (winbind)")):
    d = load(name); s = d["sign_ins"]; ok = s["ok"] or 1
    print(f"| {label} | {s['per_sec']:.0f} | {s['latency']['p50_ms']:.2f} | {s['latency']['p99_ms']:.2f} | "
          f"{1e6 * d['gateway_cpu_secs'] / ok:.0f} | {1e6 * d['dc_cpu_secs'] / ok:.0f} | {s['failed']} |")
print()
print("| signed MESSAGEs at %s/s | achieved/s | p50 ms | p99 ms | failed |" % os.environ.get("MSG_RATE", "1000"))
print("|---|---:|---:|---:|---:|")
for name, label in (("messages-alone", "alone"), ("messages-beside-signins", "beside domain sign-ins at saturation")):
    m = load(name)["messages"]
    print(f"| {label} | {m['per_sec']:.0f} | {m['latency']['p50_ms']:.2f} | {m['latency']['p99_ms']:.2f} | {m['failed']} |")
b = load("signin-winbind-beside")["sign_ins"]
print(f"\n(domain sign-ins beside the MESSAGEs: {b['ok']} ok, {b['per_sec']:.0f}/s, p99 {b['latency']['p99_ms']:.1f} ms, {b['failed']} failed)")
PY
