#!/usr/bin/env bash
# Benchmark: peak RSS against backlog size (issue 21). A backlog is written
# first, then read by one bounded run (`run --stop-at-lsn` / `--stop-at-binlog`)
# into the file sink, timed as a whole process with peak RSS from the kernel
# (/usr/bin/time %M). Each size runs RUNS times (2 by default, warm after the
# first); the table prints every run. Beside tidemark, the reference readers
# of the same log: pg_recvlogical (pgoutput to /dev/null) and
# `mariadb-binlog --verbose` (to /dev/null), for throughput. Not a test.
#
# Cases: PostgreSQL and MariaDB into the file sink at each size in SIZES
# (10,000 transactions each); PostgreSQL into Kinesis (kinesalite) with the
# emulator stopped (SIGSTOP) for HOLD seconds mid-run; one transaction of
# TX_ROWS rows; a table of BIG_ROWS rows of 2 MB.
#
#   bash benches/memory.sh     # SIZES="200000 1000000 5000000" RUNS=2 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
SIZES=${SIZES:-"200000 1000000 5000000"}
RUNS=${RUNS:-2}
TX_ROWS=${TX_ROWS:-1000000}
BIG_ROWS=${BIG_ROWS:-200}
HOLD=${HOLD:-5}
CASES=${CASES:-"pg mariadb kinesis onetx big"}
DB=tm_bench_mem
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
bash scripts/setup-postgres.sh >/dev/null
bash scripts/setup-mariadb.sh >/dev/null
bash scripts/setup-aws-emulators.sh >/dev/null
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
my() { mariadb -N -uroot -h127.0.0.1 "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1

# `timed LABEL COMMAND...`: runs COMMAND, prints "seconds peak-MB" into $work/LABEL.
timed() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/$label" "$@"
}

row() { # case, backlog, run, events, tidemark time file, reference name, reference time file
  local ts tk rs rk
  read -r ts tk < "$5"
  if [ -n "$7" ]; then read -r rs rk < "$7"; else rs=0; rk=0; fi
  awk -v c="$1" -v b="$2" -v r="$3" -v n="$4" -v ts="$ts" -v tk="$tk" -v ref="$6" -v rs="$rs" 'BEGIN {
    t = n / (ts > 0 ? ts : 0.001)
    line = sprintf("%-22s %9d  run %d  peak RSS %6.1f MB  %9.0f ev/s (%6.2fs)", c, b, r, tk / 1024, t, ts)
    if (ref != "") line = line sprintf("  %s %9.0f ev/s  ratio %.2f", ref, n / (rs > 0 ? rs : 0.001), t / (n / (rs > 0 ? rs : 0.001)))
    print line
  }'
}

fresh_pg() {
  psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
  psql_ -d $DB -c "$1" -c "CREATE PUBLICATION tm_mem FOR TABLE bench" >/dev/null
}

pg_config() { # sink lines
  cat <<TOML
[pipeline]
name = "bench-mem"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$DB"
tables = ["public.bench"]
slot = "tm_mem"
publication = "tm_mem"
snapshot = "never"
heartbeat_interval = "off"
[http]
listen = "off"
$1
TOML
}

file_sink() {
  printf '[sink]\ntype = "file"\npath = "%s/events"\n[cursor]\ntype = "file"\npath = "%s/cursor.json"\n' "$work" "$work"
}

# Writes the Postgres backlog (`rows` rows in transactions of `per`) after
# making the slots; prints the end LSN.
pg_backlog() { # rows per row_sql
  local rows=$1 per=$2
  for slot in tm_mem tm_mem_recv; do
    psql_ -d $DB -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" \
      -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
  done
  awk -v rows="$rows" -v per="$per" -v sql="$3" 'BEGIN {
    for (s = 1; s <= rows; s += per) { e = s + per - 1; if (e > rows) e = rows; printf sql ";\n", s, e }
  }' | psql_ -d $DB >/dev/null
  psql_ -d $DB -c "SELECT pg_current_wal_lsn()"
}

SMALL="CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
SMALL_ROWS="INSERT INTO bench (id, name, qty, price) SELECT g, 'item-' || g, g %% 100, (g %% 1000) / 10.0 FROM generate_series(%d, %d) g"

