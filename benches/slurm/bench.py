#!/usr/bin/env python3
"""Slurm executor benchmark: what running through Slurm costs over the local executor, and how
fast a 1,000-shard stage is submitted and scheduled (docs/BENCHMARKS.md, "Slurm executor").

Measured on the single-node cluster `run.sh` starts:
  1. submission: `run --executor slurm --detach` of one `shard_demo` stage with 1,000 shards
     (coordinator wall time: load, plan, sbatch, journal), next to 1,000 separate `sbatch`
     calls (one job per shard) submitted held and cancelled;
  2. scheduling: the same 1,000 trivial shards run to the end (re-attached coordinator), next
     to a plain array of 1,000 `true` tasks (the cluster's own throughput);
  3. overhead for shards of 10 s of work: 4 x slots shards, wall time against the ideal
     (shards x 10 s / slots);
  4. the same small pipeline (command, 4 + 3 sharded, command) locally and on Slurm, without
     work and with 2 s per shard.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

PIPELINE_SMALL = """
name: small
stages:
  gen:
    kind: command
    cmd: "cp data/source.txt data/list.txt"
    deps: [data/source.txt]
    outs: [data/list.txt]
  a:
    kind: shard_demo
    deps: [data/list.txt]
    params: {{list: data/list.txt, shards: 4, shard_ms: {ms}}}
  b:
    kind: shard_demo
    needs: [a]
    params: {{shards: 3, salt: b, shard_ms: {ms}}}
  report:
    kind: command
    needs: [a, b]
    cmd: "cut -f2 outputs/small/b/items.txt | sort > data/report.txt"
    outs: [data/report.txt]
"""

PIPELINE_SHARDS = """
name: shards
stages:
  many:
    kind: shard_demo
    params: {{items: {items}, shards: {shards}, shard_ms: {ms}, salt: "{salt}"}}
"""


def workspace(base, name, text, source_lines=0):
    d = os.path.join(base, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "data"))
    open(os.path.join(d, "brspeech.toml"), "w").close()
    with open(os.path.join(d, "brspeech.yaml"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "data", "source.txt"), "w") as f:
        f.writelines(f"file-{i:04}.flac\n" for i in range(source_lines))
    return d


def timed(cmd, cwd, check=True):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return dt, p


def wait_idle():
    while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)


def submitted_seconds(stderr):
    for line in stderr.splitlines():
        if "job(s) submitted in" in line:
            return float(line.split("submitted in ")[1].split("s;")[0])
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brspeech", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--shard-seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    bs = os.path.abspath(a.brspeech)
    os.makedirs(a.work, exist_ok=True)
    rows = []

    # 1 + 2: a 1,000-shard stage, submitted detached, then waited for.
    sub, subi, sched = [], [], []
    for r in range(a.rounds):
        d = workspace(a.work, "k1000", PIPELINE_SHARDS.format(items=1000, shards=1000, ms=0, salt=f"r{r}-{time.time()}"))
        wait_idle()
        dt, p = timed([bs, "run", "--executor", "slurm", "--detach"], d)
        sub.append(dt)
        subi.append(submitted_seconds(p.stderr))
        t0 = time.perf_counter()
        timed([bs, "run", "--executor", "slurm"], d)
        sched.append(dt + time.perf_counter() - t0)
        print(f"1000 shards: coordinator {dt:.3f}s (sbatch {subi[-1]:.3f}s), all done after {sched[-1]:.1f}s", file=sys.stderr)
    # One job per shard, for comparison: 1,000 sbatch calls (held, then cancelled).
    d = workspace(a.work, "sbatch1000", "name: x\nstages: {}\n")
    wait_idle()
    t0 = time.perf_counter()
    ids = []
    for i in range(1000):
        p = subprocess.run(["sbatch", "--parsable", "--hold", "-o", "/dev/null", f"--job-name=one-{i}", "--wrap", "true"],
                           cwd=d, capture_output=True, text=True, check=True)
        ids.append(p.stdout.strip())
    per_job = time.perf_counter() - t0
    subprocess.run(["scancel"] + ids, check=False)
    print(f"1000 x sbatch: {per_job:.2f}s", file=sys.stderr)
    wait_idle()

    # The cluster alone: an array of 1,000 tasks that run `true`.
    t0 = time.perf_counter()
    p = subprocess.run(["sbatch", "--parsable", "--array=0-999", "-o", "/dev/null", "--wrap", "true"],
                       cwd=d, capture_output=True, text=True, check=True)
    job = p.stdout.strip()
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.1)
    raw_array = time.perf_counter() - t0
    print(f"plain array of 1000 x true: {raw_array:.1f}s", file=sys.stderr)

    # 3: shards of 10 s of work.
    n = 4 * a.slots
    ms = int(a.shard_seconds * 1000)
    d = workspace(a.work, "k10s", PIPELINE_SHARDS.format(items=n, shards=n, ms=ms, salt=str(time.time())))
    wait_idle()
    dt10, p10 = timed([bs, "run", "--executor", "slurm"], d)
    ideal = n * a.shard_seconds / a.slots
    print(f"{n} shards x {a.shard_seconds}s on {a.slots} slots: {dt10:.1f}s (ideal {ideal:.0f}s)", file=sys.stderr)

    # 4: the same small pipeline, local and Slurm, without and with work.
    small = {}
    for ms_small in (0, 2000):
        for ex in ("local", "slurm"):
            times = []
            for r in range(a.rounds if ms_small == 0 else 1):
                d = workspace(a.work, f"small-{ex}-{ms_small}", PIPELINE_SMALL.format(ms=ms_small), source_lines=200)
                wait_idle()
                cmd = [bs, "run"] + (["--executor", "slurm"] if ex == "slurm" else [])
                dt, _ = timed(cmd, d)
                times.append(dt)
            small[(ex, ms_small)] = statistics.median(times)
            print(f"small pipeline, {ex}, {ms_small} ms/shard: {small[(ex, ms_small)]:.2f}s", file=sys.stderr)

    med = statistics.median
    out = []
    out.append(f"| measurement | result |\n|---|---:|")
    out.append(f"| 1,000-shard stage: `run --executor slurm --detach`, coordinator wall time (median of {a.rounds}) | {med(sub):.3f} s |")
    out.append(f"| ... of which `sbatch` calls (1 array + 1 final job) | {med(subi):.3f} s |")
    out.append(f"| 1,000 separate `sbatch` calls (one job per shard), for comparison | {per_job:.2f} s |")
    out.append(f"| 1,000 trivial shards: submission to last shard committed (median of {a.rounds}) | {med(sched):.1f} s |")
    out.append(f"| the cluster alone: `sbatch --array=0-999 --wrap true` until all ended | {raw_array:.1f} s |")
    out.append(f"| {n} shards x {a.shard_seconds:.0f} s on {a.slots} slots: wall time / ideal {ideal:.0f} s | {dt10:.1f} s (+{100 * (dt10 / ideal - 1):.1f} %) |")
    for ms_small in (0, 2000):
        l, s = small[("local", ms_small)], small[("slurm", ms_small)]
        out.append(f"| small pipeline (4 stages, 4 + 3 shards, {ms_small} ms per shard): local / Slurm | {l:.2f} s / {s:.2f} s |")
    text = "\n".join(out) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    json.dump({"raw_array": raw_array, "submit": sub, "sbatch": subi, "sched": sched, "per_job": per_job, "k10s": dt10,
               "small": {f"{k[0]}-{k[1]}": v for k, v in small.items()}},
              open(a.out.replace(".md", ".json"), "w"), indent=1)


if __name__ == "__main__":
    main()
