#!/usr/bin/env bash
# Benchmark: applying changes into PostgreSQL and MariaDB, and the initial
# copy of a migration against pgcopydb. Not a test: no assertions, figures.
#
# 1. Apply: ROWS changes (inserts of ROWS/2 rows, then one update per row,
#    in transactions of 100) are captured from PostgreSQL into the file sink,
#    then `tidemark apply --until-idle` writes them into a PostgreSQL target and
#    into a MariaDB target. Prints rows/s (changes applied per second of apply).
#    The published follow rate of pgcopydb / the Debezium JDBC sink (1.5k-2.3k
#    rows/s) is the reference the issue names.
# 2. Copy: a ROWS-row table is copied PG -> PG by `tidemark migrate run`
#    (until its copy stage ends) and by `pgcopydb clone` (Debian package
#    `pgcopydb`), into fresh databases, side by side.
#
#   bash benches/apply.sh            # ROWS=200000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-200000}
command -v pgcopydb >/dev/null || { apt-get update -qq && apt-get install -y -qq pgcopydb >/dev/null; }
bash scripts/setup-postgres.sh >/dev/null
bash scripts/setup-mariadb.sh >/dev/null
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
PG=postgres://postgres@127.0.0.1:5432
psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
my_() { mariadb -N -uroot -h127.0.0.1 -P3306 "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
fresh_pg() {
  psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$1'" >/dev/null
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}
TABLE="CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"

echo "== apply: $ROWS changes captured from PostgreSQL, applied with tidemark apply"
# shellcheck source=benches/pg_changes.sh
. "$root/benches/pg_changes.sh"
capture_changes tm_bench_apply
echo "captured $events events"

apply_into() {
  local label=$1 target=$2
  cp "$work/capture.toml" "$work/apply-$label.toml"
  printf '[target]\ntype = "%s"\nurl = "%s"\n[apply]\ninput = "sink"\n' "$label" "$target" >> "$work/apply-$label.toml"
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss-$label" "$bin" apply --config "$work/apply-$label.toml" --until-idle 2>"$work/apply-$label.log"
  t1=$(now)
  awk -v n="$events" -v a="$t0" -v b="$t1" -v rss="$(cat "$work/rss-$label")" -v l="$label" \
    'BEGIN { printf "%-9s %8d changes in %6.2f s = %8.0f rows/s, peak RSS %d MB\n", l, n, b - a, n / (b - a), rss / 1024 }'
}
fresh_pg tm_bench_apply_pg
psql_ -d tm_bench_apply_pg -c "$TABLE"
apply_into postgres "$PG/tm_bench_apply_pg"
my_ -e "DROP DATABASE IF EXISTS tm_bench_apply_my; CREATE DATABASE tm_bench_apply_my; USE tm_bench_apply_my;
  CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price decimal(10,2) NOT NULL, created_at datetime(6) NOT NULL)"
apply_into mysql "mysql://root@127.0.0.1:3306/tm_bench_apply_my"
echo "reference: pgcopydb follow / Debezium JDBC sink, published: 1500-2300 rows/s"

echo "== copy: $ROWS rows PG -> PG, tidemark migrate run (copy stage) vs pgcopydb clone"
fresh_pg tm_bench_copy_src
psql_ -d tm_bench_copy_src -c "$TABLE" \
  -c "INSERT INTO bench (id, name, qty, price) SELECT g, 'item-' || g, g % 100, (g % 1000) / 10.0 FROM generate_series(1, $ROWS) g"
fresh_pg tm_bench_copy_tm
fresh_pg tm_bench_copy_pgcopydb
cat > "$work/migrate.toml" <<TOML
[pipeline]
name = "bench-copy"
[source]
type = "postgres"
url = "$PG/tm_bench_copy_src"
tables = ["public.bench"]
slot = "tm_bench_copy"
publication = "tm_bench_copy"
[target]
type = "postgres"
url = "$PG/tm_bench_copy_tm"
[migrate]
parallelism = 4
chunk_rows = 50000
TOML
t0=$(now)
"$bin" migrate run --config "$work/migrate.toml" 2>"$work/migrate.log" &
pid=$!
until "$bin" migrate status --config "$work/migrate.toml" 2>/dev/null | grep -q "stage catch-up"; do sleep 0.05; done
t1=$(now)
kill -TERM $pid; wait $pid || true
t2=$(now)
pgcopydb clone --source "$PG/tm_bench_copy_src" --target "$PG/tm_bench_copy_pgcopydb" \
  --table-jobs 4 --index-jobs 2 --dir "$work/pgcopydb" --no-owner --no-acl >"$work/pgcopydb.log" 2>&1 || { echo "pgcopydb failed:"; tail -5 "$work/pgcopydb.log"; }
t3=$(now)
awk -v n="$ROWS" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
  printf "tidemark  %8d rows in %6.2f s = %8.0f rows/s\n", n, b - a, n / (b - a);
  printf "pgcopydb  %8d rows in %6.2f s = %8.0f rows/s\n", n, d - c, n / (d - c);
  printf "ratio     %.2fx\n", (d - c) / (b - a) }'
psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('tm_bench_apply', 'tm_bench_copy')" >/dev/null