# One Postgres case: a fresh backlog per run (so every run reads the same
# amount), tidemark then pg_recvlogical on the same WAL.
pg_case() { # label rows per table row_sql sink_lines [during-run hook]
  local label=$1 rows=$2 per=$3 end events
  for run in $(seq "$RUNS"); do
    fresh_pg "$4"
    end=$(pg_backlog "$rows" "$per" "$5")
    rm -rf "$work/events" "$work/cursor.json"
    pg_config "$6" > "$work/pg.toml"
    if [ -n "${7:-}" ]; then $7 & fi
    RUST_LOG=warn timed tm.time "$bin" run --config "$work/pg.toml" --stop-at-lsn "$end"
    wait
    timed ref.time pg_recvlogical -h 127.0.0.1 -U postgres -d $DB --slot tm_mem_recv --start --endpos "$end" \
      -o proto_version=1 -o publication_names=tm_mem -f /dev/null
    events=$rows
    [ -d "$work/events" ] && events=$(cat "$work"/events/*.jsonl | wc -l)
    row "$label" "$rows" "$run" "$events" "$work/tm.time" pg_recvlogical "$work/ref.time"
  done
}

mariadb_case() { # rows
  local rows=$1 per=$(( $1 / 10000 )) file start end_file end events
  for run in $(seq "$RUNS"); do
    my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB;
           CREATE TABLE $DB.bench (id int PRIMARY KEY, name varchar(40) NOT NULL, qty int NOT NULL, price decimal(10,2) NOT NULL)"
    my -e "FLUSH BINARY LOGS"
    read -r file start < <(my -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
    awk -v rows="$rows" -v per="$per" -v db="$DB" 'BEGIN {
      for (s = 1; s <= rows; s += per) { e = s + per - 1; if (e > rows) e = rows;
        printf "INSERT INTO %s.bench SELECT seq, CONCAT(\"item-\", seq), seq %% 100, (seq %% 1000) / 10 FROM seq_%d_to_%d;\n", db, s, e }
    }' | my -D "$DB"
    read -r end_file end < <(my -e "SHOW MASTER STATUS" | awk '{print $1, $2}')
    [ "$file" = "$end_file" ] || { echo "binlog rotated during the workload; raise max_binlog_size" >&2; exit 1; }
    rm -rf "$work/events"
    cat > "$work/my.toml" <<TOML
[pipeline]
name = "bench-mem"
[source]
type = "mysql"
url = "mysql://root@127.0.0.1:3306/$DB"
tables = ["$DB.bench"]
server_id = 4396
snapshot = "never"
[http]
listen = "off"
$(file_sink)
TOML
    printf '{"pipeline":"bench-mem","position":{"mysql":{"file":"%s","pos":%s}},"position_text":"","updated_at_ms":0}' "$file" "$start" > "$work/cursor.json"
    RUST_LOG=warn timed tm.time "$bin" run --config "$work/my.toml" --stop-at-binlog "$end_file:$end"
    timed ref.time sh -c "mariadb-binlog --read-from-remote-server -h127.0.0.1 -uroot --verbose --start-position=$start --stop-position=$end $file > /dev/null"
    events=$(cat "$work"/events/*.jsonl | wc -l)
    row "mariadb -> file" "$rows" "$run" "$events" "$work/tm.time" "mariadb-binlog -v" "$work/ref.time"
  done
}

# kinesalite checks that a request is signed, not the signature.
kinesis() {
  curl -sf http://127.0.0.1:4567/ -H "X-Amz-Target: Kinesis_20131202.$1" \
    -H 'Content-Type: application/x-amz-json-1.1' -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
    -d "$2"
}

hold_kinesis() { # stops the emulator for HOLD seconds, a second into the run
  local pid
  pid=$(pgrep -f "kinesalite.*4567" | head -1)
  sleep 1
  kill -STOP "$pid"
  sleep "$HOLD"
  kill -CONT "$pid"
}

echo "case                     backlog  run  tidemark                                          reference"
for case in $CASES; do
  case $case in
    pg) for n in $SIZES; do pg_case "postgres -> file" "$n" $(( n / 10000 )) "$SMALL" "$SMALL_ROWS" "$(file_sink)"; done ;;
    mariadb) for n in $SIZES; do mariadb_case "$n"; done ;;
    kinesis)
      n=${SIZES%% *}
      stream="tm-mem-$$"
      kinesis CreateStream "{\"StreamName\":\"$stream\",\"ShardCount\":4}" >/dev/null
      until kinesis DescribeStream "{\"StreamName\":\"$stream\"}" | grep -q '"ACTIVE"'; do sleep 0.2; done
      aws_sink=$(printf '[sink]\ntype = "kinesis"\nstream = "%s"\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:4567"\n[cursor]\ntype = "file"\npath = "%s/cursor.json"\n' "$stream" "$work")
      pg_case "postgres -> kinesis, held ${HOLD}s" "$n" $(( n / 10000 )) "$SMALL" "$SMALL_ROWS" "$aws_sink" hold_kinesis ;;
    onetx) pg_case "postgres, 1 transaction" "$TX_ROWS" "$TX_ROWS" "$SMALL" "$SMALL_ROWS" "$(file_sink)" ;;
    big)
      pg_case "postgres, 2 MB rows" "$BIG_ROWS" 1 "CREATE TABLE bench (id int PRIMARY KEY, payload text NOT NULL); ALTER TABLE bench ALTER payload SET STORAGE EXTERNAL" \
        "INSERT INTO bench SELECT g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 65536) x) FROM generate_series(%d, %d) g" "$(file_sink)" ;;
  esac
done
