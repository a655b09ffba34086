#!/usr/bin/env bash
# Builds, on a machine with Rust, everything the GPU run (benches/gpu/run.sh) needs, against a
# full CUDA libtorch 2.11, and copies it into the git-ignored carry folder:
#
#   .gpu-carry/bin/brspeech       release CLI (`--version`, `doctor`, `run`)
#   .gpu-carry/bin/model-bench    the `model` bench binary (extraction, training, bf16 parity)
#   .gpu-carry/bin/model_parity   the parity test binary (BRSPEECH_TEST_DEVICE=cuda)
#   .gpu-carry/build.json         what was built, from which commit, against which libtorch
#
#   benches/gpu/build.sh [TORCH_DIR]
#
# TORCH_DIR: a full torch 2.11 folder (libtorch_cuda.so and the nvidia-* wheels beside it);
# default .deps/libtorch-full-venv/lib/python3.11/site-packages/torch. The binaries go to
# CARGO_TARGET_DIR (default target/cuda), kept apart from the CPU builds. Their RUNPATH points
# at TORCH_DIR/lib; on the GPU machine run.sh sets LD_LIBRARY_PATH to that machine's torch.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
torch=${1:-$root/.deps/libtorch-full-venv/lib/python3.11/site-packages/torch}
torch=$(cd "$torch" && pwd -P)
if [ ! -f "$torch/lib/libtorch_cuda.so" ]; then
  echo "error: $torch/lib has no libtorch_cuda.so; pass a full CUDA torch 2.11 folder (tools/setup-libtorch.sh --full)" >&2
  exit 1
fi
export LIBTORCH=$torch
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
export BRSPEECH_LINK_CUDA=1
carry=$root/.gpu-carry
jobs=${CARGO_BUILD_JOBS:-2}

# The executables cargo reports for one build command (last one per target name).
artifacts() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}

echo "[build] libtorch: $LIBTORCH; target dir: $CARGO_TARGET_DIR" >&2
list=$(mktemp)
trap 'rm -f "$list"' EXIT
cargo build -j "$jobs" --release --bin brspeech --bench model --message-format=json-render-diagnostics | artifacts >> "$list"
cargo test -j "$jobs" --release --test model_parity --no-run --message-format=json-render-diagnostics | artifacts >> "$list"
pick() { awk -v n="$1" '$1 == n { p = $2 } END { if (p == "") exit 1; print p }' "$list"; }
brspeech=$(pick brspeech)
bench=$(pick model)
parity=$(pick model_parity)

rm -rf "$carry/bin"
mkdir -p "$carry/bin"
# Stripped: the symbol tables are most of their size, and the carry is limited to 64 MiB.
strip -o "$carry/bin/brspeech" "$brspeech"
strip -o "$carry/bin/model-bench" "$bench"
strip -o "$carry/bin/model_parity" "$parity"
for b in brspeech model-bench model_parity; do
  tools/check-cuda-link.sh "$carry/bin/$b" >&2
done
python3 - "$carry" "$root" "$torch" <<'PY'
import json, os, subprocess, sys
carry, root, torch = sys.argv[1:]
def git(*a):
    return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
info = {
    "commit": git("rev-parse", "HEAD"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "built_in": root,
    "libtorch": torch,
    # tests/model_support finds the fixtures under the manifest folder it was compiled in;
    # run.sh links that path to the repository when it differs on the GPU machine.
    "manifest_dir": root,
    "binaries": {b: os.path.getsize(f"{carry}/bin/{b}") for b in sorted(os.listdir(f"{carry}/bin"))},
}
json.dump(info, open(f"{carry}/build.json", "w"), indent=2)
print(json.dumps(info, indent=2))
PY
du -sh "$carry" >&2
