#!/usr/bin/env bash
# The GPU run: parity on CUDA, extraction and training throughput against PyTorch on the same
# card, the CLI's runtime report and the demo pipeline, in one script of about 6 minutes.
#
#   OUT=/some/folder benches/gpu/run.sh          (from the repository root of the GPU machine)
#
# Needs the carry folder built by benches/gpu/build.sh (.gpu-carry/bin/{brspeech,model-bench,
# model_parity}) and a python3 with torch 2.11 and transformers. No Rust toolchain, no network.
# Every result lands under $OUT: raw/<step>.out (JSON lines), logs/<step>.log, steps.jsonl (one
# line per step: status, seconds), results.json and summary.md (rewritten after every step, so
# a run cut short still leaves a summary). A failed step is recorded and the run goes on; a
# step is skipped when the time budget left is below what it needs.
#
# Knobs (environment; the defaults are the GPU run; benches/gpu/smoke-cpu.sh sets small CPU ones):
#   GPU_BENCH_DEVICE=cuda          cpu: run every code path on the CPU
#   GPU_BENCH_BUDGET_S=330         wall-clock budget of the whole script, seconds
#   GPU_BENCH_LAYERS=              2: shrink both SSL models' transformer depth
#   GPU_BENCH_SAMPLES=64600        samples per clip
#   GPU_BENCH_BATCHES_BASE=16,32,64,128   GPU_BENCH_BATCHES_XLSR=16,32,64
#   GPU_BENCH_EXTRACT_WARMUP=2     GPU_BENCH_EXTRACT_ITERS=10
#   GPU_BENCH_FROZEN_DIMS=1024,768 GPU_BENCH_FROZEN_BATCHES=4,64
#   GPU_BENCH_TRAIN_WARMUP=5       GPU_BENCH_TRAIN_ITERS=30  (timed steps per training run)
#   GPU_BENCH_FT_BATCH=4
#   GPU_BENCH_SKIP=                space-separated step names to skip
#   GPU_CARRY=.gpu-carry  PYTHON=python3  GPU_DEMO_PIPELINE=pipelines/demo.yaml
#   GPU_BENCH_BUNDLE=1             pack every result into results.tgz (beside summary.md)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT/raw" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

CARRY=${GPU_CARRY:-$root/.gpu-carry}
BIN=$CARRY/bin/brspeech
BENCH=$CARRY/bin/model-bench
PARITY=$CARRY/bin/model_parity
PYTHON=${PYTHON:-python3}
DEVICE=${GPU_BENCH_DEVICE:-cuda}
BUDGET=${GPU_BENCH_BUDGET_S:-330}
LAYERS=${GPU_BENCH_LAYERS:-}
SAMPLES=${GPU_BENCH_SAMPLES:-64600}
BATCHES_BASE=${GPU_BENCH_BATCHES_BASE:-16,32,64,128}
BATCHES_XLSR=${GPU_BENCH_BATCHES_XLSR:-16,32,64}
EX_WARMUP=${GPU_BENCH_EXTRACT_WARMUP:-2}
EX_ITERS=${GPU_BENCH_EXTRACT_ITERS:-10}
FROZEN_DIMS=${GPU_BENCH_FROZEN_DIMS:-1024,768}
FROZEN_BATCHES=${GPU_BENCH_FROZEN_BATCHES:-4,64}
TR_WARMUP=${GPU_BENCH_TRAIN_WARMUP:-5}
TR_ITERS=${GPU_BENCH_TRAIN_ITERS:-30}
FT_BATCH=${GPU_BENCH_FT_BATCH:-4}
SKIP=" ${GPU_BENCH_SKIP:-} "
PY_BENCH=benches/model/bench_torch.py
# No network there: transformers must not try the Hub (a local folder is all it loads).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/brspeech-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
layers_arg=()
[ -n "$LAYERS" ] && layers_arg=(--layers "$LAYERS")

say() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

summarize() {
  "$PYTHON" benches/gpu/summarize.py "$OUT" > /dev/null 2>> "$OUT/logs/summarize.log" \
    || say "summary: failed (logs/summarize.log)"
}

# step NAME LIMIT_S NEED_S CMD...: runs CMD under `timeout` (the smaller of LIMIT_S and the
# budget left), stdout to raw/NAME.out, stderr to logs/NAME.log, and records the outcome.
step() {
  local name=$1 limit=$2 need=$3
  shift 3
  local left=$((BUDGET - SECONDS)) status rc t0
  if [[ "$SKIP" == *" $name "* ]]; then
    status=skipped rc=0
    say "$name: skipped (GPU_BENCH_SKIP)"
    printf '{"step":"%s","status":"%s","rc":null,"seconds":0,"limit_s":%d}\n' "$name" "$status" "$limit" >> "$OUT/steps.jsonl"
    return 0
  fi
  if ((left < need)); then
    say "$name: skipped, ${left}s of the budget left (needs ${need}s)"
    printf '{"step":"%s","status":"skipped (budget)","rc":null,"seconds":0,"limit_s":%d}\n' "$name" "$limit" >> "$OUT/steps.jsonl"
    return 0
  fi
  ((limit > left)) && limit=$left
  say "$name: start (limit ${limit}s)"
  t0=$SECONDS
  timeout -k 5 "$limit" "$@" > "$OUT/raw/$name.out" 2> "$OUT/logs/$name.log"
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  say "$name: $status (rc $rc) in $((SECONDS - t0))s"
  if [ "$status" != ok ]; then
    tail -n 5 "$OUT/logs/$name.log" | sed 's/^/    /'
  fi
  printf '{"step":"%s","status":"%s","rc":%d,"seconds":%d,"limit_s":%d}\n' "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit" >> "$OUT/steps.jsonl"
  summarize
  return 0
}

