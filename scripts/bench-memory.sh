#!/usr/bin/env bash
# Resident memory of 100 000 cached 4 KiB avatars (issue #6's memory target), on loopback.
#
# Usage: scripts/bench-memory.sh [ids]        (default 100000)
#        SIZE=30000 scripts/bench-memory.sh 20000   avatars of another size, served by nginx from one file
#                                                   (bodies above 8 KiB arrive in several reads)
# Needs: a release build, wrk, and the harness's origin ($BENCH_WORK/target/release/bench-origin, built by
# ../shared/bench/setup.sh), whose avatars are 4 196 bytes. The proxy runs the checked-in proxy.toml with a
# 4 GiB cache, pinned to cpu 0 (one worker, as in the harness); wrk (cpu 1) asks for each id once in sequence,
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
BODY=${SIZE:-4196}
for need in "$PROXY_BIN" "$ROTATE"; do
  [[ -e $need ]] || { echo "missing $need (see the usage above)" >&2; exit 1; }
done

work=$(mktemp -d)
config=$work/proxy.toml
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
sed 's/^capacity = .*/capacity = "4 GiB"/' proxy.toml >"$config"

if [[ -z ${SIZE:-} ]]; then
  [[ -x $ORIGIN_BIN ]] || { echo "missing $ORIGIN_BIN (see the usage above)" >&2; exit 1; }
  taskset -c 0 "$ORIGIN_BIN" --port 18380 >/dev/null 2>&1 &
else
  head -c "$SIZE" /dev/urandom >"$work/avatar.png"
  chmod 755 "$work" && chmod 644 "$work/avatar.png" # nginx's workers run as another user
  mkdir -p "$work/logs"
  cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/logs/error.log;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18380;
    location /api/v4/user/avatar/ {
      default_type image/png;
      add_header Cache-Control "public, max-age=86400";
      root $work;
      try_files /avatar.png =404;
    }
    location / { return 200 "ok"; }
  }
}
CONF
  taskset -c 0 nginx -p "$work" -c "$work/nginx.conf" &
fi
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
