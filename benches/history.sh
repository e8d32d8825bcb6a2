#!/usr/bin/env bash
# Benchmark: history mode (SCD Type 2) against upsert apply, on the same
# events. ROWS changes (inserts of ROWS/2 rows, then one update per row, in
# transactions of 100) are captured from PostgreSQL into the file sink once;
# then, RUNS rounds (3 by default), `tidemark apply --until-idle` writes them
# into fresh PostgreSQL and MariaDB targets, upserting and in history mode,
# taking turns. Each keeps its best wall time; prints changes/s, the ratio
# (goal: history at least half the upsert rate) and peak RSS. Not a test.
#
#   bash benches/history.sh          # ROWS=200000, RUNS=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-200000}
RUNS=${RUNS:-3}
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
bash scripts/setup-postgres.sh >/dev/null
bash scripts/setup-mariadb.sh >/dev/null
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
PG=postgres://postgres@127.0.0.1:5432
psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
my_() { mariadb -N -uroot -h127.0.0.1 -P3306 "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=benches/timing.sh
. "$root/benches/timing.sh"
fresh_pg() {
  psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$1'" >/dev/null
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}
TABLE="CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"

# shellcheck source=benches/pg_changes.sh
. "$root/benches/pg_changes.sh"
capture_changes tm_bench_hist
echo "captured $events events; $RUNS rounds, best of each"

# One apply into a fresh target: engine (postgres|mysql), mode (upsert|history).
apply_once() {
  local engine=$1 mode=$2 url db=tm_bench_hist_dst
  if [ "$engine" = postgres ]; then
    fresh_pg $db >/dev/null
    [ "$mode" = upsert ] && psql_ -d $db -c "$TABLE"
    url="$PG/$db"
  else
    my_ -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
    [ "$mode" = upsert ] && my_ -e "CREATE TABLE $db.bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price decimal(10,2) NOT NULL, created_at datetime(6) NOT NULL)"
    url="mysql://root@127.0.0.1:3306/$db"
  fi
  cp "$work/capture.toml" "$work/apply.toml"
  printf '[target]\ntype = "%s"\nurl = "%s"\n' "$engine" "$url" >> "$work/apply.toml"
  [ "$mode" = history ] && printf '[[target.history]]\ntables = ["public.bench"]\n' >> "$work/apply.toml"
  printf '[apply]\ninput = "sink"\n' >> "$work/apply.toml"
  once "$work/time-$engine-$mode" "$bin" apply --config "$work/apply.toml" --until-idle 2>"$work/apply.log" \
    || { cat "$work/apply.log" >&2; exit 1; }
}

for _ in $(seq "$RUNS"); do
  for engine in postgres mysql; do
    apply_once "$engine" upsert
    apply_once "$engine" history
  done
done
for engine in postgres mysql; do
  read -r us uk < "$work/time-$engine-upsert"
  read -r hs hk < "$work/time-$engine-history"
  awk -v l="$engine" -v n="$events" -v us="$us" -v hs="$hs" -v uk="$uk" -v hk="$hk" 'BEGIN {
    printf "%-9s upsert  %8.0f changes/s (%6.2fs, peak RSS %5.1f MB)\n", l, n / (us / 1000), us / 1000, uk / 1024
    printf "%-9s history %8.0f changes/s (%6.2fs, peak RSS %5.1f MB)  %.2fx the upsert rate\n", "", n / (hs / 1000), hs / 1000, hk / 1024, us / hs
  }'
done
