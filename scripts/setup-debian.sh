#!/usr/bin/env bash
# Usage: scripts/setup-debian.sh [--build]
# Installs what building and testing sagw needs on Debian. With --build (scripts/run.sh), only what
# building the binaries needs: a C compiler and the C library's headers (rustc links with `cc`, and
# ring builds C), the MIT krb5 headers and libclang for the Kerberos acceptor (libgssapi's bindgen). Without it, also what the tests run: an MIT KDC plus client tools for the
# Kerberos tests, Kamailio, the registrar behind the gateway in the edge-mode tests
# (tests/edge_registrar.rs), baresip (baresip-core: a stock SIP phone on libre) for the
# interoperability test with standard SIP clients (tests/baresip_default.rs), Redis 7
# (redis-server, redis-tools for redis-cli) for the pool store's tests (crates/state/tests/store.rs:
# one server and a 3-master Cluster on loopback), and systemd for `systemd-analyze verify` of
# packaging/systemd/sagw.service (crates/gateway/tests/service.rs), and HAProxy, the load balancer
# in front of the gateway with the PROXY protocol v2 (tests/proxy_protocol.rs), and dnsmasq (dnsmasq-base: the binary
# without the system service) as the DNS server the RFC 3263 tests start on a loopback port
# (tests/next_hops.rs), and a Samba Active Directory domain controller for the AD tests
# (tests/ad_*.rs through tests/ad_support: samba, the DC, with samba-vfs-modules, whose acl_xattr
# provisioning needs and --no-install-recommends leaves out; winbind for winbindd, wbinfo and
# ntlm_auth, and libwbclient0, which the gateway dlopens for NTLM verified by the domain; ldb-tools
# for ldbmodify/ldbsearch; libnss-wrapper so tools reach a DC's private winbindd socket; krb5-user
# for kinit/kvno against its KDC), and iproute2 (ip) for the tests that run in a network namespace
# of their own whose loopback has a real network's MTU (tests/core_thread.rs), and pidgin-sipe in
# finch (libpurple's terminal UI) inside tmux, a real Lync-style client (tests/sipe_interop.rs,
# tests/sipe_edge.rs).
# Packages' init scripts must not start daemons (smbd, nmbd, winbind, samba-ad-dc would take the
# ports and /run/samba/winbindd the tests use): when the image has no /usr/sbin/policy-rc.d, one
# that denies every start (exit 101) is put in place for the install and removed afterwards.
# Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(gcc libc6-dev pkg-config libkrb5-dev libclang-dev)
if [ "${1:-}" != "--build" ]; then
  pkgs+=(krb5-kdc krb5-admin-server krb5-user kamailio baresip-core redis-server redis-tools systemd haproxy dnsmasq-base
         samba samba-dsdb-modules samba-ad-provision samba-vfs-modules winbind libwbclient0 ldb-tools libnss-wrapper
         iproute2 pidgin-sipe finch tmux)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# sagw scripts/setup-debian.sh: no daemon starts during the install\nexit 101\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
