#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 seconds, every target)
#
# With a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`), each target runs under libFuzzer
# (coverage-guided) for SECONDS_PER_TARGET, one worker, niced; its corpus is kept in fuzz/corpus/<target>
# and any crash in fuzz/artifacts/<target>. Without them it falls back to the seeded random run on stable
# (tests/integration/hostile/fuzz.rs, the same properties), sized to roughly the same time. Exits non-zero on a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(route_classify nocache_parse cache_policy_admit framing_scanner jwt_sub)
fi

if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
  for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "== cargo fuzz run $target for ${seconds}s"
    (cd fuzz && nice -n 19 cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 -max_len=4096)
  done
else
  echo "no nightly toolchain or cargo-fuzz: running the seeded properties on stable instead" >&2
  # About 40k inputs a second per target in a debug build.
  FUZZ_ITERATIONS=$((seconds * 40000)) cargo test --test integration hostile::fuzz:: -- --test-threads=1
fi
