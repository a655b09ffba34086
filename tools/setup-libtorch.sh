#!/usr/bin/env bash
# Provide libtorch 2.11 for tch 0.24 at .deps/libtorch (git-ignored), idempotently.
#
#   tools/setup-libtorch.sh          lean CPU install (20 s, 1.3 GB) unless one is configured
#   tools/setup-libtorch.sh --full   full CUDA install (torch wheel with its nvidia-* wheels)
#
# Resolution order:
#   1. $LIBTORCH, when it points at a libtorch 2.11 folder (lib/libtorch_cpu.so + include/);
#   2. $BRSPEECH_TORCH_PYTHON (or `python3` when BRSPEECH_REUSE_TORCH=1) with torch 2.11
#      importable: its torch folder is reused (e.g. a GPU machine or a CUDA image);
#   3. a project-local virtual environment .deps/libtorch-venv from the PyPI wheel.
# The chosen folder is linked at .deps/libtorch, which .cargo/config.toml hands to torch-sys.
# Used by the Makefile and the Dockerfile, so the two cannot drift.
set -euo pipefail

want=2.11.0
root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
link="$deps/libtorch"
full=0
[ "${1:-}" = "--full" ] && full=1
mkdir -p "$deps"

version_of() { # $1 = torch folder; prints its version or nothing
  local v=""
  if [ -f "$1/version.py" ]; then
    v=$(sed -n "s/^__version__ = '\([^'+]*\).*/\1/p" "$1/version.py")
  elif [ -f "$1/build-version" ]; then
    v=$(cut -d+ -f1 < "$1/build-version")
  fi
  echo "$v"
}

usable() { # $1 = torch folder
  [ -f "$1/lib/libtorch_cpu.so" ] && [ -d "$1/include" ] && [ "$(version_of "$1")" = "$want" ]
}

point_at() {
  if [ "$(readlink "$link" 2>/dev/null)" != "$1" ]; then
    ln -sfn "$1" "$link"
  fi
  echo "libtorch $want: $1"
}

if [ -n "${LIBTORCH:-}" ] && [ "$LIBTORCH" != "$link" ]; then
  if usable "$LIBTORCH"; then point_at "$LIBTORCH"; exit 0; fi
  echo "error: LIBTORCH=$LIBTORCH is not a libtorch $want folder (lib/libtorch_cpu.so, include/, version $want)" >&2
  exit 1
fi

py="${BRSPEECH_TORCH_PYTHON:-}"
[ -z "$py" ] && [ "${BRSPEECH_REUSE_TORCH:-0}" = "1" ] && py=python3
if [ -n "$py" ]; then
  if dir=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) && usable "$dir"; then
    point_at "$dir"; exit 0
  fi
  echo "note: $py has no torch $want; installing a project-local copy" >&2
fi

venv="$deps/libtorch-venv"
if [ "$full" = 1 ]; then venv="$deps/libtorch-full-venv"; fi
site() { "$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

if [ -x "$venv/bin/python3" ] && usable "$(site)/torch"; then
  point_at "$(site)/torch"; exit 0
fi

echo "installing torch==$want into $venv (one time) ..." >&2
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)
if [ "$full" = 1 ]; then
  "${pip[@]}" "torch==$want"
else
  # libtorch_cpu.so itself needs libcudart and libcupti at load time, nothing else from CUDA.
  "${pip[@]}" --no-deps "torch==$want" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi
usable "$(site)/torch" || { echo "error: torch $want install in $venv is incomplete" >&2; exit 1; }
point_at "$(site)/torch"
