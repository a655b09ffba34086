#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine (munged, slurmctld, slurmd), without
# systemd, for trying the Slurm executor and for CI. Idempotent: daemons already running with
# the same configuration are left alone; a changed configuration restarts them.
#
#   apt-get install -y --no-install-recommends slurm-wlm munge    # Debian 12: Slurm 22.05
#   tools/slurm/start.sh && source "${SLURM_BASE:-/tmp/brspeech-slurm}/env.sh"
#
# Settings (environment):
#   SLURM_BASE       folder for config, state, sockets and logs   (/tmp/brspeech-slurm)
#   SLURM_CPUS       CPUs to advertise (default: as detected; more = oversubscribe)
#   SLURM_CTLD_PORT  slurmctld port (6817); SLURM_D_PORT slurmd port (6818)
#   SLURM_LINK_ETC=1 also link /etc/slurm/slurm.conf to the generated file (root)
#   SLURM_PROBE=0    skip the end-to-end probe job
#   SLURM_WAIT_S     how long to wait for the node and the probe job (60)
set -euo pipefail

base=${SLURM_BASE:-/tmp/brspeech-slurm}
ctld_port=${SLURM_CTLD_PORT:-6817}
d_port=${SLURM_D_PORT:-6818}
wait_s=${SLURM_WAIT_S:-60}
user=$(id -un)
conf=$base/etc/slurm.conf
sock=$base/munge/socket
export SLURM_CONF=$conf
start_ns=$(date +%s%N)

say() { printf 'slurm-start: %s\n' "$*"; }
fail() { say "error: $*" >&2; exit 1; }
# running PIDFILE COMM: the pid file names a live process called COMM (never a reused pid).
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

for cmd in munged mungekey slurmctld slurmd sinfo sbatch squeue scontrol; do
  command -v "$cmd" >/dev/null \
    || fail "\`$cmd\` not found; install Slurm: apt-get install -y --no-install-recommends slurm-wlm munge"
done
mkdir -p "$base"/{etc,munge,state,spool,log,run}
# munged wants a socket folder that everybody may traverse and nobody else may write.
chmod 755 "$base" "$base/munge"

# munge: a private key and daemon, nothing under /etc or /run.
if [[ ! -s $base/munge/key ]]; then
  mungekey --create --keyfile="$base/munge/key" >/dev/null 2>&1 \
    || head -c 1024 /dev/urandom >"$base/munge/key"
  chmod 600 "$base/munge/key"
fi
if ! running "$base/munge/pid" munged || [[ ! -S $sock ]]; then
  rm -f "$sock" "$sock.lock"
  munged --key-file="$base/munge/key" --socket="$sock" --pid-file="$base/munge/pid" \
    --log-file="$base/log/munged.log" --seed-file="$base/munge/seed" \
    || fail "munged did not start; see $base/log/munged.log"
  say "munged started"
fi
munge -n -S "$sock" | unmunge -S "$sock" >/dev/null || fail "munge round trip failed"

# The node as slurmd sees it (a node configured larger than it is gets drained).
read -r cpus mem < <(slurmd -C | head -1 | sed -E 's/.*CPUs=([0-9]+).*RealMemory=([0-9]+).*/\1 \2/')
[[ $cpus =~ ^[0-9]+$ && $mem =~ ^[0-9]+$ ]] || fail "cannot read CPUs and memory from \`slurmd -C\`"
real_cpus=$cpus
cpus=${SLURM_CPUS:-$cpus}
overrides=""
(( cpus != real_cpus )) && overrides="SlurmdParameters=config_overrides"

new=$(mktemp "$base/etc/.slurm.conf.XXXXXX")
cat >"$new" <<CONF
# written by tools/slurm/start.sh
ClusterName=brspeech
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmdPidFile=$base/run/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without a default, every job would be given the whole node's memory.
DefMemPerCPU=$(( mem / cpus ))
SchedulerType=sched/backfill
# Schedule new batch jobs at once, and reuse freed CPUs at once (the epilog's completion
# message triggers a scheduling pass); the defaults wait up to 3 s and 1 s.
SchedulerParameters=batch_sched_delay=0
Epilog=/bin/true
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=5
$overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
if [[ -f $conf ]] && cmp -s "$new" "$conf"; then rm -f "$new"; else mv "$new" "$conf"; changed=1; fi
chmod 644 "$conf"
printf 'export SLURM_CONF=%s\n' "$conf" >"$base/env.sh"
if [[ ${SLURM_LINK_ETC:-0} == 1 ]]; then mkdir -p /etc/slurm && ln -sfn "$conf" /etc/slurm/slurm.conf; fi

stop_daemon() { # COMM PIDFILE
  running "$2" "$1" || return 0
  local pid; pid=$(cat "$2"); kill "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
if (( changed )); then
  stop_daemon slurmd "$base/run/slurmd.pid"
  stop_daemon slurmctld "$base/run/slurmctld.pid"
fi
# start_daemon COMM: starts it unless it runs, and waits for its pid file.
start_daemon() {
  local pidfile=$base/run/$1.pid
  running "$pidfile" "$1" && return 0
  "$1" -f "$conf" || fail "$1 did not start: $(tail -n 2 "$base/log/$1.log" 2>/dev/null)"
  for _ in $(seq 100); do running "$pidfile" "$1" && break; sleep 0.05; done
  say "$1 started"
}
start_daemon slurmctld
start_daemon slurmd

deadline=$(( $(date +%s) + wait_s ))
until state=$(sinfo -h -n localhost -o %T 2>/dev/null) && [[ $state =~ ^(idle|mixed|allocated|completing) ]]; do
  for d in slurmctld slurmd; do
    running "$base/run/$d.pid" "$d" || fail "$d exited: $(tail -n 2 "$base/log/$d.log" 2>/dev/null)"
  done
  # A node left down or drained by an earlier run comes back.
  [[ ${state:-} =~ ^(down|drain|fail) ]] && scontrol update NodeName=localhost State=RESUME 2>/dev/null || true
  (( $(date +%s) < deadline )) || fail "node not ready after ${wait_s}s (state '${state:-?}'); see $base/log/"
  sleep 0.2
done

# "idle" is not "scheduling": the controller's first pass comes a few seconds after it starts.
# One trivial job proves munge, the controller, slurmd and job launch all work.
if [[ ${SLURM_PROBE:-1} == 1 ]]; then
  job=$(sbatch --parsable --job-name=brspeech-probe --output=/dev/null --chdir="$base" --wrap=true) \
    || fail "the probe job was rejected"
  while [[ -n $(squeue -h -j "$job" -o %T 2>/dev/null) ]]; do
    (( $(date +%s) < deadline )) || fail "the probe job $job did not finish within ${wait_s}s; see $base/log/"
    sleep 0.1
  done
  end=$(squeue -h -t all -j "$job" -o %T 2>/dev/null)
  [[ $end == COMPLETED ]] || fail "the probe job $job ended ${end:-unknown}; see $base/log/slurmd.log"
fi
ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
say "ready in ${ms} ms: export SLURM_CONF=$conf (or: source $base/env.sh)"
