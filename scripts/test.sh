#!/usr/bin/env bash
# The whole test suite, from a fresh machine: sets up PostgreSQL for logical
# decoding (idempotent), then checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-postgres.sh
bash scripts/setup-mariadb.sh
bash scripts/setup-aws-emulators.sh
# The independent decoders of the differential type tests (tests/differential):
# python-mysql-replication and psycopg, pinned, in .tools/venv.
bash scripts/setup-python-tools.sh
# The unit files are checked with `systemd-analyze verify`.
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The module graph (no import cycle between sibling modules, derived from the
# crate paths in the code), files under 800 lines, functions under 80.
python3 scripts/architecture.py
cargo test --workspace --all-targets --locked

# The randomized crash harness (tests/torture), on a short budget: its own
# PostgreSQL and MariaDB, SIGKILLs and server restarts, judged against the
# sources' audit history. The seed comes from the commit and is printed first,
# so a failure replays with `scripts/torture.sh --seed S`; the script runs as
# long as asked (`--minutes N`).
seed=$((16#$(git rev-parse --short=7 HEAD 2>/dev/null || echo 0)))
bash scripts/torture.sh --minutes 2 --seed "$seed"
