#!/usr/bin/env bash
# Frozen-mode training on the CPU: one epoch over 1,000 clips of [201, D] f16 features, batch 4,
# through the train_aasist stage's shard loader (benches/train/main.rs). Prints JSON.
#
#   benches/train/run.sh [THREADS] [DIM] [CLIPS]        (defaults: 2 1024 1000)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-2}
dim=${2:-1024}
clips=${3:-1000}
cd "$root"
tools/setup-libtorch.sh >&2
OMP_NUM_THREADS=$threads cargo bench --locked --bench train -- \
  --threads "$threads" --dim "$dim" --clips "$clips" --val 100 --batch 4
