#!/usr/bin/env bash
# Create (idempotently) the Python environment of the model CPU benchmark:
# .deps/model-bench-venv with torch 2.11.0 and transformers (Hugging Face Wav2Vec2Model).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.deps/model-bench-venv"
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import torch, transformers, safetensors; assert torch.__version__.startswith("2.11.0")' 2>/dev/null; then
  echo "model bench venv: $venv (ready)"
  exit 0
fi
mkdir -p "$root/.deps"
[ -x "$py" ] || python3 -m venv "$venv"
"$py" -m pip install --quiet torch==2.11.0 transformers safetensors
"$py" -c 'import torch, transformers; print("model bench venv:", torch.__version__, "transformers", transformers.__version__)'
