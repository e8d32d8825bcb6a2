#!/usr/bin/env bash
# The Python venv of the differential decoders (tests/differential/), idempotently:
# .tools/venv with pinned versions of python-mysql-replication (PyPI
# mysql-replication, and the PyMySQL it runs on) and psycopg 3 with its binary
# libpq. Re-running is fast: nothing is installed when the venv already holds
# exactly these versions. Needs CPython >= 3.10 (psycopg 3.3) with pip, and PyPI.
# PYTHON picks the interpreter (default python3). The last line says what is ready.
#
#   .tools/venv/bin/python tests/differential/pg_test_decoding.py --dsn ... --slot ...
#   .tools/venv/bin/python tests/differential/mysql_binlog.py --host ... --log-file ...
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/venv
python=${PYTHON:-python3}
# The whole dependency closure is pinned, so two machines get the same code.
pins=(
  mysql-replication==1.0.17
  PyMySQL==1.2.4
  packaging==26.4
  psycopg==3.3.9
  psycopg-binary==3.3.9
  typing_extensions==4.16.0
)

# Exit 0 when the venv's interpreter runs and every pin is installed at exactly its version.
pins_installed() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

if ! pins_installed; then
  command -v "$python" >/dev/null || { echo "setup-python-tools: $python not found (set PYTHON)" >&2; exit 1; }
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { echo "setup-python-tools: $python is older than 3.10 (psycopg 3.3 needs 3.10+)" >&2; exit 1; }
  # A venv whose interpreter no longer runs (the base Python moved) is rebuilt.
  if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    mkdir -p .tools
    # Debian's python3 lacks ensurepip without python3-venv: then the venv is made
    # without pip and the base interpreter's pip installs into it (pip >= 22.3).
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      "$python" -m venv --without-pip "$venv"
    fi
  fi
  if [ -x "$venv/bin/pip" ]; then
    pip=("$venv/bin/pip")
  else
    pip=("$python" -m pip --python "$venv/bin/python")
  fi
  echo "setup-python-tools: installing ${pins[*]} into $venv" >&2
  "${pip[@]}" install --quiet --disable-pip-version-check --no-input "${pins[@]}"
  pins_installed || { echo "setup-python-tools: $venv still lacks one of ${pins[*]}" >&2; exit 1; }
fi
echo "setup-python-tools: ready ($venv: ${pins[*]})" >&2
