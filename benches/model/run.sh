#!/usr/bin/env bash
# Model CPU benchmark: brspeech (tch) against PyTorch 2.11 + transformers, same machine, same
# thread count, alternating rounds; prints a markdown table of the best times and ratios.
#
#   benches/model/run.sh [THREADS] [ITERS] [ROUNDS]     (defaults: 2 5 2)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
threads=${1:-2}
iters=${2:-5}
rounds=${3:-2}
"$here/setup-venv.sh" >&2
py="$root/.deps/model-bench-venv/bin/python"
"$py" "$here/aasist_spec.py" --check "$root/tests/fixtures/parity" >&2
bin=$(cd "$root" && cargo bench --bench model --no-run --message-format=json \
  | "$py" -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="model" and m.get("executable")][-1])')
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  OMP_NUM_THREADS=$threads "$bin" cpu "$threads" "$iters" > "$out/rust.$r.json"
  (cd "$here" && OMP_NUM_THREADS=$threads "$py" bench_torch.py cpu "$threads" "$iters") > "$out/torch.$r.json"
done
"$py" - "$out" "$threads" <<'PY'
import glob, json, os, platform, sys
out, threads = sys.argv[1], sys.argv[2]
def best(kind, key):
    return min(json.load(open(f))[key]["min_s"] for f in glob.glob(f"{out}/{kind}.*.json"))
def med(kind, key):
    return min(json.load(open(f))[key]["median_s"] for f in glob.glob(f"{out}/{kind}.*.json"))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"CPU: {cpu}; threads: {threads}")
print()
print("| workload | brspeech (tch) best / median | PyTorch best / median | ratio (best) | ratio (median) |")
print("|---|---|---|---|---|")
for key, label in [("w2v_base_forward_4x64600", "wav2vec2-base forward, 4 x 64,600 samples"),
                   ("aasist_fwd_bwd_4x201x768", "AASIST forward+backward, 4 x 201 x 768"),
                   ("aasist_eval_forward_4x201x768", "AASIST eval forward, 4 x 201 x 768")]:
    rb, rm, tb, tm = best("rust", key), med("rust", key), best("torch", key), med("torch", key)
    print(f"| {label} | {rb*1e3:.1f} ms / {rm*1e3:.1f} ms | {tb*1e3:.1f} ms / {tm*1e3:.1f} ms | {rb/tb:.3f} | {rm/tm:.3f} |")
PY
rm -rf "$out"
