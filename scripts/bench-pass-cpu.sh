#!/usr/bin/env bash
# Where a forwarded request's time goes: CPU per request (user and system, from /proc/PID/stat) of the origin
# asked directly and of origin and proxy on the pass-through path, then the proxy's system calls per
# forwarded request (strace -c). Shows how close pass-through is to the kernel's floor (see BENCHMARKS.md).
#
# Usage: scripts/bench-pass-cpu.sh [TARGET]      (default /api/v4/site/config, a JSON API call)
# Needs: a release build, wrk, strace, and the harness's origin ($BENCH_WORK/target/release/bench-origin, built
# by ../shared/bench/setup.sh). Origin and proxy on cpu 0 (as in the harness), wrk -t1 -c64 on cpu 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=${1:-/api/v4/site/config}
WORK=${BENCH_WORK:-/tmp/cloudreve-edge-bench}
ORIGIN_BIN=$WORK/target/release/bench-origin
PROXY_BIN=target/release/cloudreve-edge
for need in "$ORIGIN_BIN" "$PROXY_BIN"; do
  [[ -x $need ]] || { echo "missing $need (see the usage above)" >&2; exit 1; }
done
for tool in wrk strace; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

out=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

taskset -c 0 "$ORIGIN_BIN" --port 18780 --mode origin >/dev/null 2>&1 &
origin=$!
pids+=("$origin")
RUST_LOG=warn taskset -c 0 "$PROXY_BIN" --config proxy.toml --listen 127.0.0.1:18790 \
  --admin-listen 127.0.0.1:18791 --upstream http://127.0.0.1:18780 >/dev/null 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:18790$TARGET" && break
  sleep 0.2
done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }   # utime stime, in clock ticks
measure() {  # label url
  local ou os pu ps ou2 os2 pu2 ps2 requests
  read -r ou os < <(cpu "$origin"); read -r pu ps < <(cpu "$proxy")
  requests=$(taskset -c 1 wrk -t1 -c64 -d10s "$2" | awk '/requests in/ {print $1}')
  read -r ou2 os2 < <(cpu "$origin"); read -r pu2 ps2 < <(cpu "$proxy")
  python3 - "$1" "$requests" "$ticks" "$ou" "$ou2" "$os" "$os2" "$pu" "$pu2" "$ps" "$ps2" <<'PY'
import sys
label, n, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = [int(x) for x in sys.argv[4:]]
us = lambda a, b: (b - a) / ticks / n * 1e6
print(f"{label:9} {n / 10:9.0f} req/s   origin user {us(t[0], t[1]):5.2f} sys {us(t[2], t[3]):5.2f} us/req"
      f"   proxy user {us(t[4], t[5]):5.2f} sys {us(t[6], t[7]):5.2f} us/req")
PY
}
for _ in 1 2; do
  measure direct "http://127.0.0.1:18780$TARGET"
  measure forwarded "http://127.0.0.1:18790$TARGET"
done

# System calls of the proxy per forwarded request (strace slows it; the counts per request are what matter).
timeout -s INT 6 strace -f -c -p "$proxy" -o "$out/strace" >/dev/null 2>&1 &
tracer=$!
sleep 0.5
requests=$(taskset -c 1 wrk -t1 -c64 -d4s "http://127.0.0.1:18790$TARGET" | awk '/requests in/ {print $1}')
wait "$tracer" || true
awk -v n="$requests" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ && $4 / n >= 0.01 {
  printf "%-14s %6.2f per request\n", $NF, $4 / n }' "$out/strace"
