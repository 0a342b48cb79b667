#!/usr/bin/env bash
# A throw-away MIT KDC on loopback for the Kerberos points of run.sh (same recipe as
# crates/kerberos/tests/support/mod.rs). Realm EXAMPLE.COM, so that principal loadN@EXAMPLE.COM maps
# to the gateway identity sip:loadN@example.com; users load0..load<KRB_USERS-1> with password
# load<n>-pw; service sip/<KRB_FQDN> exported to a keytab.
#   eval "$(benches/load/kdc.sh DIR)"    # starts the KDC, prints the exports for run.sh
# The KDC stops when DIR/stop is run (run.sh's caller does it), or kill "$KDC_PID".
set -euo pipefail
DIR=${1:?usage: kdc.sh DIR}
REALM=EXAMPLE.COM
FQDN=${KRB_FQDN:-sagw.example.com}
N=${KRB_USERS:-20}
PORT=${KDC_PORT:-25088}
rm -rf "$DIR"; mkdir -p "$DIR"; chmod 700 "$DIR"
cat >"$DIR/kdc.conf" <<CONF
[kdcdefaults]
 kdc_listen = 127.0.0.1:$PORT
 kdc_tcp_listen = 127.0.0.1:$PORT
[realms]
 $REALM = {
  database_name = $DIR/principal
  key_stash_file = $DIR/stash
  acl_file = $DIR/kadm5.acl
  max_life = 10h
  max_renewable_life = 0
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
 }
[logging]
 kdc = FILE:$DIR/kdc.log
CONF
cat >"$DIR/krb5.conf" <<CONF
[libdefaults]
 default_realm = $REALM
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
[realms]
 $REALM = {
  kdc = 127.0.0.1:$PORT
 }
[domain_realm]
 .example.com = $REALM
 example.com = $REALM
CONF
: >"$DIR/kadm5.acl"
export KRB5_CONFIG="$DIR/krb5.conf" KRB5_KDC_PROFILE="$DIR/kdc.conf" KRB5RCACHEDIR="$DIR"
kdb5_util create -s -r "$REALM" -P "master-Key-0" >/dev/null 2>&1
{
  for i in $(seq 0 $((N - 1))); do echo "addprinc -pw load$i-pw load$i"; done
  echo "addprinc -randkey sip/$FQDN"
  echo "ktadd -norandkey -k $DIR/gateway.keytab sip/$FQDN"
} | kadmin.local -r "$REALM" >/dev/null 2>&1
krb5kdc -n -P "$DIR/kdc.pid" >/dev/null 2>&1 &
echo "kill $! 2>/dev/null; rm -rf '$DIR'" >"$DIR/stop"; chmod +x "$DIR/stop"
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
echo "export KRB5_CONFIG='$DIR/krb5.conf' KRB5RCACHEDIR='$DIR' KRB_REALM=$REALM KRB_KEYTAB='$DIR/gateway.keytab' KRB_FQDN=$FQDN KRB_USERS=$N"
