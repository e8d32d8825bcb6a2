#!/usr/bin/env bash
# Runs tidemark on its embedded defaults against the local PostgreSQL: sets up
# wal_level=logical, a `shop` database with two tables, starts the daemon with
# config/demo.toml, writes a change every second, and shows the events as the
# file sink writes them. Ctrl-C stops it (the daemon drains and commits its
# cursor; run again and it resumes). DEMO_SECONDS=N stops it after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup-postgres.sh
psql_() { psql -X -q -h 127.0.0.1 -U postgres "$@"; }
if [ -z "$(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'shop'")" ]; then
  psql_ -d postgres -c "CREATE DATABASE shop"
fi
psql_ -d shop <<'SQL'
CREATE TABLE IF NOT EXISTS customers (id bigserial PRIMARY KEY, email text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2) NOT NULL, items jsonb, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO customers (email, balance) SELECT 'seed' || g || '@example.com', g FROM generate_series(1, 3) g WHERE NOT EXISTS (SELECT 1 FROM customers);
SQL

cargo build --release --locked --quiet
mkdir -p .tidemark-demo && cd .tidemark-demo
"$root/target/release/tidemark" run --config "$root/config/demo.toml" &
daemon=$!
writer() {
  local i=0
  while sleep 1; do
    i=$((i + 1))
    psql_ -d shop -c "BEGIN; INSERT INTO customers (email, balance) VALUES ('demo$i@example.com', $i); INSERT INTO orders (customer_id, total, items) VALUES (currval('customers_id_seq'), $i.50, '[{\"sku\": \"A$i\"}]'); UPDATE customers SET balance = balance + 1 WHERE id = 1; COMMIT;" || true
  done
}
writer &
writer_pid=$!
stop() {
  kill "$writer_pid" 2>/dev/null || true
  kill -TERM "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  kill "$tail_pid" 2>/dev/null || true
  echo "demo stopped; cursor: $(cat tidemark-state/cursor.json 2>/dev/null | tr -d '\n ')"
}
trap stop EXIT
trap 'exit 0' INT TERM
mkdir -p tidemark-state/events
tail -n +1 -F tidemark-state/events/events-0000000001.jsonl 2>/dev/null &
tail_pid=$!
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait "$daemon"; fi
