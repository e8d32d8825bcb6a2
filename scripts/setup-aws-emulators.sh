#!/usr/bin/env bash
# Installs and starts the local AWS emulators the tests use, idempotently:
#   kinesalite (Kinesis, port 4567) and dynalite (DynamoDB, port 4568), from npm,
#   into .tools/aws-emulators (not committed). Both keep their data in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.tools/aws-emulators
if [ ! -x "$dir/node_modules/.bin/kinesalite" ] || [ ! -x "$dir/node_modules/.bin/dynalite" ]; then
  mkdir -p "$dir"
  echo "setup-aws-emulators: installing kinesalite and dynalite from npm"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error kinesalite@3 dynalite@3 >/dev/null
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start() { # name, port, command...
  local name=$1 port=$2; shift 2
  if listening "$port"; then return; fi
  nohup "$@" > "$dir/$name.log" 2>&1 &
  for _ in $(seq 1 100); do
    listening "$port" && return
    sleep 0.1
  done
  echo "setup-aws-emulators: $name did not start on port $port; see $dir/$name.log" >&2
  exit 1
}
start kinesalite 4567 "$dir/node_modules/.bin/kinesalite" --port 4567 --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 --shardLimit 1000
start dynalite 4568 "$dir/node_modules/.bin/dynalite" --port 4568 --createTableMs 0 --deleteTableMs 0 --updateTableMs 0
echo "setup-aws-emulators: ready (kinesalite :4567, dynalite :4568)"
