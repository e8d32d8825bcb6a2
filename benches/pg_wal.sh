#!/usr/bin/env bash
# Benchmark: tidemark (pgoutput → file sink, fsync before each cursor commit) against
# pg_recvlogical (pgoutput → /dev/null) reading the same WAL from two slots
# created at the same point (tidemark reads first, so any warm-cache advantage
# goes to pg_recvlogical). Two workloads of 200k row inserts: 10k transactions
# of 20 rows, and one transaction of 200k rows. Prints events/s for both tools,
# the ratio, and each tool's peak RSS. Not a test: no assertions, just figures.
#
#   bash benches/pg_wal.sh            # ROWS=200000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-200000}
DB=tm_bench
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

bash scripts/setup-postgres.sh
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql_ -d $DB -c "CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())" \
             -c "CREATE PUBLICATION tm_bench FOR TABLE bench"

run_case() {
  local label=$1 tx_rows=$2
  psql_ -d $DB -c "TRUNCATE bench" >/dev/null
  for slot in tm_bench_tidemark tm_bench_recv; do
    psql_ -d $DB -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
    psql_ -d $DB -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
  done
  # The workload: ROWS inserts in transactions of tx_rows rows.
  awk -v rows="$ROWS" -v per="$tx_rows" 'BEGIN {
    for (s = 1; s <= rows; s += per) {
      e = s + per - 1; if (e > rows) e = rows;
      printf "INSERT INTO bench (id, name, qty, price) SELECT g, %s || g, g %% 100, (g %% 1000) / 10.0 FROM generate_series(%d, %d) g;\n", "'\''item-'\''", s, e
    }
  }' > "$work/load.sql"
  psql_ -d $DB -f "$work/load.sql" >/dev/null
  local end
  end=$(psql_ -d $DB -c "SELECT pg_current_wal_lsn()")

  rm -rf "$work/events" "$work/cursor.json"
  cat > "$work/bench.toml" <<TOML
[pipeline]
name = "bench"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$DB"
tables = ["public.bench"]
slot = "tm_bench_tidemark"
publication = "tm_bench"
snapshot = "never"
[sink]
type = "file"
path = "$work/events"
[cursor]
type = "file"
path = "$work/cursor.json"
TOML
  RUST_LOG=warn /usr/bin/time -f "%e %M" -o "$work/tidemark.time" \
    "$bin" run --config "$work/bench.toml" --stop-at-lsn "$end"
  /usr/bin/time -f "%e %M" -o "$work/recv.time" \
    pg_recvlogical -h 127.0.0.1 -U postgres -d $DB --slot tm_bench_recv --start --endpos "$end" \
      -o proto_version=1 -o publication_names=tm_bench -f /dev/null
  local events
  events=$(cat "$work"/events/*.jsonl | wc -l)
  read -r recv_s recv_kb < "$work/recv.time"
  read -r tm_s tm_kb < "$work/tidemark.time"
  awk -v label="$label" -v rows="$ROWS" -v ev="$events" -v rs="$recv_s" -v rk="$recv_kb" -v ts="$tm_s" -v tk="$tm_kb" 'BEGIN {
    r = rows / (rs > 0 ? rs : 0.001); t = ev / (ts > 0 ? ts : 0.001);
    printf "%-28s pg_recvlogical %9.0f ev/s (%6.2fs, RSS %5.1f MB) | tidemark %9.0f ev/s (%6.2fs, %d events, peak RSS %5.1f MB) | ratio %.2f\n",
      label, r, rs, rk / 1024, t, ts, ev, tk / 1024, t / r
  }'
}

echo "WAL of $ROWS row inserts; tidemark writes JSON lines (fsync before each cursor commit), pg_recvlogical writes raw pgoutput to /dev/null"
run_case "$((ROWS / 20)) tx x 20 rows" 20
run_case "1 tx x $ROWS rows" "$ROWS"
