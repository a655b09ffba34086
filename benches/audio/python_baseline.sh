#!/usr/bin/env bash
# Runs the Python chunk baseline, creating its virtual environment on first use
# (idempotent: an existing environment with the packages is reused).
# Usage: benches/audio/python_baseline.sh LIST_FILE REPEATS
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.deps/audio-bench-venv"
py="$venv/bin/python"
if ! "$py" -c 'import numpy, soundfile, soxr' 2>/dev/null; then
    mkdir -p "$root/.deps"
    python3 -m venv "$venv"
    "$py" -m pip install --quiet --disable-pip-version-check numpy soundfile soxr
fi
exec "$py" "$root/benches/audio/baseline.py" "$@"
