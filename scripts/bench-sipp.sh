#!/usr/bin/env bash
# sipp benchmark: the sagw gateway and Kamailio doing the same job in the same run (issue 6).
#
#   scripts/bench-sipp.sh [--quick] [--auth] [--servers kamailio,sagw] [--scenarios register,call]
#                         [--no-build] [--out DIR] [--procs N] [--ceiling]
#   servers: kamailio, sagw, floor (the I/O floor of a REGISTER flow: a stateless answerer with
#   sagw's I/O, crates/gateway/examples/udp_floor.rs; register scenario only)
#
# For each scenario: one unmeasured warm-up step per server, then measured steps at fixed offered
# rates, repeated, servers interleaved at every rate so both see the same machine conditions.
# Per step: sipp's successful/failed/retransmission counters and the server's CPU time
# (utime+stime from /proc/PID/stat summed over the server's processes, before/after) divided by
# successful flows. Prints a markdown table and keeps raw data under benches/sipp/results/.
#
# Everything runs on 127.0.0.1, every sipp is bounded in time (the UAC also in count), and all
# processes started here are stopped on exit. Environment overrides: REG_RATES, CALL_RATES, STEP_SECS, REPS, WARM_SECS,
# SAGW_BIN, CARGO_TARGET_DIR, WORK (scratch dir), USERS (subscriber count), KAMAILIO_CPUS (run
# Kamailio under `taskset -c` with this CPU list, to compare with sagw's pinned core thread),
# CEIL_RATES (--ceiling), WARM_RATE (warm-up rate; default the top rate). --procs N: N sipp UACs per step, each with its own port (its own
# 4-tuple) and its own slice of the users, sharing the offered rate. --ceiling: instead of the
# fixed steps, each server's clean maximum: rising CEIL_RATES (one step each, 4 UACs unless
# --procs says otherwise, servers interleaved), a server's ramp ending at its first step with a
# failed flow, a retransmission or a pace under CEIL_PACE (default 0.97) of the offered rate (a
# busy host's sipps lag: lower it there and say so); the ceiling is the last clean one.
# SERVER_CPU_QUOTA (say 0.5): each server runs in a cgroup of its own limited to that many CPUs'
# worth of time (CFS quota, a 1 ms period or the shortest the kernel takes), the same budget for
# both. With --ceiling this finds each server's ceiling, not the sipps': on a 2-CPU host four sipps
# take well over a CPU at the rates a server with a whole CPU could take, so without a budget the
# ceiling found is the host's. Needs root (it makes cgroups under /sys/fs/cgroup).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/benches/sipp"
SCEN="$BENCH/scenarios"

QUICK=0
AUTH=0
BUILD=1
SERVERS="kamailio,sagw"
SCENARIOS="register,call"
OUT=""
PROCS=""
CEILING=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --auth) AUTH=1 ;;
        --no-build) BUILD=0 ;;
        --servers) SERVERS="$2"; shift ;;
        --scenarios) SCENARIOS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --procs) PROCS="$2"; shift ;;
        --ceiling) CEILING=1 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    REG_RATES=${REG_RATES:-"1000 4000"}
    CALL_RATES=${CALL_RATES:-"200 1000"}
    STEP_SECS=${STEP_SECS:-3}
    REPS=${REPS:-1}
    WARM_SECS=${WARM_SECS:-10}
else
    REG_RATES=${REG_RATES:-"1000 2000 4000"}
    CALL_RATES=${CALL_RATES:-"200 500 1000"}
    STEP_SECS=${STEP_SECS:-8}
    REPS=${REPS:-3}
    # Long enough to reach steady state: a UDP transaction lives 64 x T1 = 32 s after its final
    # response (Timer J/D, RFC 3261), so a server that keeps them (sagw) grows its tables and
    # touches fresh memory for 32 s at the top rate; Kamailio keeps its for 5 s (wait timer).
    # Measuring sooner would charge that one-off growth to the first steps.
    WARM_SECS=${WARM_SECS:-34}
fi
# Kamailio's tm frees a finished transaction after its wait timer (5 s): wait that long after
# the last call before the "after" CPU snapshot so deferred clean-up is charged to the step.
CALL_SETTLE=${CALL_SETTLE:-6}
if [ "$CEILING" = 1 ]; then
    PROCS=${PROCS:-4}
    CEIL_RATES=${CEIL_RATES:-"4000 6000 8000 10000 12000 14000 16000 20000"}
    CEIL_PACE=${CEIL_PACE:-0.97}
fi
PROCS=${PROCS:-1}
[[ "$PROCS" =~ ^[1-9]$ ]] || { echo "--procs wants 1 to 9" >&2; exit 2; }
REG_SETTLE=${REG_SETTLE:-1}
CALL_HOLD_MS=${CALL_HOLD_MS:-100}
USERS=${USERS:-10000}
KAMAILIO_CPUS=${KAMAILIO_CPUS:-}
SERVER_CPU_QUOTA=${SERVER_CPU_QUOTA:-}
if [ -n "$SERVER_CPU_QUOTA" ]; then
    awk -v q="$SERVER_CPU_QUOTA" 'BEGIN { exit !(q + 0 >= 0.05 && q + 0 <= 64) }' \
        || { echo "SERVER_CPU_QUOTA wants a number of CPUs, 0.05 to 64" >&2; exit 2; }
    # The shortest period whose quota is at least the kernel's 1 ms minimum: a throttled server
    # stops for up to the rest of a period, and its UDP receive buffer must hold what arrives
    # meanwhile (at 20 000/s and half a CPU, a 10 ms period is a 5 ms pause: 200 datagrams).
    read -r CPU_PERIOD_US CPU_QUOTA_US < <(awk -v q="$SERVER_CPU_QUOTA" 'BEGIN {
        p = 1000; if (q < 1) p = int((1000 / q) + 0.999); printf "%d %d\n", p, int(q * p + 0.5) }')
