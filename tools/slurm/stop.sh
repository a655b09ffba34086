#!/usr/bin/env bash
# Stops the cluster tools/slurm/start.sh started: cancels its jobs first (job processes outlive
# slurmd), then stops slurmd, slurmctld and munged through their pid files (never by name).
#   SLURM_BASE  as for start.sh (/tmp/brspeech-slurm)
set -uo pipefail
base=${SLURM_BASE:-/tmp/brspeech-slurm}
export SLURM_CONF=$base/etc/slurm.conf
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
if running "$base/run/slurmctld.pid" slurmctld && [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
  scancel --user="$(id -un)" 2>/dev/null
  for _ in $(seq 100); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.1; done
fi
for d in "slurmd:$base/run/slurmd.pid" "slurmctld:$base/run/slurmctld.pid" "munged:$base/munge/pid"; do
  name=${d%%:*} file=${d#*:}
  running "$file" "$name" || { rm -f "$file"; continue; }
  pid=$(cat "$file"); kill "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$file"
  echo "slurm-stop: $name stopped"
done
