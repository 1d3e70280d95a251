#!/usr/bin/env bash
# Start-up time: from `hestia serve` (no flags, a fresh directory: SQLite created and migrated,
# development CA and certificate generated, signing keys created) to the first 200 from
# /health/ready over TLS, trusting the generated CA. Usage: bench/startup.sh [BINARY] [ROUNDS]
# (default: $CARGO_TARGET_DIR/debug/hestia or target/debug/hestia, 5 rounds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/hestia}
bin=$(realpath "$bin")
rounds=${2:-5}
for i in $(seq "$rounds"); do
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  start=$(date +%s%N)
  (cd "$dir" && exec "$bin" serve --listen "127.0.0.1:$port" >/dev/null 2>&1) &
  pid=$!
  until [ -f "$dir/hestia-data/tls/ca.pem" ] \
    && curl -fs --cacert "$dir/hestia-data/tls/ca.pem" "https://localhost:$port/health/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "hestia serve exited; run it by hand in $dir to see why" >&2; exit 1; }
    sleep 0.01
  done
  end=$(date +%s%N)
  echo "round $i: ready in $(( (end - start) / 1000000 )) ms"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