fi

# Ports: one per server, and each server gets its own sipp UAC and UAS ports (-p, -cp, -mp all
# distinct: sipp grabs 5060/8888/6000 by default otherwise). Separate sets keep one server's late
# retransmissions (after a bad step) from reaching the sipps of the other server's next step.
KAM_PORT=15060
SAGW_PORT=15062
FLOOR_PORT=15064
declare -A UAS_PORT=([kamailio]=15080 [sagw]=15082 [floor]=15084)
declare -A UAC_PORT=([kamailio]=15090 [sagw]=15092 [floor]=15094)
CALLEE=callee

WORK=${WORK:-/tmp/sagw-bench}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
MODE=$([ "$CEILING" = 1 ] && echo ceiling || { [ "$QUICK" = 1 ] && echo quick || echo full; })$([ "$AUTH" = 1 ] && echo -auth || true)$([ "$PROCS" = 1 ] || echo "-p$PROCS")${SERVER_CPU_QUOTA:+-cpu$SERVER_CPU_QUOTA}
OUT=${OUT:-"$BENCH/results/$STAMP-$MODE"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
SAGW_BIN=${SAGW_BIN:-"$CARGO_TARGET_DIR/release/sagw"}
# Built (without --no-build) under CARGO_TARGET_DIR; with --no-build, beside SAGW_BIN.
if [ "$BUILD" = 1 ]; then
    FLOOR_BIN=${FLOOR_BIN:-"$CARGO_TARGET_DIR/release/examples/udp_floor"}
else
    FLOOR_BIN=${FLOOR_BIN:-"$(dirname "$SAGW_BIN")/examples/udp_floor"}
fi

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools
ensure_tools() {
    local missing=()
    command -v sipp >/dev/null || missing+=(sip-tester)
    command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing ${missing[*]} with apt-get"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- /proc accounting
# pid plus all its descendants (Kamailio forks its workers from the main process).
proc_tree() {
    local root=$1 f line rest pid
    local -A parent=() keep=()
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue # the process may be gone already
        pid=${f#/proc/}; pid=${pid%/stat}
        rest=${line##*) }
        read -r _ ppid _ <<<"$rest"
        parent[$pid]=$ppid
    done
    keep[$root]=1
    local changed=1 p
    while [ "$changed" = 1 ]; do
        changed=0
        for p in "${!parent[@]}"; do
            if [ -z "${keep[$p]:-}" ] && [ -n "${keep[${parent[$p]}]:-}" ]; then keep[$p]=1; changed=1; fi
        done
    done
    printf '%s\n' "${!keep[@]}"
}

# "<utime+stime ticks> <on-cpu ns> <runqueue-wait ns> <times scheduled> <minor faults>" summed over
# the given pids and all their threads. utime+stime is the figure we report; schedstat gives the same at ns
# resolution, plus how long the server waited for a CPU (contention from anything else running)
# and how often it was scheduled (wake-ups: what dominates the cost per flow at low rates).
# Minor faults show a process still touching fresh memory (an allocator growing into new pages,
# Kamailio's shm pool the first time): that is start-up cost, which the warm-up must absorb.
cpu_of() {
    local ticks=0 ns=0 wait=0 runs=0 faults=0 pid line t a b c
    local -a f
    for pid in "$@"; do
        read -r line 2>/dev/null <"/proc/$pid/stat" || continue
        # fields after "(comm) " start at field 3 (state): utime/stime (14/15) are f[11]/f[12]
        read -ra f <<<"${line##*) }"
        ticks=$((ticks + f[11] + f[12])); faults=$((faults + f[7]))
        for t in /proc/"$pid"/task/*/schedstat; do
            read -r a b c 2>/dev/null <"$t" || continue
            ns=$((ns + a)); wait=$((wait + b)); runs=$((runs + c))
        done
    done
    echo "$ticks $ns $wait $runs $faults"
}

# "<cpu pressure: us some task waited for a CPU> <wall ns>". /proc/stat's idle/busy split is tick
# sampled and misses short bursts entirely in this VM (measured: a 6 s sipp+Kamailio step at
# 4000 REGISTER/s showed 0.1 s busy), so contention from other work is shown with PSI instead.
host_cpu() {
    local psi=0
    if [ -r /proc/pressure/cpu ]; then
        psi=$(awk '/^some/ { sub("total=", "", $5); print $5 }' /proc/pressure/cpu)
    fi
    echo "$psi $(date +%s%N)"
}

# Host-wide UDP datagrams dropped because a socket's receive buffer was full: on loopback these
# are the cause of sipp's retransmissions, so the table shows both.
udp_drops() {
    awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp
}

CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers
declare -A SERVER_PID=()
declare -A SERVER_PORT=([kamailio]=$KAM_PORT [sagw]=$SAGW_PORT [floor]=$FLOOR_PORT)
declare -A SERVER_NOTE=()
BG_PIDS=()
BUILD_NOTE=""

# ---------------------------------------------------------------- CPU budget (SERVER_CPU_QUOTA)
declare -A SERVER_CGROUP=()
# The cgroup hierarchy with the cpu controller: v1's cpu mount, else v2's root with cpu enabled
# for its children. Prints "v1 DIR" or "v2 DIR"; fails when neither is writable here.
cpu_hierarchy() {
    if [ -w /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        echo "v1 /sys/fs/cgroup/cpu"
    elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        echo "v2 /sys/fs/cgroup"
    else
        return 1
    fi
}

# make_cgroup <server>: a fresh cgroup holding SERVER_CPU_QUOTA CPUs; its directory on stdout.
# (Called in a command substitution, which does not inherit `set -e`: every step checks itself.)
make_cgroup() {
    local kind root dir
    read -r kind root <<<"$(cpu_hierarchy)" || die "SERVER_CPU_QUOTA: no writable cgroup cpu controller"
    dir="$root/sagw-bench-$1"
    if [ -d "$dir" ]; then rmdir "$dir" 2>/dev/null || die "SERVER_CPU_QUOTA: $dir is left from a run still going"; fi
    mkdir "$dir" || die "SERVER_CPU_QUOTA: cannot create $dir"
    if [ "$kind" = v1 ]; then
        echo "$CPU_PERIOD_US" >"$dir/cpu.cfs_period_us" || die "SERVER_CPU_QUOTA: period $CPU_PERIOD_US us refused"
        echo "$CPU_QUOTA_US" >"$dir/cpu.cfs_quota_us" || die "SERVER_CPU_QUOTA: quota $CPU_QUOTA_US us refused"
        [ "$(cat "$dir/cpu.cfs_quota_us")" = "$CPU_QUOTA_US" ] || die "SERVER_CPU_QUOTA: quota not taken"
    else
        echo "$CPU_QUOTA_US $CPU_PERIOD_US" >"$dir/cpu.max" || die "SERVER_CPU_QUOTA: cpu.max refused"
    fi
    echo "$dir"
}

# in_cgroup <dir> <command...>, always run in the background (`in_cgroup ... &`): the subshell
# becomes the command (exec), so `$!` is the server's pid; with a directory, through a shell that
# joins the cgroup first, so every process and thread it starts is inside.
in_cgroup() {
    local dir=$1
    shift
    [ -n "$dir" ] || exec "$@"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    exec sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}

# "<periods> <throttled periods> <throttled ms>" of a server's cgroup (v1 and v2 name them alike).
throttling() {
    awk '/^nr_periods/ { p = $2 } /^nr_throttled/ { t = $2 }
         /^throttled_time/ { ms = $2 / 1e6 } /^throttled_usec/ { ms = $2 / 1e3 }
         END { printf "%d %d %.0f\n", p, t, ms }' "$1/cpu.stat"
}

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for name in "${!SERVER_PID[@]}"; do
        pid=${SERVER_PID[$name]}
        local tree
        tree=$(proc_tree "$pid")
        kill "$pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
        for p in $tree; do kill -9 "$p" 2>/dev/null || true; done
    done
    local dir
    for dir in "${SERVER_CGROUP[@]}"; do
        for _ in 1 2 3 4 5; do rmdir "$dir" 2>/dev/null && break; sleep 0.2; done
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

udp_bound() {
    local hex
    hex=$(printf ':%04X ' "$1")
    grep -q "$hex" /proc/net/udp 2>/dev/null
}

wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 1 100); do
        udp_bound "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_kamailio() {
    local args=(-f "$BENCH/kamailio/kamailio.cfg" -DD -E -m 2048 -M 16 -n 2
        -l "udp:127.0.0.1:$KAM_PORT" -A "UAS_URI=\"sip:127.0.0.1:${UAS_PORT[kamailio]}\"")
    if [ "$AUTH" = 1 ]; then
        args+=(-A WITH_AUTH -A "SUBSCRIBERS_DB=\"text://$WORK/db\"")
    fi
    udp_bound "$KAM_PORT" && die "port $KAM_PORT already in use"
    local pin=() cg=""
    [ -z "$KAMAILIO_CPUS" ] || pin=(taskset -c "$KAMAILIO_CPUS")
    if [ -n "$SERVER_CPU_QUOTA" ]; then cg=$(make_cgroup kamailio); SERVER_CGROUP[kamailio]=$cg; fi
    in_cgroup "$cg" ${pin[@]+"${pin[@]}"} kamailio "${args[@]}" >"$WORK/kamailio.log" 2>&1 &
    SERVER_PID[kamailio]=$!
    wait_port "$KAM_PORT" "${SERVER_PID[kamailio]}" || { tail -20 "$WORK/kamailio.log" >&2; die "kamailio did not start"; }
    sleep 1 # workers finish their own init after the socket is bound
    SERVER_NOTE[kamailio]="kamailio $(kamailio -v 2>/dev/null | awk 'NR==1{print $3}'), -m 2048 -M 16, 2 UDP workers (-n 2, one per core) + its timer/main processes ($(proc_tree "${SERVER_PID[kamailio]}" | wc -l) processes)${KAMAILIO_CPUS:+, all pinned to CPU(s) $KAMAILIO_CPUS}${SERVER_CPU_QUOTA:+, all within a budget of $SERVER_CPU_QUOTA CPU (cgroup quota, $CPU_QUOTA_US us every $CPU_PERIOD_US us)}"
}

# launch <server> <udp port> <log> <command...>: started in the background (in its own cgroup under
# SERVER_CPU_QUOTA), its pid in SERVER_PID; fails, the server killed and SERVER_NOTE saying why,
# when it does not bind the port.
launch() {
    local name=$1 port=$2 log=$3 cg=""
    shift 3
    udp_bound "$port" && die "port $port already in use"
    if [ -n "$SERVER_CPU_QUOTA" ]; then cg=$(make_cgroup "$name"); SERVER_CGROUP[$name]=$cg; fi
    in_cgroup "$cg" "$@" >"$log" 2>&1 &
    SERVER_PID[$name]=$!
    if ! wait_port "$port" "${SERVER_PID[$name]}"; then
        SERVER_NOTE[$name]="NOT RUN: did not bind udp $port: $(tail -c 400 "$log" | tr '\n' ' ')"
        kill "${SERVER_PID[$name]}" 2>/dev/null || true
        unset "SERVER_PID[$name]"
        return 1
    fi
}

start_sagw() {
    local cfg="$BENCH/sagw.toml"
    [ "$AUTH" = 1 ] && cfg="$BENCH/sagw-auth.toml"
    if [ "$BUILD" = 1 ]; then
        log "building sagw (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        if ! (cd "$ROOT" && cargo build --release -q -p sagw-gateway) >"$WORK/sagw-build.log" 2>&1; then
            cp "$WORK/sagw-build.log" "$OUT/" 2>/dev/null || true
            # The tree is shared with people mid-edit: an older binary still says something.
            [ -x "$SAGW_BIN" ] || { SERVER_NOTE[sagw]="NOT RUN: build failed (see $OUT/sagw-build.log)"; return 1; }
            BUILD_NOTE="build of the working tree FAILED (sagw-build.log); measured the existing binary from $(date -u -r "$SAGW_BIN" +%FT%TZ)"
            log "WARNING: $BUILD_NOTE"
        fi
    fi
    if [ ! -x "$SAGW_BIN" ]; then SERVER_NOTE[sagw]="NOT RUN: no binary at $SAGW_BIN"; return 1; fi
    if [ ! -f "$cfg" ]; then SERVER_NOTE[sagw]="NOT RUN: no config $cfg"; return 1; fi
    grep -q "udp:127.0.0.1:${UAS_PORT[sagw]}" "$cfg" || die "$cfg must name the sagw UAS udp:127.0.0.1:${UAS_PORT[sagw]} as next hop"
    if ! "$SAGW_BIN" check-config --config "$cfg" >"$WORK/sagw-check.log" 2>&1; then
        SERVER_NOTE[sagw]="NOT RUN: check-config failed: $(head -c 400 "$WORK/sagw-check.log" | tr '\n' ' ')"
        return 1
    fi
    launch sagw "$SAGW_PORT" "$WORK/sagw.log" "$SAGW_BIN" run --config "$cfg" || return 1
    # The core thread starts after the UDP socket is bound (later still within a CPU budget).
    local threads t core_cpus=unknown i
    for i in $(seq 1 50); do
        sleep 0.1
        for t in /proc/"${SERVER_PID[sagw]}"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = sagw-core ] && core_cpus=$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status")
        done
        [ "$core_cpus" = unknown ] || break
    done
    sleep 0.2
    threads=$(ls "/proc/${SERVER_PID[sagw]}/task" | wc -l)
    SERVER_NOTE[sagw]="${BUILD_NOTE:+$BUILD_NOTE; }$("$SAGW_BIN" --version 2>/dev/null | head -1), config $(basename "$cfg"), $threads threads at start, core thread on CPU(s) $core_cpus${SERVER_CPU_QUOTA:+, within a budget of $SERVER_CPU_QUOTA CPU (cgroup quota, $CPU_QUOTA_US us every $CPU_PERIOD_US us)}, binary $SAGW_BIN, tree at git $(cd "$ROOT" && git rev-parse --short HEAD)"
}

start_floor() {
    if [ "$BUILD" = 1 ]; then
        log "building the floor (release example udp_floor)"
        if ! (cd "$ROOT" && cargo build --release -q -p sagw-gateway --example udp_floor) >"$WORK/floor-build.log" 2>&1; then
            cp "$WORK/floor-build.log" "$OUT/" 2>/dev/null || true
            SERVER_NOTE[floor]="NOT RUN: build failed (see $OUT/floor-build.log)"
            return 1
        fi
    fi
    if [ ! -x "$FLOOR_BIN" ]; then SERVER_NOTE[floor]="NOT RUN: no binary at $FLOOR_BIN"; return 1; fi
    # Without --auth the bench's REGISTER expects its 200 at once: no challenge.
    launch floor "$FLOOR_PORT" "$WORK/floor.log" "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" \
        $([ "$AUTH" = 1 ] || echo open) || return 1
    SERVER_NOTE[floor]="the I/O floor: $FLOOR_BIN (a stateless REGISTER answerer with sagw's UDP I/O, pinned to the last CPU; REGISTER only)"
}

# ---------------------------------------------------------------- sipp
# Last line of a sipp -trace_stat file as "name=value" lookups.
stat_get() { # file column-name
    [ -s "$1" ] || { echo 0; return 0; } # sipp died before its first dump: the step counts 0 ok
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i }
        END { v = $c; if (col ~ /Time$/) { n = split(v, a, "\t"); v = a[n] } print (v == "" ? 0 : v) }' "$1"
}

SIPP_COMMON=(-i 127.0.0.1 -nostdin -buff_size 4194304 -fd 1 -trace_stat -trace_err)

# run_step <server> <scenario> <rate> <secs> <tag>  -> prints one TSV result line (HEADER below)
run_step() {
    local server=$1 scen=$2 rate=$3 secs=$4 tag=$5
    local port=${SERVER_PORT[$server]} count=$((rate * secs)) dir="$WORK/steps/$tag"
    local uas_port=${UAS_PORT[$server]} uac_port=${UAC_PORT[$server]}
    local uac_xml uas_pid="" settle limit
    mkdir -p "$dir"
    case "$scen" in
        register) uac_xml=$SCEN/register.xml; settle=$REG_SETTLE ;;
        call) uac_xml=$SCEN/call_uac.xml; settle=$CALL_SETTLE ;;
        *) die "unknown scenario $scen" ;;
    esac
    if [ "$AUTH" = 1 ]; then uac_xml=${uac_xml%.xml}_auth.xml; fi
    limit=$rate

    if [ "$scen" = call ]; then
        # No -m: the UAS stays up through the settle time and absorbs whatever the server still
        # retransmits; stopped below. Its counters come from the once-a-second -trace_stat dump.
        timeout $((secs + settle + 40)) sipp "${SIPP_COMMON[@]}" -sf "$SCEN/call_uas.xml" \
            -p "$uas_port" -cp $((uas_port + 100)) -mp $((16000 + (uas_port - 15000) * 4)) -timeout $((secs + settle + 30))s \
            -stf "$dir/uas.csv" -error_file "$dir/uas_err.log" >"$dir/uas.out" 2>&1 &
        uas_pid=$!
        BG_PIDS+=("$uas_pid")
        wait_port "$uas_port" "$uas_pid" || die "sipp UAS did not start (see $dir/uas.out)"
    fi

    local pids cpu0 cpu1 host0 host1 drops0 drops1 rc=0
    pids=$(proc_tree "${SERVER_PID[$server]}")
    drops0=$(udp_drops)
    host0=$(host_cpu)
    cpu0=$(cpu_of $pids)
    # UAC k (0-based) is on port uac_port + 1000 k with users slice k; UAC 0 keeps the single-UAC
    # names (uac.csv, users.csv) so that a one-UAC run is what it always was.
    local k sfx uac_pids=() p_rate p_count
    for k in $(seq 0 $((PROCS - 1))); do
        sfx=$([ "$k" = 0 ] || echo "-$k")
        local p=$((uac_port + 1000 * k)) inf="$WORK/users.csv"
        [ "$PROCS" = 1 ] || inf="$WORK/users-p$PROCS-$k.csv"
        p_rate=$(awk -v r="$rate" -v n="$PROCS" 'BEGIN { printf "%.3f", r / n }')
        p_count=$(((count + PROCS - 1 - k) / PROCS))
        timeout $((secs + 30)) sipp 127.0.0.1:"$port" "${SIPP_COMMON[@]}" -sf "$uac_xml" \
            -inf "$inf" -s "$CALLEE" -r "$p_rate" -rp 1000 -m "$p_count" -l "$limit" -d "$CALL_HOLD_MS" \
            -p "$p" -cp $((p + 100)) -mp $((16000 + (p - 15000) * 4)) -timeout $((secs + 20))s \
            -stf "$dir/uac$sfx.csv" -error_file "$dir/uac${sfx}_err.log" >"$dir/uac$sfx.out" 2>&1 &
        uac_pids+=($!)
    done
    for k in "${uac_pids[@]}"; do wait "$k" || rc=$?; done
    sleep "$settle"
    cpu1=$(cpu_of $pids)
    host1=$(host_cpu)
    drops1=$(udp_drops)

    local uas_rc=-
    if [ -n "$uas_pid" ]; then
        kill "$uas_pid" 2>/dev/null || true
        uas_rc=0; wait "$uas_pid" 2>/dev/null || uas_rc=$?
    fi

    local ok failed retr ooc start end elapsed uas_retr=0 uas_failed=0
    ok=0; failed=0; retr=0; ooc=0; start=""; end=""
    local f v
    for f in "$dir"/uac.csv "$dir"/uac-[0-9]*.csv; do
        [ -e "$f" ] || continue
        ok=$((ok + $(stat_get "$f" 'SuccessfulCall(C)')))
        failed=$((failed + $(stat_get "$f" 'FailedCall(C)')))
        retr=$((retr + $(stat_get "$f" 'Retransmissions(C)')))
        ooc=$((ooc + $(stat_get "$f" 'OutOfCallMsgs(C)')))
        # The step lasts from the first UAC's start to the last one's end.
        v=$(stat_get "$f" 'StartTime'); start=$(awk -v a="$start" -v b="$v" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')
        v=$(stat_get "$f" 'CurrentTime'); end=$(awk -v a="$end" -v b="$v" 'BEGIN { print (a == "" || b + 0 > a + 0) ? b : a }')
    done
    start=${start:-0}; end=${end:-0}
    if [ -f "$dir/uas.csv" ]; then
        uas_retr=$(stat_get "$dir/uas.csv" 'Retransmissions(C)')
        uas_failed=$(stat_get "$dir/uas.csv" 'FailedCall(C)')
    fi
    # server cpu: ticks -> us; per successful flow
    awk -v OFS='\t' -v scen="$scen" -v server="$server" -v rate="$rate" -v tag="$tag" \
        -v count="$count" -v ok="$ok" -v failed="$failed" -v retr="$retr" -v uretr="$uas_retr" \
        -v ufailed="$uas_failed" -v ooc="$ooc" -v start="$start" -v end="$end" -v rc="$rc" -v urc="$uas_rc" \
        -v c0="$cpu0" -v c1="$cpu1" -v h0="$host0" -v h1="$host1" -v hz="$CLK_TCK" -v drops=$((drops1 - drops0)) 'BEGIN {
            split(c0, a, " "); split(c1, b, " "); split(h0, x, " "); split(h1, y, " ")
            el = end - start; okps = el > 0 ? ok / el : 0
            us = (b[1] - a[1]) * 1e6 / hz; sus = (b[2] - a[2]) / 1e3
            wall_us = (y[2] - x[2]) / 1e3
            psi = wall_us > 0 ? 100 * (y[1] - x[1]) / wall_us : 0
            n = ok > 0 ? ok : 1
            printf "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.1f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\t%s\t%d\t%.2f\n",
                scen, server, rate, tag, count, ok, failed + ufailed, retr, uretr, ooc, el, okps,
                us, (ok > 0 ? us / n : -1), (ok > 0 ? sus / n : -1), (b[3] - a[3]) / 1e3 / n,
                (b[4] - a[4]) / n, psi, rc, urc, drops, (b[5] - a[5]) / n
        }'
}

HEADER=$'scenario\tserver\trate\ttag\toffered\tok\tfailed\tretrans_uac\tretrans_uas\tout_of_call\telapsed_s\tok_per_s\tcpu_us\tcpu_us_per_flow\tsched_us_per_flow\trq_wait_us_per_flow\truns_per_flow\thost_cpu_pressure_pct\tuac_rc\tuas_rc\tudp_rcvbuf_drops\tminor_faults_per_flow'

# ---------------------------------------------------------------- summary
summarize() { # steps.tsv -> markdown on stdout
    awk -F'\t' -v servers="$ACTIVE" '
        function median(s,   n, v, i, j, t) {
            n = split(s, v, " ")
            for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            if (n == 0) return ""
            return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        NR == 1 { next }
        $4 ~ /^warmup/ { next }
        {
            k = $1 SUBSEP $3 SUBSEP $2
            okps[k] = okps[k] " " $12; cpu[k] = cpu[k] " " $14; sch[k] = sch[k] " " $15
            wait[k] = wait[k] " " $16; runs[k] = runs[k] " " $17; flt[k] = flt[k] " " $22; psi[k] = psi[k] " " $18; fail[k] += $7; retr[k] += $8 + $9; drop[k] += $21; reps[k]++
            if (!(($1 SUBSEP $3) in seen)) { seen[$1 SUBSEP $3] = 1; order[++no] = $1 SUBSEP $3 }
            has[$1 SUBSEP $2] = 1
        }
        END {
            ns = split(servers, sv, ",")
            last = ""
            for (o = 1; o <= no; o++) {
                split(order[o], p, SUBSEP); scen = p[1]; rate = p[2]
                if (scen != last) {
                    # The servers measured in this scenario (the floor answers REGISTERs only).
                    nc = 0
                    for (i = 1; i <= ns; i++) if ((scen SUBSEP sv[i]) in has) cs[++nc] = sv[i]
                    unit = scen == "call" ? "calls/s" : "REGISTER/s"
                    printf "\n### %s (offered %s; medians of the repeats; failed and retrans summed over repeats)\n\n", scen, unit
                    hdr = "| offered |"; sep = "|---:|"
                    for (i = 1; i <= nc; i++) { hdr = hdr sprintf(" %s ok/s | %s failed | %s retrans | %s CPU us/flow | %s runs, faults /flow | %s rq-wait us/flow, host PSI %% |", cs[i], cs[i], cs[i], cs[i], cs[i], cs[i]); sep = sep "---:|---:|---:|---:|---:|---:|" }
                    for (i = 2; i <= nc; i++) { hdr = hdr " CPU ratio " cs[i] "/" cs[1] " |"; sep = sep "---:|" }
                    print hdr; print sep; last = scen
                }
                line = sprintf("| %s |", rate)
                for (i = 1; i <= nc; i++) {
                    k = scen SUBSEP rate SUBSEP cs[i]
                    if (!(k in reps)) { line = line " - | - | - | - | - | - |"; m[i] = ""; continue }
                    m[i] = median(cpu[k])
                    line = line sprintf(" %.0f | %d | %d%s | %.1f | %.1f, %.2f | %.1f, %.0f |", median(okps[k]), fail[k], retr[k], (drop[k] ? sprintf(" (%d UDP drops)", drop[k]) : ""), m[i], median(runs[k]), median(flt[k]), median(wait[k]), median(psi[k]))
                }
                for (i = 2; i <= nc; i++) line = line ((m[1] != "" && m[i] != "" && m[1] > 0) ? sprintf(" %.2f |", m[i] / m[1]) : " - |")
                print line
            }
        }' "$1"
}

# serves <server> <scenario>: the floor answers REGISTERs only.
serves() { [ "$1" != floor ] || [ "$2" = register ]; }

# ---------------------------------------------------------------- ceilings (--ceiling)
# clean <steps.tsv line> <rate>: every flow succeeded, none retransmitted, at >= CEIL_PACE of the rate.
step_clean() {
    awk -F'\t' -v rate="$2" -v pace="$CEIL_PACE" '{ exit !($7 == 0 && $8 + $9 == 0 && $6 == $5 && $12 >= pace * rate) }' <<<"$1"
}

ceilings() { # steps.tsv
    local steps=$1 scen s rate first
    echo "| scenario | server | UACs | clean ceiling (flows/s) | first unclean step |" >"$OUT/ceilings.md"
    echo "|---|---|---:|---:|---|" >>"$OUT/ceilings.md"
    first=${CEIL_RATES%% *}
    for scen in ${SCENARIOS//,/ }; do
        local -A ceil=() stop=()
        for s in ${ACTIVE//,/ }; do
            serves "$s" "$scen" || continue
            log "$scen warm-up on $s at $first/s ($PROCS UACs)"
            run_step "$s" "$scen" "$first" "$WARM_SECS" "warmup-$scen-$s" >>"$steps"
            tail -n 1 "$steps" >&2
        done
        for rate in $CEIL_RATES; do
            for s in ${ACTIVE//,/ }; do
                serves "$s" "$scen" || continue
                [ -z "${stop[$s]:-}" ] || continue
                log "$scen ceiling on $s at $rate/s ($PROCS UACs)"
                run_step "$s" "$scen" "$rate" "$STEP_SECS" "ceiling-$scen-$s-$rate" >>"$steps"
                local line
                line=$(tail -n 1 "$steps")
                echo "$line" >&2
                if step_clean "$line" "$rate"; then
                    ceil[$s]=$rate
                else
                    stop[$s]=$(awk -F'\t' '{ printf "%s/s: %d of %d ok at %.0f/s, %d failed, %d retrans", $3, $6, $5, $12, $7, $8 + $9 }' <<<"$line")
                fi
            done
        done
        for s in ${ACTIVE//,/ }; do
            serves "$s" "$scen" || continue
            echo "| $scen | $s | $PROCS | ${ceil[$s]:-below $first} | ${stop[$s]:-none (all of $CEIL_RATES clean)} |" >>"$OUT/ceilings.md"
        done
        unset ceil stop
    done
}

# ---------------------------------------------------------------- main
declare -A BROKEN=()
# A server that fails most flows would turn every later step into a 30 s retransmission
# timeout: stop measuring it for this scenario and say so in the summary.
check_step() { # steps.tsv scenario server min-percent-ok
    local line offered ok
    line=$(tail -n 1 "$1")
    offered=$(cut -f5 <<<"$line"); ok=$(cut -f6 <<<"$line")
    if [ $((ok * 100)) -lt $((offered * $4)) ]; then
        BROKEN[$2,$3]="$ok of $offered flows succeeded in step $(cut -f4 <<<"$line"); later steps skipped"
        log "WARNING: $3 failing $2: ${BROKEN[$2,$3]}"
    fi
}

main() {
    ensure_tools
    mkdir -p "$WORK" "$OUT"
    rm -rf "$WORK/steps"
    rm -f "$OUT"/*_err.log
    # Subscribers: sipp injection file (user;password) and, for the auth variant, Kamailio's
    # htable source in db_text format. Same users and passwords for every server.
    {
        echo SEQUENTIAL
        for i in $(seq 1 "$USERS"); do
            printf 'u%05d;pw%05d;[authentication username=u%05d password=pw%05d]\n' "$i" "$i" "$i" "$i"
        done
    } >"$WORK/users.csv"
    # One slice of the users per UAC (--procs): no two UACs register the same user at once.
    if [ "$PROCS" != 1 ]; then
        local k
        for k in $(seq 0 $((PROCS - 1))); do
            awk -v n="$PROCS" -v k="$k" 'NR == 1 || (NR - 2) % n == k' "$WORK/users.csv" >"$WORK/users-p$PROCS-$k.csv"
        done
    fi
    if [ "$AUTH" = 1 ]; then
        mkdir -p "$WORK/db"
        {
            echo 'key_name(str) key_type(int) value_type(int) key_value(str) expires(int)'
            for i in $(seq 1 "$USERS"); do printf 'u%05d:0:0:pw%05d:0\n' "$i" "$i"; done
        } >"$WORK/db/htable"
        echo 'table_name(str) table_version(int)' >"$WORK/db/version"
        echo 'htable:2' >>"$WORK/db/version"
        # sagw's credentials file: MD5 HA1 per user in realm sagw.bench (no passwords), mode 600.
        (umask 077; python3 - "$USERS" >"$WORK/sagw-users" <<'PY'
import hashlib, sys
print("# sipp benchmark users (scripts/bench-sipp.sh)")
for i in range(1, int(sys.argv[1]) + 1):
    u, p = "u%05d" % i, "pw%05d" % i
    print(u, "ha1", "MD5", hashlib.md5(f"{u}:sagw.bench:{p}".encode()).hexdigest(), "sagw.bench")
PY
        )
    fi

    ACTIVE=""
    local s
    for s in ${SERVERS//,/ }; do
        case "$s" in
            kamailio) start_kamailio; ACTIVE="$ACTIVE,kamailio" ;;
            sagw) if start_sagw; then ACTIVE="$ACTIVE,sagw"; else log "sagw skipped: ${SERVER_NOTE[sagw]}"; fi ;;
            floor) if start_floor; then ACTIVE="$ACTIVE,floor"; else log "floor skipped: ${SERVER_NOTE[floor]}"; fi ;;
            *) die "unknown server $s" ;;
        esac
    done
    ACTIVE=${ACTIVE#,}
    [ -n "$ACTIVE" ] || die "no server running"

    {
        echo "date_utc: $STAMP"
        echo "mode: $MODE; step ${STEP_SECS}s per rate, $REPS repeat(s), warm-up ${WARM_SECS}s; call hold ${CALL_HOLD_MS} ms; settle call ${CALL_SETTLE}s register ${REG_SETTLE}s"
        echo "host: $(uname -srm); nproc $(nproc); $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
        echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "sipp: $(sipp -v 2>&1 | awk '/SIPp/ {print $2; exit}')"
        for s in ${SERVERS//,/ }; do echo "$s: ${SERVER_NOTE[$s]:-}"; done
        echo "top processes at start (ps lifetime %CPU; per-step host CPU pressure is in the tables):"
        ps -eo pcpu=,comm= --sort=-pcpu | head -6 | sed 's/^/  /'
    } >"$OUT/env.txt"
    cat "$OUT/env.txt" >&2

    # Idle cost: what each server burns doing nothing for 3 s (timers), for the record.
    for s in ${ACTIVE//,/ }; do
        local pids c0 c1
        pids=$(proc_tree "${SERVER_PID[$s]}")
        c0=$(cpu_of $pids); sleep 3; c1=$(cpu_of $pids)
        echo "$s idle: $(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f us CPU per s (schedstat)", (y[2] - x[2]) / 3e3 }')" >>"$OUT/env.txt"
    done

    local steps="$OUT/steps.tsv" scen rates rate rep
    echo "$HEADER" >"$steps"
    [ "$CEILING" = 0 ] || { ceilings "$steps"; SCENARIOS=""; }
    for scen in ${SCENARIOS//,/ }; do
        case "$scen" in
            register) rates=$REG_RATES ;;
            call) rates=$CALL_RATES ;;
            *) die "unknown scenario $scen" ;;
        esac
        # Warm up at the highest rate: the peak number of live transactions/bindings decides how
        # much fresh memory a server touches, and first-touch page faults are start-up cost
        # (WARM_SECS covers the longest transaction lifetime, see above).
        local mid
        mid=$(echo "$rates" | awk '{ m = $1; for (i = 2; i <= NF; i++) if ($i > m) m = $i; print m }')
        # WARM_RATE: a lower warm-up rate on a host too busy for the top one (say so with the figures).
        mid=${WARM_RATE:-$mid}
        for s in ${ACTIVE//,/ }; do
            serves "$s" "$scen" || continue
            log "$scen warm-up on $s at $mid/s"
            run_step "$s" "$scen" "$mid" "$WARM_SECS" "warmup-$scen-$s" >>"$steps"
            tail -n 1 "$steps" >&2
            check_step "$steps" "$scen" "$s" 90
        done
        for rep in $(seq 1 "$REPS"); do
            for rate in $rates; do
                for s in ${ACTIVE//,/ }; do
                    serves "$s" "$scen" || continue
                    [ -z "${BROKEN[$scen,$s]:-}" ] || continue
                    log "$scen on $s at $rate/s, repeat $rep/$REPS"
                    run_step "$s" "$scen" "$rate" "$STEP_SECS" "$scen-$s-$rate-r$rep" >>"$steps"
                    tail -n 1 "$steps" >&2
                    check_step "$steps" "$scen" "$s" 50
                done
            done
        done
    done

    # Keep the evidence of anything that went wrong.
    local f
    for f in "$WORK"/steps/*/*_err.log; do
        [ -s "$f" ] || continue
        local t
        t=$(basename "$(dirname "$f")")
        head -c 20000 "$f" >"$OUT/$t-$(basename "$f")"
    done
    for s in ${ACTIVE//,/ }; do tail -c 20000 "$WORK/$s.log" >"$OUT/$s.log" 2>/dev/null || true; done
    echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
    for s in "${!SERVER_CGROUP[@]}"; do
        echo "$s CPU budget over the run: $(throttling "${SERVER_CGROUP[$s]}" | awk '{ printf "%d of %d periods throttled, %d ms in all", $2, $1, $3 }')" >>"$OUT/env.txt"
    done

    {
        echo "## sipp benchmark ($MODE, $STAMP)"
        echo
        echo '```'
        cat "$OUT/env.txt"
        echo '```'
        summarize "$steps"
        [ "$CEILING" = 0 ] || { echo; cat "$OUT/ceilings.md"; }
        local k
        for k in "${!BROKEN[@]}"; do
            echo
            echo "**${k#*,} / ${k%%,*}: ${BROKEN[$k]}** (sipp error logs kept next to steps.tsv)"
        done
        echo
        echo "CPU us/flow: server utime+stime (/proc/PID/stat, all its processes and threads) from just before the step to the"
        echo "end of its settle time, divided by successful flows (schedstat on-CPU ns agrees within 2 %, see steps.tsv)."
        echo "runs/flow: times the server's threads were scheduled (schedstat), i.e. wake-ups; faults: minor page faults. rq-wait: time the server was"
        echo "runnable but waiting for a CPU; host PSI: % of the step some task on the host waited for a CPU (contention)."
        echo "A call flow is INVITE+ACK+BYE (2 transactions, 13 messages through the proxy); a REGISTER flow is 1 transaction."
    } >"$OUT/summary.md"
    cat "$OUT/summary.md"
    log "raw data: $OUT"
}

main
