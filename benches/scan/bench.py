#!/usr/bin/env python3
"""Scan benchmark: `scan_corpus` over N generated small files (walk + stat-cache fingerprint +
manifest), cold (no cache at all: every file read and hashed) and warm (a no-op run; a rescan
forced with the stat cache warm; a rescan after one file changed), next to the bare `stat`
floor (`find -printf %s`, one readdir + one stat per file) over the same files. Then the corpus
stages end to end (scan -> build_metadata -> chunk_audio) on a small generated WAV corpus, first
run and after adding two files. Standard library only. Prints markdown and writes it to --out."""

import argparse
import array
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import wave


def sh(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def timed(cmd, cwd=None, before=None, repeats=3, stdout=subprocess.DEVNULL):
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return statistics.median(times), times


def load():
    return os.getloadavg()[0]


def make_small_files(corpus, n, per_dir=500):
    """N files of 96 bytes in folders of `per_dir`, once (a marker records a complete set)."""
    marker = f"{corpus}.complete-{n}"
    if os.path.exists(marker):
        return 0.0
    shutil.rmtree(corpus, ignore_errors=True)
    t = time.perf_counter()
    for i in range(n):
        d = os.path.join(corpus, f"spk{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"utt{i:07d}.wav"), "wb") as f:
            f.write(f"{i:012d}".encode() * 8)
    open(marker, "w").close()
    return time.perf_counter() - t


def write_workspace(ws, yaml):
    os.makedirs(ws, exist_ok=True)
    open(os.path.join(ws, "brspeech.toml"), "w").close()
    with open(os.path.join(ws, "brspeech.yaml"), "w") as f:
        f.write(yaml)


def reset(ws):
    for p in ("cache", "outputs"):
        shutil.rmtree(os.path.join(ws, p), ignore_errors=True)
    lock = os.path.join(ws, "brspeech.lock")
    if os.path.exists(lock):
        os.remove(lock)


def scan_bench(args):
    corpus = os.path.join(args.work, "corpus")
    gen = make_small_files(corpus, args.files)
    time.sleep(0.2)  # past the stat cache's racy window
    find = ["find", corpus, "-type", "f", "-printf", "%s\n"]
    timed(find, repeats=1)  # warm the dentry and inode caches
    res = {"files": args.files, "gen": gen, "load_start": load()}
    res["floor"], res["floor_all"] = timed(find, repeats=args.repeats)

    ws = os.path.join(args.work, "ws")
    write_workspace(
        ws,
        "name: scanbench\nsources:\n"
        f"  - {{name: bench, label: spoof, root: {json.dumps(corpus)}, include: ['*.wav']}}\n"
        "stages:\n  scan:\n    kind: scan_corpus\n",
    )
    b = args.brspeech
    res["cold"], res["cold_all"] = timed([b, "run"], ws, before=lambda: reset(ws), repeats=args.repeats)
    res["noop"], res["noop_all"] = timed([b, "run"], ws, repeats=args.repeats)
    res["forced"], res["forced_all"] = timed([b, "run", "--force", "scan"], ws, repeats=args.repeats)
    victim = os.path.join(corpus, "spk0000", "utt0000000.wav")

    def change_one():
        with open(victim, "ab") as f:
            f.write(b"x")
        time.sleep(0.1)

    res["one_changed"], res["one_changed_all"] = timed([b, "run"], ws, before=change_one, repeats=args.repeats)
    with open(victim, "wb") as f:  # back to its generated content
        f.write(f"{0:012d}".encode() * 8)
    manifest = os.path.join(ws, "outputs", "scanbench", "scan", "manifest.csv")
    with open(manifest) as f:
        rows = sum(1 for _ in f) - 1
    assert rows == args.files, (rows, args.files)
    res["load_end"] = load()
    return res


def make_wavs(root, n, start=0):
    """N mono 16-bit WAV files, 16-44.1 kHz, 3-9 s of a harmonic tone under a syllable envelope."""
    rates = [16000, 22050, 24000, 32000, 44100]
    base = {}
    for rate in rates:
        a = array.array("h")
        for i in range(rate):
            t = i / rate
            env = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * t)
            v = env * (0.3 * math.sin(2 * math.pi * 180 * t) + 0.12 * math.sin(2 * math.pi * 360 * t)
                       + 0.05 * math.sin(2 * math.pi * 540 * t))
            a.append(int(v * 32767))
        base[rate] = a.tobytes()
    total = 0.0
    for i in range(start, start + n):
        rate = rates[i % len(rates)]
        seconds = 3 + (i * 5) % 7
        data = bytearray(base[rate] * seconds)
        data[0:2] = (i % 30000).to_bytes(2, "little", signed=True)  # distinct content per file
        d = os.path.join(root, f"spk{i % 20:02d}")
        os.makedirs(d, exist_ok=True)
        with wave.open(os.path.join(d, f"utt{i:04d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(bytes(data))
        total += seconds
    return total


def stage_seconds(out):
    summary = json.loads(out)
    return {s["name"]: (s["seconds"], s.get("items_processed", 0), s.get("items_reused", 0))
            for s in summary["stages"]}


def pipeline_bench(args):
    ws = os.path.join(args.work, "e2e")
    shutil.rmtree(ws, ignore_errors=True)
    wavs = os.path.join(ws, "wavs")
    audio_s = make_wavs(wavs, args.wavs)
    write_workspace(
        ws,
        "name: e2e\nsources:\n"
        "  - {name: corpus, label: bonafide, root: wavs, speaker: {regex: '^(spk[0-9]+)/'}}\n"
        "stages:\n"
        "  scan: {kind: scan_corpus}\n"
        "  meta: {kind: build_metadata, needs: [scan]}\n"
        "  chunk: {kind: chunk_audio, needs: [meta], params: {trim: true, crop: first}}\n",
    )
    time.sleep(0.2)
    b = args.brspeech
    res = {"files": args.wavs, "audio_s": audio_s, "load_start": load()}
    t = time.perf_counter()
    res["first"] = stage_seconds(sh([b, "run", "--json"], ws).stdout)
    res["first_wall"] = time.perf_counter() - t
    # Two more files, of new content.
    extra = os.path.join(ws, "extra")
    make_wavs(extra, 2, start=args.wavs)
    for i, (d, _, files) in enumerate(sorted(os.walk(extra))):
        for f in files:
            shutil.copy(os.path.join(d, f), os.path.join(wavs, "spk00", f"added{i}_{f}"))
    time.sleep(0.2)
    t = time.perf_counter()
    res["added"] = stage_seconds(sh([b, "run", "--json"], ws).stdout)
    res["added_wall"] = time.perf_counter() - t
    res["noop"], _ = timed([b, "run"], ws, repeats=args.repeats)
    res["load_end"] = load()
    return res


def report(scan, e2e):
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", ""]
    if scan:
        f = scan["floor"]
        lines += [
            f"### Scan of {scan['files']:,} small files (median of {len(scan['floor_all'])})",
            "",
            f"load average {scan['load_start']:.2f} at the start, {scan['load_end']:.2f} at the end",
            "",
            "| case | wall s | x floor | all runs (s) |",
            "|---|---:|---:|---|",
        ]
        for key, name in [
            ("floor", "`find -printf %s` (readdir + stat, the floor)"),
            ("cold", "brspeech run, cold (no cache: every file hashed)"),
            ("noop", "brspeech run, warm no-op (stage cached)"),
            ("forced", "brspeech run --force scan, warm (walk + fingerprint + manifest)"),
            ("one_changed", "brspeech run after one file changed, warm"),
        ]:
            all_runs = ", ".join(f"{x:.2f}" for x in scan[key + "_all"])
            lines.append(f"| {name} | {scan[key]:.2f} | {scan[key] / f:.2f} | {all_runs} |")
        if scan["gen"]:
            lines += ["", f"(generating the files took {scan['gen']:.1f} s)"]
        lines.append("")
    if e2e:
        lines += [
            f"### Corpus stages end to end: {e2e['files']} WAV files, {e2e['audio_s']:.0f} audio-seconds",
            "",
            f"load average {e2e['load_start']:.2f} at the start, {e2e['load_end']:.2f} at the end",
            "",
            "| run | stage | seconds | items processed | items reused | audio-s / wall-s |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for run in ("first", "added"):
            for stage in ("scan", "meta", "chunk"):
                s, p, r = e2e[run][stage]
                rate = f"{e2e['audio_s'] / s:,.0f}" if run == "first" and stage == "chunk" else ""
                lines.append(f"| {run} | {stage} | {s:.2f} | {p} | {r} | {rate} |")
        lines += [
            "",
            f"whole first run {e2e['first_wall']:.2f} s; after adding 2 files {e2e['added_wall']:.2f} s; "
            f"no-op run {e2e['noop']:.3f} s",
            "",
        ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--brspeech", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--files", type=int, default=int(os.environ.get("BENCH_SCAN_FILES", 450_000)))
    ap.add_argument("--wavs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["scan", "e2e"])
    args = ap.parse_args()
    args.brspeech = os.path.abspath(args.brspeech)
    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    scan = scan_bench(args) if args.only in (None, "scan") else None
    e2e = pipeline_bench(args) if args.only in (None, "e2e") else None
    text = report(scan, e2e)
    print(text)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
