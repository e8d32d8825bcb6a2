# Sourced by benches/apply.sh and benches/history.sh: `capture_changes NAME`
# makes database NAME (a fresh one) with the bench table, writes ROWS changes
# (inserts of ROWS/2 rows, then one update per row, in transactions of 100)
# and captures them with tidemark into the file sink in $work/events, with
# the config in $work/capture.toml (slot and publication NAME). Sets
# `events` to the number captured. Needs $bin, $PG, $work, $ROWS, psql_,
# fresh_pg and $TABLE from the caller.
capture_changes() {
  local db=$1 end half
  fresh_pg "$db"
  psql_ -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$db'" >/dev/null
  psql_ -d "$db" -c "$TABLE"
  cat > "$work/capture.toml" <<TOML
[pipeline]
name = "$db"
max_batch_events = 5000
[source]
type = "postgres"
url = "$PG/$db"
tables = ["public.bench"]
slot = "$db"
publication = "$db"
snapshot = "never"
heartbeat_interval = "off"
[sink]
type = "file"
path = "$work/events"
[cursor]
type = "file"
path = "$work/cursor.json"
[http]
listen = "off"
TOML
  psql_ -d "$db" -c "CREATE PUBLICATION $db FOR TABLE bench" \
    -c "SELECT pg_create_logical_replication_slot('$db', 'pgoutput')" >/dev/null
  half=$((ROWS / 2))
  awk -v rows="$half" -v per=100 'BEGIN {
    for (s = 1; s <= rows; s += per) { e = s + per - 1; if (e > rows) e = rows;
      printf "INSERT INTO bench (id, name, qty, price) SELECT g, %s || g, g %% 100, (g %% 1000) / 10.0 FROM generate_series(%d, %d) g;\n", "'\''item-'\''", s, e }
    for (s = 1; s <= rows; s += per) { e = s + per - 1; if (e > rows) e = rows;
      printf "UPDATE bench SET qty = qty + 1, name = name || %s WHERE id BETWEEN %d AND %d;\n", "'\''+'\''", s, e }
  }' > "$work/load.sql"
  psql_ -d "$db" -f "$work/load.sql" >/dev/null
  end=$(psql_ -d "$db" -c "SELECT pg_current_wal_lsn()")
  "$bin" run --config "$work/capture.toml" --stop-at-lsn "$end" 2>/dev/null
  events=$(cat "$work"/events/*.jsonl | wc -l)
}
