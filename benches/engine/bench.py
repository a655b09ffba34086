#!/usr/bin/env python3
"""Engine benchmark: no-op `brspeech status` / `brspeech run` over one dep folder of N files,
cold (stat cache deleted) and warm, next to `dvc status` (cold: DVC's state/index deleted; warm)
on the same files. Prints a markdown table and writes it to --out."""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time


def sh(cmd, cwd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def timed(cmd, cwd, before=None, repeats=3, env=None):
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        sh(cmd, cwd, env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_files(data, n):
    per_dir = 1000
    for i in range(n):
        d = os.path.join(data, f"d{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:07d}.txt"), "w") as f:
            f.write(f"file {i} " * 8 + "\n")


def bench(n, args):
    work = os.path.join(args.work, f"n{n}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data = os.path.join(work, "data")
    t = time.perf_counter()
    make_files(data, n)
    gen = time.perf_counter() - t
    # Let every file age past the stat cache's racy window before the first hash.
    time.sleep(0.2)

    bw = os.path.join(work, "brspeech")
    os.makedirs(bw)
    os.symlink(data, os.path.join(bw, "data"))
    open(os.path.join(bw, "brspeech.toml"), "w").close()
    with open(os.path.join(bw, "brspeech.yaml"), "w") as f:
        f.write("name: bench\nstages:\n  count:\n    kind: command\n    deps: [data]\n"
                "    cmd: find -L data -type f | wc -l > count.txt\n    outs: [count.txt]\n")
    b = args.brspeech
    t = time.perf_counter()
    sh([b, "run"], bw)
    first = time.perf_counter() - t
    stat_cache = os.path.join(bw, "cache", "state", "stat-cache.bin")

    def drop_stat():
        if os.path.exists(stat_cache):
            os.remove(stat_cache)

    res = {"n": n, "gen": gen, "first": first}
    res["status_cold"] = timed([b, "status"], bw, before=drop_stat)
    sh([b, "status"], bw)
    res["status_warm"] = timed([b, "status"], bw)
    res["run_cold"] = timed([b, "run"], bw, before=drop_stat)
    sh([b, "run"], bw)
    res["run_warm"] = timed([b, "run"], bw)
    out = sh([b, "status", "--json"], bw).stdout
    assert '"fresh"' in out and "stale" not in out, out

    dw = os.path.join(work, "dvc")
    os.makedirs(dw)
    os.symlink(data, os.path.join(dw, "data"))
    d = args.dvc
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    sh([d, "init", "--no-scm", "-q"], dw, env)
    site = os.path.join(dw, ".dvc", "site")
    sh([d, "config", "core.site_cache_dir", site], dw, env)
    with open(os.path.join(dw, "dvc.yaml"), "w") as f:
        f.write("stages:\n  count:\n    cmd: find -L data -type f | wc -l > count.txt\n"
                "    deps: [data]\n    outs: [count.txt]\n")
    t = time.perf_counter()
    sh([d, "repro", "-q"], dw, env)
    res["dvc_first"] = time.perf_counter() - t

    def drop_dvc_state():
        shutil.rmtree(site, ignore_errors=True)
        shutil.rmtree(os.path.join(dw, ".dvc", "tmp"), ignore_errors=True)

    res["dvc_cold"] = timed([d, "status"], dw, before=drop_dvc_state, repeats=args.dvc_cold_repeats, env=env)
    sh([d, "status"], dw, env)
    res["dvc_warm"] = timed([d, "status"], dw, env=env)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brspeech", required=True)
    p.add_argument("--dvc", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--dvc-cold-repeats", type=int, default=2)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    dvc_version = sh([args.dvc, "version"], ".").stdout.splitlines()[0]
    rows = [bench(int(n), args) for n in args.sizes.split(",")]
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; {dvc_version}",
        "",
        "| files | brspeech status cold | status warm | run (no-op) cold | run (no-op) warm | dvc status cold | dvc status warm | warm speed-up vs dvc warm |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['status_cold']:.2f} s | {r['status_warm']:.3f} s | {r['run_cold']:.2f} s | "
            f"{r['run_warm']:.3f} s | {r['dvc_cold']:.2f} s | {r['dvc_warm']:.2f} s | "
            f"{r['dvc_warm'] / r['status_warm']:.0f}x |"
        )
    lines.append("")
    lines.append("first runs (hash everything + run the stage): " + ", ".join(
        f"{r['n']:,} files: brspeech {r['first']:.2f} s, dvc repro {r['dvc_first']:.2f} s" for r in rows))
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        ratio = b["n"] / a["n"]
        lines.append(
            f"growth {a['n']:,} -> {b['n']:,} files (x{ratio:.0f}): status cold x{b['status_cold'] / a['status_cold']:.1f}, "
            f"status warm x{b['status_warm'] / a['status_warm']:.1f}, run warm x{b['run_warm'] / a['run_warm']:.1f}")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
