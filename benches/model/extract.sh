#!/usr/bin/env bash
# Feature-extraction throughput (clips/s, 64,600-sample clips, random weights): the brspeech
# Extractor against Hugging Face transformers on the same device, same batch, same dtype.
#
#   benches/model/extract.sh DEVICE DTYPE BATCHES ITERS [base|xlsr]
#   e.g. benches/model/extract.sh cuda bf16 16,32,64 20 xlsr
#
# BATCHES: one batch size or a comma-separated sweep; ITERS: timed batches per size (after 2
# untimed ones). Each side prints one JSON line per batch size. benches/gpu/run.sh runs the
# same measurement with the same weights on both sides and a cross-check of the features.
#
# BENCH_BIN: a prebuilt `model` bench binary (machines without cargo); PYTHON: a python with
# torch 2.11 and transformers (default: .deps/model-bench-venv, created when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=${1:?DEVICE}; dtype=${2:?DTYPE}; batches=${3:?BATCHES}; iters=${4:?ITERS}; layout=${5:-base}
if [ -z "${PYTHON:-}" ]; then
  "$here/setup-venv.sh" >&2
  PYTHON="$root/.deps/model-bench-venv/bin/python"
fi
if [ -z "${BENCH_BIN:-}" ]; then
  BENCH_BIN=$(cd "$root" && cargo bench --bench model --no-run --message-format=json \
    | "$PYTHON" -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="model" and m.get("executable")][-1])')
fi
"$BENCH_BIN" extract --device "$device" --dtype "$dtype" --batches "$batches" --iters "$iters" --model "$layout"
"$PYTHON" "$here/bench_torch.py" extract --device "$device" --dtypes "$dtype" --models "$layout" \
  "--batches-$layout" "$batches" --iters "$iters"
