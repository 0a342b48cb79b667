#!/usr/bin/env bash
# Usage: scripts/image-smoke.sh [IMAGE]   (default: localhost/sagw:latest, from scripts/build-image.sh)
#
# Runs the image under podman with its ports published on loopback, adds a user inside it
# (`podman exec … sagw user add`), then from the host signs in with Digest and sends a signed SIP
# OPTIONS with sagw-client over UDP, TCP and TLS (trusting the certificate the container generated),
# and stops it with SIGTERM (podman stop), which must exit 0. Exits non-zero on the first failure.
#
# SAGW_SMOKE_PORT: host port for 5060 (udp and tcp; +1 for TLS 5061), default 25060.
# SAGW_PODMAN_RUN_OPTS: extra `podman run` options, for hosts whose sandbox needs them (docs/deployment.md).
# SAGW_CLIENT: the sagw-client binary (default: built with cargo --release).
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-localhost/sagw:latest}"
port="${SAGW_SMOKE_PORT:-25060}"
name="sagw-smoke-$$"
client="${SAGW_CLIENT:-}"
if [ -z "$client" ]; then
  cargo build --release --locked -p sagw-client >&2
  client="${CARGO_TARGET_DIR:-$PWD/target}/release/sagw-client"
fi
work=$(mktemp -d)
cleanup() { podman rm -f -v "$name" >/dev/null 2>&1 || :; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck disable=SC2086 # options are words on purpose
podman run -d --name "$name" ${SAGW_PODMAN_RUN_OPTS:-} \
  -p "127.0.0.1:$port:5060/udp" -p "127.0.0.1:$port:5060/tcp" -p "127.0.0.1:$((port + 1)):5061/tcp" \
  "$image" >/dev/null
for _ in $(seq 100); do
  podman logs "$name" 2>&1 | grep -q "sagw listening" && break
  sleep 0.2
done
podman logs "$name" 2>&1 | grep -q "sagw listening" || { podman logs "$name" >&2; echo "smoke: not listening" >&2; exit 1; }
echo "smoke: $(podman exec "$name" sagw --version) listening in container $name ($(podman exec "$name" id -un))"

echo 'Smoke-test-pw-1' | podman exec -i "$name" sagw user add smoke
podman cp "$name:/var/lib/sagw/sagw-data/sagw-cert.pem" "$work/cert.pem"

probe() { # transport, host port, extra args...
  local transport=$1 p=$2
  shift 2
  SMOKE_PW='Smoke-test-pw-1' "$client" probe --server "127.0.0.1:$p" --transport "$transport" \
    --sip-domain example.com --user smoke --password-env SMOKE_PW --scheme digest --epid none \
    --options --timeout 5 "$@"
}
# The running gateway picks the new user up within 5 s (it polls the credentials file).
for i in $(seq 15); do
  if probe tcp "$port" >"$work/probe.log" 2>&1; then break; fi
  [ "$i" -lt 15 ] || { cat "$work/probe.log" >&2; exit 1; }
  sleep 1
done
for t in tcp udp tls; do
  case $t in
    tls) probe tls $((port + 1)) --ca "$work/cert.pem" --server-name localhost >"$work/$t.log" 2>&1 ;;
    *) probe "$t" "$port" >"$work/$t.log" 2>&1 ;;
  esac || { cat "$work/$t.log" >&2; echo "smoke: $t failed" >&2; exit 1; }
  echo "smoke: $t: $(grep -c '^<- 200 OK (OPTIONS)' "$work/$t.log") x 200 OK to a signed OPTIONS; $(grep '^RESULT' "$work/$t.log")"
done

podman stop -t 20 "$name" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { podman logs "$name" 2>&1 | tail -20 >&2; echo "smoke: exit code $code after SIGTERM" >&2; exit 1; }
echo "smoke: stopped by SIGTERM, exit code 0"
