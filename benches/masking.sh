#!/usr/bin/env bash
# Benchmark: the cost of masking in flight. The same binlog (MariaDB) and the
# same WAL (PostgreSQL) are read by tidemark into the file sink twice per
# round: without transforms, and with three masked columns (`hash` on email,
# `tokenize` on ssn, `encrypt` on note). Runs take turns, RUNS rounds (3 by
# default), and each keeps its best wall time; prints rows/s for both, the
# slowdown, and peak RSS. The goal is at most 15% slower. Not a test.
#
#   bash benches/masking.sh          # ROWS=200000, RUNS=3, ENGINES="mariadb postgres" by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-200000}
RUNS=${RUNS:-3}
ENGINES=${ENGINES:-"mariadb postgres"}
DB=tm_bench_mask
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

bash scripts/setup-postgres.sh >/dev/null
bash scripts/setup-mariadb.sh >/dev/null
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
export TM_BENCH_KEY=6f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck source=benches/timing.sh
. "$root/benches/timing.sh"

masks() { # table pattern
  cat <<TOML
[keys]
k1 = "\${TM_BENCH_KEY}"
[[transform]]
tables = ["$1"]
[transform.mask]
email = { technique = "hash", key = "k1" }
ssn = { technique = "tokenize", key = "k1" }
note = { technique = "encrypt", key = "k1" }
TOML
}

report() { # label, plain time file, masked time file
  local ps pk ms mk
  read -r ps pk < "$2"
  read -r ms mk < "$3"
  awk -v label="$1" -v rows="$ROWS" -v ps="$ps" -v ms="$ms" -v pk="$pk" -v mk="$mk" 'BEGIN {
    printf "%-10s plain  %8.0f rows/s (%6.3fs, peak RSS %5.1f MB)\n", label, rows / (ps / 1000), ps / 1000, pk / 1024
    printf "%-10s masked %8.0f rows/s (%6.3fs, peak RSS %5.1f MB)  %+.1f%% time\n", "", rows / (ms / 1000), ms / 1000, mk / 1024, (ms / ps - 1) * 100
  }'
}

load_rows() { # printf format of one INSERT ... for rows s..e
  awk -v rows="$ROWS" -v fmt="$1" 'BEGIN {
    for (s = 1; s <= rows; s += 20) { e = s + 19; if (e > rows) e = rows; printf fmt, s, e }
  }'
}

mariadb_case() {
  my() { mariadb -N -uroot -h127.0.0.1 "$@"; }
  my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB;
         CREATE TABLE $DB.people (id int PRIMARY KEY, name varchar(40) NOT NULL, email varchar(60) NOT NULL,
                                  ssn varchar(11) NOT NULL, note varchar(80) NOT NULL)"
  read -r file start < <(my -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
  load_rows "INSERT INTO $DB.people SELECT seq, CONCAT('name-', seq), CONCAT('person', seq, '@corp.test'), CONCAT(LPAD(seq %% 1000, 3, '0'), '-', LPAD(seq %% 100, 2, '0'), '-', LPAD(seq %% 10000, 4, '0')), CONCAT('note for ', seq) FROM seq_%d_to_%d;\n" > "$work/load.sql"
  my -D "$DB" < "$work/load.sql"
  read -r end_file end < <(my -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
  [ "$file" = "$end_file" ] || { echo "binlog rotated during the workload; run again" >&2; exit 1; }
  for mode in plain masked; do
    cat > "$work/my-$mode.toml" <<TOML
[pipeline]
name = "bench"
[source]
type = "mysql"
url = "mysql://root@127.0.0.1:3306/$DB"
tables = ["$DB.people"]
server_id = 4395
snapshot = "never"
[sink]
type = "file"
path = "$work/events"
[cursor]
type = "file"
path = "$work/cursor.json"
TOML
    [ "$mode" = masked ] && masks "$DB.people" >> "$work/my-$mode.toml"
  done
  rm -f "$work"/my-*.time
  for _ in $(seq "$RUNS"); do
    for mode in plain masked; do
      rm -rf "$work/events"
      printf '{"pipeline":"bench","position":{"mysql":{"file":"%s","pos":%s}},"position_text":"","updated_at_ms":0}' "$file" "$start" > "$work/cursor.json"
      RUST_LOG=warn once "$work/my-$mode.time" "$bin" run --config "$work/my-$mode.toml" --stop-at-binlog "$file:$end"
    done
  done
  grep -q '"email":"person1@corp.test"' "$work"/events/*.jsonl && { echo "masked run left a raw email" >&2; exit 1; }
  report "MariaDB" "$work/my-plain.time" "$work/my-masked.time"
}

postgres_case() {
  psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
  psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
  psql_ -d $DB -c "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL, ssn text NOT NULL, note text NOT NULL)" \
               -c "CREATE PUBLICATION $DB FOR TABLE people" >/dev/null
  # A template slot made before the load: each run reads a copy of it, so
  # every run decodes the same WAL.
  psql_ -d $DB -c "SELECT pg_create_logical_replication_slot('${DB}_template', 'pgoutput')" >/dev/null
  load_rows "INSERT INTO people SELECT g, 'name-' || g, 'person' || g || '@corp.test', lpad((g %% 1000)::text, 3, '0') || '-' || lpad((g %% 100)::text, 2, '0') || '-' || lpad((g %% 10000)::text, 4, '0'), 'note for ' || g FROM generate_series(%d, %d) g;\n" > "$work/load.sql"
  psql_ -d $DB -f "$work/load.sql" >/dev/null
  local end
  end=$(psql_ -d $DB -c "SELECT pg_current_wal_lsn()")
  for mode in plain masked; do
    cat > "$work/pg-$mode.toml" <<TOML
[pipeline]
name = "bench"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$DB"
tables = ["public.people"]
slot = "${DB}_run"
publication = "$DB"
snapshot = "never"
[sink]
type = "file"
path = "$work/events"
[cursor]
type = "file"
path = "$work/cursor.json"
TOML
    [ "$mode" = masked ] && masks "public.people" >> "$work/pg-$mode.toml"
  done
  rm -f "$work"/pg-*.time
  for _ in $(seq "$RUNS"); do
    for mode in plain masked; do
      rm -rf "$work/events" "$work/cursor.json"
      psql_ -d $DB -c "SELECT pg_drop_replication_slot('${DB}_run') FROM pg_replication_slots WHERE slot_name = '${DB}_run'" >/dev/null
      psql_ -d $DB -c "SELECT pg_copy_logical_replication_slot('${DB}_template', '${DB}_run')" >/dev/null
      RUST_LOG=warn once "$work/pg-$mode.time" "$bin" run --config "$work/pg-$mode.toml" --stop-at-lsn "$end"
    done
  done
  psql_ -d $DB -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
  grep -q '"email":"person1@corp.test"' "$work"/events/*.jsonl && { echo "masked run left a raw email" >&2; exit 1; }
  report "PostgreSQL" "$work/pg-plain.time" "$work/pg-masked.time"
}

echo "$ROWS row inserts in transactions of 20 rows, read into the file sink; best of $RUNS runs each, runs in turn"
for engine in $ENGINES; do "${engine}_case"; done
