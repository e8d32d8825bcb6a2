#!/usr/bin/env bash
# Makes the local MariaDB ready for binlog capture, idempotently: log_bin on,
# binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, a
# server_id, and GTID strict mode; restarts the server only when a setting
# changes, and starts it when it is stopped.
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
start() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 100); do ping && return 0; sleep 0.2; done
  echo "setup-mariadb: MariaDB did not start (see /var/log/mysql/error.log)" >&2
  return 1
}
if ! ping; then
  start
elif [ "$changed" = 1 ] || [ "$(mariadb -uroot -N -e 'SELECT @@log_bin')" = 0 ]; then
  echo "setup-mariadb: restarting MariaDB for binlog settings" >&2
  mariadb-admin -uroot shutdown
  for _ in $(seq 1 100); do pgrep -x mariadbd >/dev/null || break; sleep 0.2; done
  start
fi
settings=$(mariadb -uroot -N -e "SELECT CONCAT_WS(',', @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata)")
[ "$settings" = "1,ROW,FULL,FULL" ] || [ "$settings" = "ON,ROW,FULL,FULL" ] || { echo "setup-mariadb: unexpected settings $settings" >&2; exit 1; }
echo "setup-mariadb: ready (log_bin, ROW, FULL image, FULL metadata)" >&2
