#!/usr/bin/env bash
# Runs a Python chunk baseline, creating its virtual environment on first use (idempotent: an
# existing environment with the packages is reused).
# Usage: benches/audio/python_baseline.sh LIST_FILE REPEATS [soundfile|torchaudio]
#   soundfile:  .deps/audio-bench-venv (numpy, soundfile, soxr)
#   torchaudio: .deps/model-bench-venv (torch 2.11, made by benches/model/setup-venv.sh) with
#               torchaudio 2.11 and torchcodec added
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
impl=${3:-soundfile}
if [ "$impl" = torchaudio ]; then
    "$root/benches/model/setup-venv.sh" >&2
    py="$root/.deps/model-bench-venv/bin/python"
    if ! "$py" -c 'import torchaudio, torchcodec' 2>/dev/null; then
        "$py" -m pip install --quiet --disable-pip-version-check torchaudio==2.11.0 torchcodec
    fi
else
    venv="$root/.deps/audio-bench-venv"
    py="$venv/bin/python"
    if ! "$py" -c 'import numpy, soundfile, soxr' 2>/dev/null; then
        mkdir -p "$root/.deps"
        python3 -m venv "$venv"
        "$py" -m pip install --quiet --disable-pip-version-check numpy soundfile soxr
    fi
fi
exec "$py" "$root/benches/audio/baseline.py" "$1" "$2" "$impl"
