#!/usr/bin/env bash
# Benchmark: tidemark (binlog → JSON lines file sink, fsync before each cursor commit → cursor)
# against three readers of the same binlog range, on 200k row inserts written as
# 10k transactions of 20 rows and as one transaction:
#   - mariadb-binlog --read-from-remote-server --verbose  (the server's own decoder)
#   - mariadb-binlog --read-from-remote-server --raw      (the network ceiling)
#   - python-mysql-replication (PyPI mysql-replication), is_mariadb=False with file+pos
# Each reader runs RUNS times (3 by default) and keeps its best time, timed in
# milliseconds (the runs take a few tenths of a second, so one run's noise would
# move the ratios); tidemark and the mariadb-binlog runs take turns. Prints rows/s for each, tidemark's ratios and its peak RSS.
# Not a test.
#
#   bash benches/mysql_binlog.sh          # ROWS=200000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-200000}
RUNS=${RUNS:-3}
DB=tm_bench_my
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
python3 -c "import pymysqlreplication" 2>/dev/null || pip install -q mysql-replication

bash scripts/setup-mariadb.sh
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
my() { mariadb -N -uroot -h127.0.0.1 "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB;
       CREATE TABLE $DB.bench (id int PRIMARY KEY, name varchar(40) NOT NULL, qty int NOT NULL,
                              price decimal(10,2) NOT NULL, created_at datetime(6) NOT NULL DEFAULT now(6))"

cat > "$work/pyrepl.py" <<'PY'
import sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent
f, p = sys.argv[1], int(sys.argv[2])
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""},
    server_id=4391, log_file=f, log_pos=p, resume_stream=True, blocking=False,
    only_events=[WriteRowsEvent], is_mariadb=False)
n = 0
for event in stream:
    for row in event.rows:
        n += 1
stream.close()
print(n)
PY

master() { my -e "SHOW MASTER STATUS" | awk '{print $1, $2}'; }
# shellcheck source=benches/timing.sh
. "$root/benches/timing.sh"

run_case() {
  local label=$1 tx_rows=$2
  my -e "TRUNCATE $DB.bench"
  read -r file start < <(master)
  if [ "$tx_rows" -ge "$ROWS" ]; then
    echo "BEGIN; INSERT INTO $DB.bench (id, name, qty, price) SELECT seq, CONCAT('item-', seq), seq % 100, (seq % 1000) / 10 FROM seq_1_to_$ROWS; COMMIT;" > "$work/load.sql"
  else
    awk -v rows="$ROWS" -v per="$tx_rows" -v db="$DB" 'BEGIN {
      for (s = 1; s <= rows; s += per) {
        e = s + per - 1; if (e > rows) e = rows;
        printf "INSERT INTO %s.bench (id, name, qty, price) SELECT seq, CONCAT(\"item-\", seq), seq %% 100, (seq %% 1000) / 10 FROM seq_%d_to_%d;\n", db, s, e
      }
    }' > "$work/load.sql"
  fi
  my -D "$DB" < "$work/load.sql"
  read -r end_file end < <(master)
  [ "$file" = "$end_file" ] || { echo "binlog rotated during the workload ($file → $end_file); run again" >&2; exit 1; }

  local py_rows
  rm -f "$work"/*.time
  # python-mysql-replication takes seconds: its runs first. The others take
  # tenths of a second and run in turn, round after round, so that a change in
  # the machine's speed hits them alike.
  for _ in $(seq "$RUNS"); do
    once "$work/py.time" sh -c "python3 '$work/pyrepl.py' '$file' '$start' > '$work/py.out'"
  done
  py_rows=$(cat "$work/py.out")
  cat > "$work/bench.toml" <<TOML
[pipeline]
name = "bench"
[source]
type = "mysql"
url = "mysql://root@127.0.0.1:3306/$DB"
tables = ["$DB.bench"]
server_id = 4390
snapshot = "never"
[sink]
type = "file"
path = "$work/events"
[cursor]
type = "file"
path = "$work/cursor.json"
TOML
  for _ in $(seq "$RUNS"); do
    once "$work/verbose.time" sh -c "mariadb-binlog --read-from-remote-server -h127.0.0.1 -uroot --verbose --start-position=$start --stop-position=$end $file > /dev/null"
    rm -rf "$work/raw" && mkdir -p "$work/raw"
    once "$work/raw.time" mariadb-binlog --read-from-remote-server --raw -h127.0.0.1 -uroot --start-position="$start" --result-file="$work/raw/" "$file"
    rm -rf "$work/events"
    printf '{"pipeline":"bench","position":{"mysql":{"file":"%s","pos":%s}},"position_text":"","updated_at_ms":0}' "$file" "$start" > "$work/cursor.json"
    RUST_LOG=warn once "$work/tidemark.time" "$bin" run --config "$work/bench.toml" --stop-at-binlog "$file:$end"
  done
  local events
  events=$(cat "$work"/events/*.jsonl | wc -l)
  read -r vs _ < "$work/verbose.time"
  read -r rs _ < "$work/raw.time"
  read -r ps _ < "$work/py.time"
  read -r ts tk < "$work/tidemark.time"
  vs=$(awk -v ms="$vs" 'BEGIN { print ms / 1000 }'); rs=$(awk -v ms="$rs" 'BEGIN { print ms / 1000 }')
  ps=$(awk -v ms="$ps" 'BEGIN { print ms / 1000 }'); ts=$(awk -v ms="$ts" 'BEGIN { print ms / 1000 }')
  awk -v label="$label" -v rows="$ROWS" -v ev="$events" -v py="$py_rows" -v vs="$vs" -v rs="$rs" -v ps="$ps" -v ts="$ts" -v tk="$tk" 'BEGIN {
    v = rows / (vs > 0 ? vs : 0.001); r = rows / (rs > 0 ? rs : 0.001);
    p = py / (ps > 0 ? ps : 0.001); t = ev / (ts > 0 ? ts : 0.001);
    printf "%-24s tidemark %8.0f rows/s (%5.3fs, %d events, peak RSS %5.1f MB)\n", label, t, ts, ev, tk / 1024
    printf "%-24s   mariadb-binlog --verbose %8.0f rows/s (%5.3fs)  ratio %.2f\n", "", v, vs, t / v
    printf "%-24s   mariadb-binlog --raw     %8.0f rows/s (%5.3fs)  ratio %.2f\n", "", r, rs, t / r
    printf "%-24s   python-mysql-replication %8.0f rows/s (%5.2fs, %d rows)  ratio %.1f\n", "", p, ps, py, t / p
  }'
}

echo "Binlog of $ROWS row inserts; tidemark writes JSON lines, fsynced before each cursor commit (commit_interval 1s, and at the stop); best of $RUNS runs each"
run_case "$((ROWS / 20)) tx x 20 rows" 20
run_case "1 tx x $ROWS rows" "$ROWS"
