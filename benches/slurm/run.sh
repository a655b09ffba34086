#!/usr/bin/env bash
# Slurm executor benchmark (docs/BENCHMARKS.md, "Slurm executor"): starts a private single-node
# Slurm (tools/slurm/start.sh, own folder and ports, 8 advertised CPUs so 8 tasks sleep at once
# on a small machine), runs benches/slurm/bench.py, stops the cluster. Needs root or a user
# that may start the daemons, and `apt-get install slurm-wlm munge` (Debian 12).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${BRSPEECH_BIN:-$root/target/release/brspeech}"
[ -x "$bin" ] || { echo "error: $bin not built (run make build)" >&2; exit 1; }
export SLURM_BASE="${SLURM_BASE:-/tmp/brspeech-slurm-bench}"
export SLURM_CTLD_PORT="${SLURM_CTLD_PORT:-6837}" SLURM_D_PORT="${SLURM_D_PORT:-6838}"
export SLURM_CPUS="${SLURM_CPUS:-8}"
"$root/tools/slurm/start.sh"
trap '"$root/tools/slurm/stop.sh" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
. "$SLURM_BASE/env.sh"
mkdir -p "$root/target/bench"
python3 "$root/benches/slurm/bench.py" --brspeech "$bin" --slots "$SLURM_CPUS" \
  --work "${BENCH_WORK:-$root/target/bench/slurm-work}" --out "$root/target/bench/slurm.md" "$@"
