#!/usr/bin/env bash
# Makes the local MariaDB ready for binlog capture, idempotently: log_bin on,
# binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, a
# server_id, and GTID strict mode; restarts the server only when a setting
# changes, and starts it when it is stopped.
#
# Also starts a second server on 127.0.0.1:3307 (data in
# /var/lib/mysql-no-metadata) with binlog_row_metadata left at MariaDB's
# default NO_LOG, for the test of capture without TABLE_MAP metadata. It is
# also the hostile one: NO_BACKSLASH_ESCAPES in its default sql_mode (the
# injection tests) and TLS with a test CA made here (the TLS tests; the CA is
# /var/lib/mysql-no-metadata/tls/ca.pem, the server certificate names only
# "localhost").
set -euo pipefail

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "setup-mariadb: installing MariaDB" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
fi
cnf=/etc/mysql/my.cnf
marker="# tidemark: binlog capture"
if ! grep -q "^$marker" "$cnf" 2>/dev/null; then
  cat >> "$cnf" <<CNF

$marker
[mysqld]
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
binlog_checksum = CRC32
expire_logs_days = 7
CNF
  changed=1
else
  changed=0
fi

ping() { mariadb-admin -uroot --connect-timeout=2 ping >/dev/null 2>&1; }
main_pid_file() {
  my_print_defaults --mysqld 2>/dev/null | sed -n 's/^--pid[-_]file=//p' | tail -1 | grep . || echo /run/mysqld/mysqld.pid
}
start() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  # The pid file tells this server from the second one below.
  start-stop-daemon --start --oknodo --background --pidfile "$(main_pid_file)" --exec /usr/sbin/mariadbd
  for _ in $(seq 1 100); do ping && return 0; sleep 0.2; done
  echo "setup-mariadb: MariaDB did not start (see /var/log/mysql/error.log)" >&2
  return 1
}
if ! ping; then
  start
elif [ "$changed" = 1 ] || [ "$(mariadb -uroot -N -e 'SELECT @@log_bin')" = 0 ]; then
  echo "setup-mariadb: restarting MariaDB for binlog settings" >&2
  main_pid=$(cat "$(main_pid_file)" 2>/dev/null || true)
  mariadb-admin -uroot shutdown
  for _ in $(seq 1 100); do [ -n "$main_pid" ] && kill -0 "$main_pid" 2>/dev/null || break; sleep 0.2; done
  start
fi
settings=$(mariadb -uroot -N -e "SELECT CONCAT_WS(',', @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata)")
[ "$settings" = "1,ROW,FULL,FULL" ] || [ "$settings" = "ON,ROW,FULL,FULL" ] || { echo "setup-mariadb: unexpected settings $settings" >&2; exit 1; }
echo "setup-mariadb: ready (log_bin, ROW, FULL image, FULL metadata)" >&2

# The second server: its own data directory, socket and pid file, so that
# start-stop-daemon tells it from the main one.
second=/var/lib/mysql-no-metadata
sock=/run/mysqld/no-metadata.sock
tls=$second/tls
modes=STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES
ping_second() { mariadb-admin -uroot -S "$sock" --connect-timeout=2 ping >/dev/null 2>&1; }
if [ ! -s "$tls/server-cert.pem" ]; then
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tidemark test CA" \
    -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server-key.pem" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\n' > "$tls/san.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" \
    -CAcreateserial -days 3650 -extfile "$tls/san.ext" -out "$tls/server-cert.pem" 2>/dev/null
  chown -R mysql:mysql "$tls" 2>/dev/null || true
  chmod 644 "$tls/ca.pem"
fi
if ping_second; then
  state=$(mariadb -uroot -S "$sock" -N -e "SELECT CONCAT_WS(',', @@have_ssl, FIND_IN_SET('NO_BACKSLASH_ESCAPES', @@GLOBAL.sql_mode) > 0)")
  if [ "$state" != "YES,1" ]; then
    echo "setup-mariadb: restarting the server on 3307 for TLS and NO_BACKSLASH_ESCAPES" >&2
    pid=$(cat /run/mysqld/no-metadata.pid 2>/dev/null || true)
    mariadb-admin -uroot -S "$sock" shutdown
    for _ in $(seq 1 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
fi
if ! ping_second; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  if [ ! -d "$second/mysql" ]; then
    mkdir -p "$second" && chown mysql:mysql "$second"
    mariadb-install-db --no-defaults --user=mysql --datadir="$second" \
      --auth-root-authentication-method=normal --skip-test-db >/dev/null
  fi
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile /run/mysqld/no-metadata.pid \
    --exec /usr/sbin/mariadbd -- --no-defaults --user=mysql --datadir="$second" \
    --port=3307 --bind-address=127.0.0.1 --socket="$sock" --log-error="$second/error.log" \
    --server-id=2 --log-bin=mariadb-bin --binlog-format=ROW --binlog-row-image=FULL \
    --binlog-checksum=CRC32 --innodb-buffer-pool-size=32M --sql-mode="$modes" \
    --ssl-ca="$tls/ca.pem" --ssl-cert="$tls/server-cert.pem" --ssl-key="$tls/server-key.pem"
  for _ in $(seq 1 100); do ping_second && break; sleep 0.2; done
  ping_second || { echo "setup-mariadb: the second server did not start (see $second/error.log)" >&2; exit 1; }
fi
mariadb -uroot -S "$sock" -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
  CREATE USER IF NOT EXISTS 'tidemark_tls'@'127.0.0.1' REQUIRE SSL; GRANT ALL ON *.* TO 'tidemark_tls'@'127.0.0.1'"
meta=$(mariadb -uroot -h127.0.0.1 -P3307 -N -e "SELECT CONCAT_WS(',', @@log_bin, @@binlog_format, @@binlog_row_metadata, @@have_ssl, FIND_IN_SET('NO_BACKSLASH_ESCAPES', @@GLOBAL.sql_mode) > 0)")
[ "$meta" = "1,ROW,NO_LOG,YES,1" ] || [ "$meta" = "ON,ROW,NO_LOG,YES,1" ] || { echo "setup-mariadb: unexpected settings on 3307: $meta" >&2; exit 1; }
echo "setup-mariadb: ready on 3307 too (binlog_row_metadata NO_LOG, NO_BACKSLASH_ESCAPES, TLS)" >&2
