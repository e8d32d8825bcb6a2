#!/usr/bin/env bash
# Randomized crash harness ("torture") for tidemark; see tests/torture/torture.py.
#
#   scripts/torture.sh --minutes N --seed S [--engine pg|mariadb|both]
#                      [--sink file|kinesis|both] [--bin PATH] [--runs K]
#                      [--run-seconds SECONDS] [--catchup-timeout SECONDS]
#                      [--max-rows-per-second N] [--blocked-shutdown fail|warn]
#                      [--no-keep] [--verbose]
#
# (--runs K instead of --minutes; without either, a 2-minute budget; without
# --seed, a random one, printed first.)
#
# Besides the kills and server restarts of every run, the seed picks two
# variations: a stream-only start (snapshot = "never", stopped before any write,
# writes while it is down; every seed divisible by 3) and, in every MariaDB run
# with the file sink, a cursor reset mid-workload after RESET MASTER on the
# harness's own server (a new snapshot, positions starting over). The run's
# headline names them (start=never(...), cursor_reset@Ns).
#
# Idempotent setup: a Python venv with boto3 under .tools/torture-venv (for
# reading Kinesis and DynamoDB back) and, for Kinesis runs, the AWS emulators
# (scripts/setup-aws-emulators.sh). The harness starts its own PostgreSQL
# (127.0.0.1:5441) and MariaDB (127.0.0.1:3311) under /tmp/tidemark-torture
# (TORTURE_DIR), never the shared servers. Default binary: target/debug/tidemark
# (this script does not build it). The last line is "torture: N passed, M failed";
# the exit status is non-zero when a run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

sink=both
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --sink) sink=${args[$((i + 1))]:-both} ;;
    --sink=*) sink=${args[$i]#--sink=} ;;
  esac
done

for tool in psql mariadb mariadb-install-db /usr/lib/postgresql/15/bin/initdb; do
  command -v "$tool" >/dev/null || { echo "torture: $tool is missing (install postgresql-15 and mariadb-server)" >&2; exit 1; }
done

python=python3
if [ "$sink" != file ]; then
  venv=.tools/torture-venv
  if ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
    echo "torture: installing boto3 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check boto3
  fi
  python=$venv/bin/python
  bash scripts/setup-aws-emulators.sh >&2
fi
exec "$python" -B -u tests/torture/torture.py "$@"
