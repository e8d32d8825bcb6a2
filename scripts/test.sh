#!/usr/bin/env bash
# The whole test suite, from a fresh machine: sets up PostgreSQL for logical
# decoding (idempotent), then checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-postgres.sh
bash scripts/setup-mariadb.sh
bash scripts/setup-aws-emulators.sh
# The unit files are checked with `systemd-analyze verify`.
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
