#!/usr/bin/env bash
# Resident memory of 100 000 cached 4 KiB avatars (issue #6's memory target), on loopback.
#
# Usage: scripts/bench-memory.sh [ids]        (default 100000)
# Needs: a release build, wrk, and the harness's origin ($BENCH_WORK/target/release/bench-origin, built by
# ../shared/bench/setup.sh), whose avatars are 4 196 bytes. The proxy runs the checked-in proxy.toml with a
# 1 GiB cache, pinned to cpu 0 (one worker, as in the harness); wrk (cpu 1) asks for each id once in sequence,
# then keeps rotating over them for the rest of 40 s. Prints the proxy's RSS before and after, the cache's
# /stats, the RSS growth per avatar and against the payload, and the cache's own count of bytes per entry
# beside it (what `cache.capacity` bounds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IDS=${1:-100000}
WORK=${BENCH_WORK:-/tmp/cloudreve-edge-bench}
ORIGIN_BIN=$WORK/target/release/bench-origin
PROXY_BIN=target/release/cloudreve-edge
ROTATE=../shared/bench/lua/rotate.lua
BODY=4196
for need in "$ORIGIN_BIN" "$PROXY_BIN" "$ROTATE"; do
  [[ -e $need ]] || { echo "missing $need (see the usage above)" >&2; exit 1; }
done

config=$(mktemp)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$config"; }
trap cleanup EXIT
sed 's/^capacity = .*/capacity = "1 GiB"/' proxy.toml >"$config"

taskset -c 0 "$ORIGIN_BIN" --port 18380 >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn taskset -c 0 "$PROXY_BIN" --config "$config" --listen 127.0.0.1:18390 \
  --admin-listen 127.0.0.1:18391 --upstream http://127.0.0.1:18380 >/dev/null 2>&1 &
proxy=$!
pids+=($proxy)
for _ in $(seq 1 100); do
  curl -fs -o /dev/null http://127.0.0.1:18390/api/v4/site/ping && break
  sleep 0.2
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$proxy/status"; }
before=$(rss)
taskset -c 1 wrk -t1 -c4 -d40s -s "$ROTATE" http://127.0.0.1:18390 -- /api/v4/user/avatar/ "$IDS" "" 1 seq \
  | grep -E "requests in" || true
stats=$(curl -fs http://127.0.0.1:18391/stats)
echo "$stats"
after=$(rss)
python3 - "$before" "$after" "$IDS" "$BODY" "$stats" <<'PY'
import json, sys
before, after, ids, body = (int(x) for x in sys.argv[1:5])
stats = json.loads(sys.argv[5])
grown = (after - before) * 1024
print(f"RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB: {grown / ids:.0f} B per avatar, "
      f"{grown / (ids * body):.2f}x the payload")
print(f"the cache's own count: {stats['bytes'] / max(stats['entries'], 1):.0f} B per entry "
      f"({stats['bytes'] / max(grown, 1):.3f} of the RSS growth; cache.capacity bounds this count)")
PY