: > "$OUT/steps.jsonl"
say "GPU run: device $DEVICE, budget ${BUDGET}s, results in $OUT"
if ! TORCH_DIR=$("$PYTHON" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2> "$OUT/logs/torch-dir.log"); then
  say "error: $PYTHON cannot import torch (logs/torch-dir.log); the Rust binaries need its libraries"
  exit 1
fi
TORCH_LIB=$TORCH_DIR/lib
# The Rust binaries find this machine's libtorch through LD_LIBRARY_PATH (their RUNPATH names
# the build machine's); the nvidia libraries are found through torch's own RUNPATH.
rs=(env "LD_LIBRARY_PATH=$TORCH_LIB")
say "torch: $TORCH_DIR"
for b in "$BIN" "$BENCH" "$PARITY"; do
  [ -x "$b" ] || say "warning: $b is missing (run benches/gpu/build.sh and carry .gpu-carry)"
done
cp "$CARRY/build.json" "$OUT/raw/build.json" 2> /dev/null || true
printf '{"kind":"run_config","device":"%s","budget_s":%d,"layers":"%s","samples":%d,"batches_base":"%s","batches_xlsr":"%s","extract_warmup":%d,"extract_iters":%d,"frozen_dims":"%s","frozen_batches":"%s","train_warmup":%d,"train_iters":%d,"finetune_batch":%d,"started":"%s"}\n' \
  "$DEVICE" "$BUDGET" "$LAYERS" "$SAMPLES" "$BATCHES_BASE" "$BATCHES_XLSR" "$EX_WARMUP" "$EX_ITERS" "$FROZEN_DIMS" \
  "$FROZEN_BATCHES" "$TR_WARMUP" "$TR_ITERS" "$FT_BATCH" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$OUT/raw/run-config.out"

# ---- 1. The machine, the CLI's runtime report, CUDA through the binary.
step nvidia-smi 20 3 nvidia-smi
step nvidia-smi-query 20 3 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
step brspeech-version 20 3 bash -c "LD_LIBRARY_PATH='$TORCH_LIB' '$BIN' --version; LD_LIBRARY_PATH='$TORCH_LIB' '$BIN' doctor || true"
step runtime 40 5 "${rs[@]}" "$BENCH" runtime --device "$DEVICE"

# ---- 2. Parity: PyTorch reference checks, the parity test binary on the device (TF32 off),
# the fixtures under bf16 autocast.
step torch-check 90 15 "$PYTHON" "$PY_BENCH" check --device "$DEVICE" --fixtures tests/fixtures/parity
# The test binary looks for its fixtures under the folder it was compiled in.
manifest=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifest_dir"])' "$CARRY/build.json" 2> /dev/null || echo "$root")
if [ "$manifest" != "$root" ] && [ ! -e "$manifest/tests/fixtures/parity" ]; then
  if mkdir -p "$(dirname "$manifest")" 2> /dev/null && ln -sfn "$root" "$manifest" 2> /dev/null; then
    say "fixtures: linked $manifest -> $root for the parity test binary"
  else
    say "warning: cannot link $manifest -> $root; the parity test binary will not find its fixtures"
  fi
fi
test_device=()
[[ "$DEVICE" == cuda* ]] && test_device=(BRSPEECH_TEST_DEVICE=cuda)
step parity-tests 120 15 env "${test_device[@]}" LD_LIBRARY_PATH="$TORCH_LIB" "$PARITY" --test-threads 1 --nocapture
step parity-bf16 60 8 "${rs[@]}" "$BENCH" parity-bf16 --device "$DEVICE" --fixtures tests/fixtures/parity

# ---- 3. Extraction throughput (the same random weights on both sides, written once).
mkdir -p "$WORK/ssl" "$WORK/xcheck"
step write-ssl-base 60 5 "${rs[@]}" "$BENCH" write-ssl --model base "${layers_arg[@]}" "$WORK/ssl/base"
step write-ssl-xlsr 90 10 "${rs[@]}" "$BENCH" write-ssl --model xlsr "${layers_arg[@]}" "$WORK/ssl/xlsr"
for model in base xlsr; do
  if [ "$model" = base ]; then batches=$BATCHES_BASE; else batches=$BATCHES_XLSR; fi
  for dtype in f32 bf16; do
    step "extract-brspeech-$model-$dtype" 120 15 "${rs[@]}" "$BENCH" extract --device "$DEVICE" --dtype "$dtype" \
      --model "$model" --ssl-dir "$WORK/ssl/$model" --batches "$batches" --warmup "$EX_WARMUP" \
      --iters "$EX_ITERS" --samples "$SAMPLES" --xcheck "$WORK/xcheck/xcheck_${model}_$dtype.safetensors"
  done
  step "extract-pytorch-$model" 180 25 "$PYTHON" "$PY_BENCH" extract --device "$DEVICE" --models "$model" \
    --dtypes f32,bf16 --batches-base "$BATCHES_BASE" --batches-xlsr "$BATCHES_XLSR" --warmup "$EX_WARMUP" \
    --iters "$EX_ITERS" --samples "$SAMPLES" --ssl-root "$WORK/ssl" --xcheck-dir "$WORK/xcheck"
