#!/usr/bin/env bash
# A bounded soak of the proxy binary against a fake Cloudreve on loopback.
#
#   scripts/soak.sh [SECONDS]        (default 600)
#
# Builds the proxy and the soak driver (examples/soak.rs; SOAK_PROFILE=release by default, `dev` builds
# faster), then runs a mix of avatar hits and misses, 512 KiB uploads, 4 MiB downloads, abandoned downloads
# and hostile requests (CL+TE, bare LF, bad chunk, CONNECT, oversized head) from 16 clients for SECONDS.
# Prints the proxy process's resident memory and open file descriptors at the start, every 30 s, and at the
# end; exits non-zero if a well-formed request failed, a hostile one was not refused, or descriptors leaked.
# The proxy runs with a 32 MiB cache so the misses fill it and the plateau shows. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-600}"
profile="${SOAK_PROFILE:-release}"
cargo build --profile "$profile" --bin cloudreve-edge --example soak
dir="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
exec "$dir/examples/soak" "$dir/cloudreve-edge" "$seconds"
