#!/usr/bin/env bash
# Benchmark: the Kinesis sink against the file sink on the same PostgreSQL WAL
# backlog. Two slots are created at the same point; ROWS row inserts (in
# transactions of 100) are written; then tidemark reads the backlog once into
# the file sink and once into the Kinesis emulator (kinesalite, a stream of 4
# shards), both with a local cursor file, and stops at the backlog's end LSN.
# Prints events/s for each, the mean records per PutRecords call, and peak RSS.
# The emulator's own speed bounds the Kinesis figure; the file-sink run shows
# what the rest of the pipeline costs. Not a test: no assertions, just figures.
#
#   bash benches/kinesis.sh            # ROWS=50000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ROWS=${ROWS:-50000}
DB=tm_bench_kinesis
STREAM=tm-bench
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

bash scripts/setup-postgres.sh
bash scripts/setup-aws-emulators.sh
cargo build --release --locked --quiet
bin="$root/target/release/tidemark"
psql_() { psql -X -q -t -A -h 127.0.0.1 -U postgres "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# kinesalite checks that a request is signed, not the signature.
kinesis() {
  curl -sf http://127.0.0.1:4567/ -H "X-Amz-Target: Kinesis_20131202.$1" \
    -H 'Content-Type: application/x-amz-json-1.1' -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
    -d "$2"
}
kinesis DeleteStream "{\"StreamName\":\"$STREAM\"}" >/dev/null || true
until ! kinesis DescribeStream "{\"StreamName\":\"$STREAM\"}" >/dev/null; do sleep 0.2; done
kinesis CreateStream "{\"StreamName\":\"$STREAM\",\"ShardCount\":4}" >/dev/null
until kinesis DescribeStream "{\"StreamName\":\"$STREAM\"}" | grep -q '"ACTIVE"'; do sleep 0.2; done

psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
psql_ -d $DB -c "CREATE TABLE bench (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())" \
             -c "CREATE PUBLICATION tm_bench FOR TABLE bench"
for slot in tm_bench_file tm_bench_kinesis; do
  psql_ -d $DB -c "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
awk -v rows="$ROWS" -v per=100 'BEGIN {
  for (s = 1; s <= rows; s += per) {
    e = s + per - 1; if (e > rows) e = rows;
    printf "INSERT INTO bench (id, name, qty, price) SELECT g, %s || g, g %% 100, (g %% 1000) / 10.0 FROM generate_series(%d, %d) g;\n", "'\''item-'\''", s, e
  }
}' > "$work/load.sql"
psql_ -d $DB -f "$work/load.sql" >/dev/null
end=$(psql_ -d $DB -c "SELECT pg_current_wal_lsn()")

run_case() {
  local label=$1 slot=$2 sink=$3
  cat > "$work/$label.toml" <<TOML
[pipeline]
name = "bench-$label"
[source]
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$DB"
tables = ["public.bench"]
slot = "$slot"
publication = "tm_bench"
snapshot = "never"
$sink
[cursor]
type = "file"
path = "$work/$label.cursor.json"
TOML
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:4567 RUST_LOG=info \
    /usr/bin/time -f "%e %M" -o "$work/$label.time" \
    "$bin" run --config "$work/$label.toml" --stop-at-lsn "$end" 2> "$work/$label.log"
  local seconds kb events per_call
  read -r seconds kb < "$work/$label.time"
  events=$(grep -o 'stopped: [0-9]* events' "$work/$label.log" | grep -o '[0-9]*')
  per_call=$(grep -o '([0-9.]* per call)' "$work/$label.log" | tr -d '()' || true)
  awk -v label="$label" -v ev="$events" -v s="$seconds" -v kb="$kb" -v pc="${per_call:-n/a}" 'BEGIN {
    printf "%-8s %8d events in %6.2fs = %8.0f ev/s | peak RSS %5.1f MB | records per call: %s\n",
      label, ev, s, ev / (s > 0 ? s : 0.001), kb / 1024, pc
  }'
}

echo "WAL of $ROWS row inserts (transactions of 100 rows), same backlog for both sinks"
run_case file tm_bench_file "[sink]
type = \"file\"
path = \"$work/events\""
run_case kinesis tm_bench_kinesis "[sink]
type = \"kinesis\"
stream = \"$STREAM\""
