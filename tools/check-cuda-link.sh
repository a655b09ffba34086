#!/usr/bin/env bash
# Fail unless the given brspeech binary is linked against libtorch_cuda (see docs/libtorch.md:
# rustc's --as-needed silently drops it, and CUDA is then never available at run time).
set -euo pipefail
bin=${1:?usage: tools/check-cuda-link.sh BINARY}
if readelf -d "$bin" | grep -q 'NEEDED.*libtorch_cuda.so'; then
  echo "$bin: linked against libtorch_cuda.so"
else
  echo "error: $bin is not linked against libtorch_cuda.so; build against a full CUDA libtorch (tools/setup-libtorch.sh --full) or set BRSPEECH_LINK_CUDA=1" >&2
  exit 1
fi
