#!/usr/bin/env bash
# Makes the local PostgreSQL ready for logical decoding, idempotently:
#   - starts the cluster if it is stopped;
#   - sets wal_level=logical and enough slots/senders, restarting only when needed;
#   - creates a second cluster on port 5433 left at wal_level=replica, which the
#     tests use to prove tidemark refuses such a source with a clear error;
#   - serves TLS on 5432 with a certificate for localhost (only) signed by a
#     test CA of its own (/var/lib/postgresql/tidemark-tls/ca.pem), plus a
#     second CA that signed nothing (other-ca.pem), for the sslmode tests;
#   - gives the role tidemark_cleartext a password asked for in clear text.
# Works on a fresh machine with PostgreSQL installed from Debian's packages.
set -euo pipefail

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "setup-postgres: installing PostgreSQL" >&2
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
ctl() { pg_ctlcluster --skip-systemctl-redirect "$version" "$@"; }
psql_main() { psql -X -q -t -A -h 127.0.0.1 -p 5432 -U postgres -d postgres "$@"; }

status=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}')
if [ "$status" != "online" ]; then
  ctl main start
fi
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done

want_restart=0
set_guc() {
  local name=$1 value=$2 current
  current=$(psql_main -c "SHOW $name")
  if [ "$current" != "$value" ]; then
    psql_main -c "ALTER SYSTEM SET $name = '$value'"
    want_restart=1
  fi
}
set_guc wal_level logical
set_guc max_replication_slots 64
set_guc max_wal_senders 64
if [ "$want_restart" = 1 ]; then
  echo "setup-postgres: restarting PostgreSQL $version for wal_level=logical" >&2
  ctl main restart
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
[ "$(psql_main -c 'SHOW wal_level')" = logical ] || { echo "setup-postgres: wal_level is still not logical" >&2; exit 1; }

# TLS with the test CA; a reload is enough for the ssl settings.
tls=/var/lib/postgresql/tidemark-tls
want_reload=0
missing=0
# server.pem names localhost only (not 127.0.0.1): the tests reach the same
# server by an address the certificate does not name.
for file in ca.pem other-ca.pem server.pem server.key names-localhost-only; do [ -e "$tls/$file" ] || missing=1; done
if [ "$missing" = 1 ]; then
  # New certificates: the server must load them even if the paths are the same.
  want_reload=1
  command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
  mkdir -p "$tls"
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tidemark test $ca" \
      -keyout "$tls/$ca.key" -out "$tls/$ca.pem" 2>/dev/null
  done
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
  touch "$tls/names-localhost-only"
  chown -R postgres:postgres "$tls"
  chmod 600 "$tls"/*.key
fi
for setting in "ssl=on" "ssl_cert_file=$tls/server.pem" "ssl_key_file=$tls/server.key"; do
  name=${setting%%=*} value=${setting#*=}
  if [ "$(psql_main -c "SHOW $name")" != "$value" ]; then
    psql_main -c "ALTER SYSTEM SET $name = '$value'"
    want_reload=1
  fi
done
[ "$want_reload" = 0 ] || psql_main -c "SELECT pg_reload_conf()" >/dev/null
tls_ok() {
  psql "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=verify-ca sslrootcert=$tls/ca.pem" \
    -X -q -t -A -c 'SELECT 1' >/dev/null 2>&1
}
for _ in $(seq 1 50); do tls_ok && break; sleep 0.1; done
tls_ok || { echo "setup-postgres: TLS with the test CA ($tls/ca.pem) does not work" >&2; exit 1; }

# A role whose password the server asks for in clear text (pg_hba method
# `password`), for the test that tidemark does not send it over a link that
# is not encrypted.
hba=$(psql_main -c "SHOW hba_file")
line="host all tidemark_cleartext 127.0.0.1/32 password"
if ! grep -qxF "$line" "$hba"; then
  { echo "$line"; cat "$hba"; } > "$hba.tidemark" && cat "$hba.tidemark" > "$hba" && rm -f "$hba.tidemark"
  psql_main -c "SELECT pg_reload_conf()" >/dev/null
fi
psql_main -c "DO \$\$ BEGIN CREATE ROLE tidemark_cleartext LOGIN REPLICATION PASSWORD 'cleartext-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"

# The wal_level=replica cluster for the negative test.
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="replica" {f=1} END {exit !f}'; then
  pg_createcluster -q "$version" replica --port 5433 -- --auth=trust >/dev/null
  echo "wal_level = replica" >> "/etc/postgresql/$version/replica/postgresql.conf"
  echo "listen_addresses = '127.0.0.1'" >> "/etc/postgresql/$version/replica/postgresql.conf"
fi
status=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="replica" {print $4}')
if [ "$status" != "online" ]; then
  ctl replica start
fi
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5433 && break; sleep 0.2; done
echo "setup-postgres: ready (5432 wal_level=logical with TLS, 5433 wal_level=replica)" >&2
