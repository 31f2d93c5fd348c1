#!/usr/bin/env bash
# Instructions per request of one path through the proxy, counted by callgrind (stable on a noisy machine).
#
# Usage: scripts/bench-callgrind.sh TARGET [SECONDS]      e.g. /api/v4/user/avatar/1 (hit), /api/v4/site/config (pass)
#        CONFIG=other.toml ...     another configuration (e.g. express_lane = false for hits through hyper)
#        WRKARGS="-s scripts/browser.lua"  extra wrk arguments (a browser's request head)
#        RUST_LOG=info ...          the access log on (the default config's level), to stderr redirected to a
#                                   file; the default here is RUST_LOG=warn, which filters it out
# Needs: valgrind, wrk, and the harness's origin ($BENCH_WORK/target/release/bench-origin). Builds a profiling
# binary (thin LTO, line tables) into target/callgrind. The proxy runs under valgrind pinned to cpu 0 (one
# worker), wrk -t1 -c4 on cpu 1; prints total instructions / requests wrk completed (start-up included, < 1 %).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=${1:?usage: scripts/bench-callgrind.sh TARGET [SECONDS]}
SECS=${2:-8}
CONFIG=${CONFIG:-proxy.toml}
WORK=${BENCH_WORK:-/tmp/cloudreve-edge-bench}
ORIGIN_BIN=$WORK/target/release/bench-origin
[[ -x $ORIGIN_BIN ]] || { echo "missing $ORIGIN_BIN (../shared/bench/setup.sh builds it)" >&2; exit 1; }
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_LTO=thin CARGO_TARGET_DIR=target/callgrind \
  cargo build --release --bin cloudreve-edge
out=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

taskset -c 1 "$ORIGIN_BIN" --port 18480 >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=${RUST_LOG:-warn} taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
  target/callgrind/release/cloudreve-edge --config "$CONFIG" --listen 127.0.0.1:18490 \
  --admin-listen 127.0.0.1:18491 --upstream http://127.0.0.1:18480 >"$out/proxy.log" 2>&1 &
proxy=$!
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:18490$TARGET" && break
  sleep 0.2
done
# shellcheck disable=SC2086
requests=$(taskset -c 1 wrk ${WRKARGS:-} -t1 -c4 -d"${SECS}s" "http://127.0.0.1:18490$TARGET" | awk '/requests in/ {print $1}')
kill -INT "$proxy"
wait "$proxy" 2>/dev/null || true
total=$(callgrind_annotate "$out/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
lines=$(grep -c ' access: ' "$out/proxy.log" || true)
echo "$TARGET: requests=$requests instructions=$total per request=$((total / (requests + 1))) access lines=$lines"
