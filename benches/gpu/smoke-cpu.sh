#!/usr/bin/env bash
# Runs benches/gpu/run.sh on the CPU with small sizes, so that every step except CUDA itself is
# exercised before the GPU run: the carried binaries (benches/gpu/build.sh), the PyTorch side,
# the summary. Uses the model bench's Python environment (created when missing).
#
#   benches/gpu/smoke-cpu.sh [OUT]      (default OUT: a new temporary folder)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/benches/model/setup-venv.sh" >&2
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/brspeech-gpu-smoke.XXXXXX")}
export OUT=$out
export PYTHON=${PYTHON:-$root/.deps/model-bench-venv/bin/python}
export GPU_BENCH_DEVICE=cpu GPU_BENCH_BUDGET_S=${GPU_BENCH_BUDGET_S:-1200} GPU_BENCH_LAYERS=2
export GPU_BENCH_BATCHES_BASE=1,2 GPU_BENCH_BATCHES_XLSR=1 GPU_BENCH_EXTRACT_WARMUP=1 GPU_BENCH_EXTRACT_ITERS=1
export GPU_BENCH_FROZEN_BATCHES=2,4 GPU_BENCH_TRAIN_WARMUP=1 GPU_BENCH_TRAIN_ITERS=2 GPU_BENCH_FT_BATCH=2
"$root/benches/gpu/run.sh"
echo "smoke run: $out/summary.md"
# Every step but the ones that need the NVIDIA driver must have passed.
"$PYTHON" - "$out" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(f"{sys.argv[1]}/steps.jsonl")]
bad = [s for s in steps if s["status"] not in ("ok",) and not s["step"].startswith("nvidia-smi")
       and not s["status"].startswith("skipped")]
for s in bad:
    print(f"step {s['step']}: {s['status']}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