done

# ---- 4. Training steps. Frozen: the back end on [B, 201, D] cached-feature-shaped inputs.
for dim in ${FROZEN_DIMS//,/ }; do
  if [ "$dim" = 1024 ]; then ssl=$WORK/ssl/xlsr; else ssl=$WORK/ssl/base; fi
  for batch in ${FROZEN_BATCHES//,/ }; do
    step "train-frozen-brspeech-d$dim-b$batch" 60 8 "${rs[@]}" "$BENCH" train --mode frozen --impl train \
      --device "$DEVICE" --dim "$dim" --batch "$batch" --ssl-dir "$ssl" --warmup "$TR_WARMUP" --iters "$TR_ITERS"
  done
done
step train-frozen-pytorch 120 20 "$PYTHON" "$PY_BENCH" train-frozen --device "$DEVICE" --dims "$FROZEN_DIMS" \
  --batches "$FROZEN_BATCHES" --adams default,single --warmup "$TR_WARMUP" --iters "$TR_ITERS"
# Finetune: wav2vec2-base + AASIST on waveforms, SSL in train mode.
step train-finetune-brspeech-train-f32 90 12 "${rs[@]}" "$BENCH" train --mode finetune --impl train --device "$DEVICE" \
  --batch "$FT_BATCH" --ssl-dir "$WORK/ssl/base" --samples "$SAMPLES" --warmup "$TR_WARMUP" --iters "$TR_ITERS"
for dtype in f32 bf16; do
  step "train-finetune-brspeech-loop-$dtype" 90 12 "${rs[@]}" "$BENCH" train --mode finetune --impl loop --dtype "$dtype" \
    --device "$DEVICE" --batch "$FT_BATCH" --ssl-dir "$WORK/ssl/base" --samples "$SAMPLES" --warmup "$TR_WARMUP" \
    --iters "$TR_ITERS"
done
step train-finetune-pytorch 150 20 "$PYTHON" "$PY_BENCH" train-finetune --device "$DEVICE" --batch "$FT_BATCH" \
  --ssl-dir "$WORK/ssl/base" --dtypes f32,bf16 --adams default,single --samples "$SAMPLES" --warmup "$TR_WARMUP" \
  --iters "$TR_ITERS"

# ---- 5. The demo pipeline on CUDA ---------------------------------------------------------
# ADJUST HERE once the CLI runs pipelines: the pipeline file, how its device is set to `auto`
# (by default every `device:` key of a copy placed beside it is rewritten), and the command.
DEMO_PIPELINE=${GPU_DEMO_PIPELINE:-pipelines/demo.yaml}
if [ -f "$DEMO_PIPELINE" ]; then
  demo_copy=$(dirname "$DEMO_PIPELINE")/.gpu-run-$(basename "$DEMO_PIPELINE")
  sed -E 's/^([[:space:]]*device:[[:space:]]*).*/\1auto/' "$DEMO_PIPELINE" > "$demo_copy"
  step demo 150 40 "${rs[@]}" "$BIN" run "$demo_copy" --json
  rm -f "$demo_copy"
  # What shows the stages ran on the GPU: the stage logs (device lines), the training log (GPU
  # memory per epoch) and the metrics.
  mkdir -p "$OUT/demo"
  cp cache/logs/demo/*.log "$OUT/demo/" 2>/dev/null || true
  cp outputs/demo/train/train_log.jsonl outputs/demo/train/train_summary.json \
     outputs/demo/extract/features.json outputs/demo/evaluate/metrics.json "$OUT/demo/" 2>/dev/null || true
else
  say "demo: $DEMO_PIPELINE is not in this tree; skipped"
  printf '{"step":"demo","status":"skipped (no %s)","rc":null,"seconds":0,"limit_s":0}\n' "$DEMO_PIPELINE" >> "$OUT/steps.jsonl"
fi
# --------------------------------------------------------------------------------------------

summarize
say "done in ${SECONDS}s; summary: $OUT/summary.md"
# GPU_BENCH_BUNDLE=1: everything in one archive beside summary.md and results.json (the device
# tool returns at most 8 files).
if [ "${GPU_BENCH_BUNDLE:-0}" = 1 ]; then
  tar czf "$WORK/results.tgz" -C "$OUT" .
  find "$OUT" -mindepth 1 ! -name summary.md ! -name results.json -exec rm -rf {} + 2>/dev/null
  mv "$WORK/results.tgz" "$OUT/results.tgz"
fi
