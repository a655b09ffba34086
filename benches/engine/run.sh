#!/usr/bin/env bash
# Engine benchmark (docs/BENCHMARKS.md, "Engine"): no-op `status` and `run` of brspeech over a
# dep of 10,000 and 100,000 files, cold (no stat cache) and warm, next to `dvc status` on the
# same files. Idempotent: DVC goes into .deps/engine-bench-venv once.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.deps/engine-bench-venv"
if [ ! -x "$venv/bin/dvc" ]; then
  echo "installing dvc into $venv (one time) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check dvc
fi
bin="${BRSPEECH_BIN:-$root/target/release/brspeech}"
[ -x "$bin" ] || { echo "error: $bin not built (run make build)" >&2; exit 1; }
bin=$(realpath "$bin")
mkdir -p "$root/target/bench"
exec "$venv/bin/python3" "$root/benches/engine/bench.py" --brspeech "$bin" --dvc "$venv/bin/dvc" \
  --work "${BENCH_WORK:-$root/target/bench/engine-work}" --out "$root/target/bench/engine.md" "$@"
