#!/usr/bin/env bash
# Scan benchmark (docs/BENCHMARKS.md, "Audio" > "Scan"): `scan_corpus` over 450,000 generated
# small files, cold (no cache) and warm (no-op run, and a forced rescan with the stat cache
# warm), next to the bare `stat` floor (`find -printf %s`) over the same files; then the corpus
# stages end to end (scan -> metadata -> chunk) on a small generated WAV corpus. Needs python3
# (standard library only). Results: target/bench/scan.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${BRSPEECH_BIN:-$root/target/release/brspeech}"
[ -x "$bin" ] || { echo "error: $bin not built (run make build)" >&2; exit 1; }
bin=$(realpath "$bin")
mkdir -p "$root/target/bench"
exec python3 "$root/benches/scan/bench.py" --brspeech "$bin" \
  --work "${BENCH_WORK:-$root/target/bench/scan-work}" --out "$root/target/bench/scan.md" "$@"
