#!/usr/bin/env bash
# Cache hits over HTTP/1.1 and over h2c (prior knowledge), side by side with h2load, in one run.
#
# Usage: scripts/bench-h2.sh [requests-per-run] [rounds]      (defaults: 300000, 3)
#        STREAMS=8 scripts/bench-h2.sh ...   concurrent streams per HTTP/2 connection (default 1; HTTP/1.1
#                                            always has one request at a time per connection)
# Needs: a release build (`cargo build --release`), h2load (Debian nghttp2-client), and the harness's origin
# (`../shared/bench/setup.sh` builds $BENCH_WORK/target/release/bench-origin). Everything listens on
# 127.0.0.1; the proxy and origin are pinned to cpu 0, h2load to cpu 1, as in ../shared/bench/run.sh.
# Prints one line per run and the median req/s per protocol with the h2c/h1 ratio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUESTS=${1:-300000}
ROUNDS=${2:-3}
STREAMS=${STREAMS:-1}
WORK=${BENCH_WORK:-/tmp/cloudreve-edge-bench}
ORIGIN_BIN=$WORK/target/release/bench-origin
PROXY_BIN=target/release/cloudreve-edge
ORIGIN_PORT=18280
PROXY_PORT=18290
URL=http://127.0.0.1:$PROXY_PORT/api/v4/user/avatar/1

for need in "$ORIGIN_BIN" "$PROXY_BIN"; do
  [[ -x $need ]] || { echo "missing $need (see the usage above)" >&2; exit 1; }
done
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 0 "$ORIGIN_BIN" --port $ORIGIN_PORT >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn taskset -c 0 "$PROXY_BIN" --config proxy.toml --listen 127.0.0.1:$PROXY_PORT \
  --admin-listen 127.0.0.1:$((PROXY_PORT + 1)) --upstream http://127.0.0.1:$ORIGIN_PORT >/dev/null 2>&1 &
pids+=($!)

# Ready when the proxy answers (bounded: 100 tries, 20 s at most).
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "$URL" && break
  sleep 0.2
done
curl -fs -o /dev/null "$URL" || { echo "proxy did not come up" >&2; exit 1; }

run() { # protocol-flag label
  local out
  local streams=1
  [[ $2 == h2c ]] && streams=$STREAMS
  out=$(taskset -c 1 h2load $1 -n "$REQUESTS" -c 64 -m "$streams" -t 1 "$URL" 2>&1)
  grep -q " 0 failed" <<<"$out" || { echo "$2: failures" >&2; grep -E "requests:|status codes:" <<<"$out" >&2; exit 1; }
  awk -v label="$2" '/^finished in/ {gsub(",", "", $4); print label, $4}' <<<"$out"
}

# Warm-up, not recorded.
taskset -c 1 h2load --h1 -n 20000 -c 64 -t 1 "$URL" >/dev/null 2>&1
results=()
for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order so drift in the machine's speed does not favour one protocol.
  if (( round % 2 )); then order=("--h1 h1" " h2c"); else order=(" h2c" "--h1 h1"); fi
  for item in "${order[@]}"; do
    line=$(run "${item% *}" "${item##* }")
    echo "round $round: $line req/s"
    results+=("$line")
  done
done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    label, rps = line.split()
    runs.setdefault(label, []).append(float(rps))
h1, h2 = statistics.median(runs["h1"]), statistics.median(runs["h2c"])
print(f"median h1 {h1:.0f} req/s, h2c {h2:.0f} req/s, h2c/h1 {h2 / h1:.2f}")
'
