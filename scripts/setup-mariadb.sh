#!/usr/bin/env bash
# Makes the local MariaDB ready for binlog capture, idempotently: log_bin on,
# binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, a
# server_id, and GTID strict mode; restarts the server only when a setting
# changes, and starts it when it is stopped.
#
# Also starts a second server on 127.0.0.1:3307 (data in
# /var/lib/mysql-no-metadata) with binlog_row_metadata left at MariaDB's
# default NO_LOG, for the test of capture without TABLE_MAP metadata.
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
ping_second() { mariadb-admin -uroot -S "$sock" --connect-timeout=2 ping >/dev/null 2>&1; }
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
    --binlog-checksum=CRC32 --innodb-buffer-pool-size=32M
  for _ in $(seq 1 100); do ping_second && break; sleep 0.2; done
  ping_second || { echo "setup-mariadb: the second server did not start (see $second/error.log)" >&2; exit 1; }
fi
mariadb -uroot -S "$sock" -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"
meta=$(mariadb -uroot -h127.0.0.1 -P3307 -N -e "SELECT CONCAT_WS(',', @@log_bin, @@binlog_format, @@binlog_row_metadata)")
[ "$meta" = "1,ROW,NO_LOG" ] || [ "$meta" = "ON,ROW,NO_LOG" ] || { echo "setup-mariadb: unexpected settings on 3307: $meta" >&2; exit 1; }
echo "setup-mariadb: ready on 3307 too (binlog_row_metadata NO_LOG)" >&2
