"""Summary of a GPU run (benches/gpu/run.sh): reads OUT/raw/*.out (JSON lines of the bench
binary and bench_torch.py), OUT/steps.jsonl and the logs, and writes OUT/results.json (every
row, by step) and OUT/summary.md (the tables of docs/BENCHMARKS.md "GPU", ready to paste).

usage: summarize.py OUT
Standard library only (runs with whatever python3 the GPU machine has).
"""

import glob
import json
import os
import re
import sys

SEED_EPOCH = "about 2 h per epoch, 7-8 GB (the seed's report)"


def load_rows(out):
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, "raw", "*.out"))):
        name = os.path.basename(path)[:-4]
        found = []
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        pass
        rows[name] = found
    return rows


def load_steps(out):
    steps = []
    path = os.path.join(out, "steps.jsonl")
    if os.path.exists(path):
        for line in open(path):
            try:
                steps.append(json.loads(line))
            except ValueError:
                pass
    return steps


def read(path, limit=None):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return ""
    return text if limit is None else text[-limit:]


def gib(b):
    return "–" if b is None else f"{b / 2**30:.2f} GiB"


def memory(mem, torch_too=False):
    """NVML process memory when the driver lists the process, else the device's used memory
    above the baseline read before the process touched CUDA; PyTorch's allocator peak too."""
    if not mem:
        return "–"
    if mem.get("nvml_process_bytes") is not None:
        text = f"{gib(mem['nvml_process_bytes'])} (process)"
    elif mem.get("nvml_device_delta_bytes") is not None:
        text = f"{gib(mem['nvml_device_delta_bytes'])} (device delta)"
    else:
        text = "–"
    if torch_too and mem.get("torch_max_allocated_bytes") is not None:
        text += f"; allocator peak {gib(mem['torch_max_allocated_bytes'])}"
    return text


def fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def all_rows(rows, **match):
    out = []
    for r in (r for rs in rows.values() for r in rs):
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def best(rs):
    ok = [r for r in rs if r.get("clips_per_s")]
    return max(ok, key=lambda r: r["clips_per_s"]) if ok else None


def section_env(rows, out, md):
    rt_b = next(iter(all_rows(rows, kind="runtime", impl="brspeech")), {})
    rt_p = next(iter(all_rows(rows, kind="runtime", impl="pytorch")), {})
    query = read(os.path.join(out, "raw", "nvidia-smi-query.out")).strip().splitlines()
    md.append("## Machine and runtime\n")
    if len(query) >= 2:
        md.append(f"- card (nvidia-smi): `{query[1].strip()}` ({query[0].strip()})")
    if rt_p:
        md.append(f"- PyTorch side: torch {rt_p.get('torch')}, transformers {rt_p.get('transformers')}, "
                  f"CUDA {rt_p.get('cuda_runtime')}, cuDNN {rt_p.get('cudnn')}, device `{rt_p.get('device_name')}` "
                  f"(capability {rt_p.get('capability')}); TF32 matmul {rt_p.get('tf32_matmul')}, "
                  f"TF32 cuDNN {rt_p.get('tf32_cudnn')}, cudnn.benchmark {rt_p.get('cudnn_benchmark')}")
    smoke = next(iter(all_rows(rows, kind="runtime_smoke")), {})
    if rt_b:
        md.append(f"- brspeech side: {rt_b.get('summary')}; has_cudart {rt_b.get('has_cudart')}, "
                  f"Cuda::is_available {rt_b.get('cuda_is_available')}, devices {rt_b.get('cuda_device_count')}, "
                  f"cuDNN {rt_b.get('cudnn_is_available')}; a matmul on `{smoke.get('device', '?')}` "
                  f"{'gave the right result' if smoke.get('matmul_ok') else 'FAILED or did not run'}")
    b = read(os.path.join(out, "raw", "build.json"))
    if b:
        try:
            info = json.loads(b)
            md.append(f"- binaries: commit `{info.get('commit', '?')[:12]}`{' (dirty tree)' if info.get('dirty') else ''}, "
                      f"built against `{info.get('libtorch')}`")
        except ValueError:
            pass
    version = read(os.path.join(out, "raw", "brspeech-version.out")).strip()
    md.append(f"- `brspeech --version; brspeech doctor`: {('```' + chr(10) + version + chr(10) + '```') if version else '(no output)'}")
    md.append("")


def section_steps(steps, md):
    md.append("## Steps\n")
    md.append("| step | status | seconds | limit |")
    md.append("|---|---|---|---|")
    for s in steps:
        md.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {s['limit_s']} |")
    total = sum(s.get("seconds") or 0 for s in steps)
    md.append(f"\nSum of step times: {total} s.\n")


def section_parity(rows, out, md):
    md.append("## Parity\n")
    log = read(os.path.join(out, "raw", "parity-tests.out")) + read(os.path.join(out, "logs", "parity-tests.log"))
    results = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", log)
    cfg = next(iter(all_rows(rows, kind="run_config")), {})
    dev = ("CUDA (`BRSPEECH_TEST_DEVICE=cuda`, TF32 off)" if str(cfg.get("device", "")).startswith("cuda")
           else f"`{cfg.get('device', '?')}`")
    if results:
        r = results[-1]
        md.append(f"- `tests/model_parity.rs` on {dev}: **{r[0]}**, {r[1]} passed, {r[2]} failed "
                  "(fixture tolerances: forward atol 1e-5 + rtol 1e-4, gradients atol 1e-6 + rtol 1e-3 with the "
                  "README's fallback; unchanged from the CPU).")
        worst = re.findall(r"^(backend .*|eval loss .*|train mode: .*|tiny wav2vec2 .*)$", log, re.M)
        for w in worst:
            md.append(f"  - {w}")
    else:
        md.append("- `tests/model_parity.rs`: no test result (see logs/parity-tests.log).")
    spec = all_rows(rows, kind="aasist_spec_check")
    if spec:
        md.append(f"- `aasist_spec.py` (the PyTorch baseline) against the fixtures: {'ok' if spec[0].get('ok') else 'FAILED'}")
    par = all_rows(rows, kind="parity")
    if par:
        md.append("\nf32 and bf16 autocast on the device against the fixtures' float32 values. f32 criterion: "
                  "elementwise |x−f| ≤ 1e-5 + 1e-4·|f| (ratio ≤ 1). bf16 criterion: relative L2 error "
                  "‖x−f‖₂/‖f‖₂ ≤ 1e-2 per tensor; rel max = max|x−f| / max|f|. PyTorch's own bf16 error on the "
                  "same fixtures (Hugging Face Wav2Vec2Model, `aasist_spec.py`) is the reference point.\n")
        md.append("| case | tensor | brspeech f32 ratio | brspeech bf16 rel L2 / rel max | PyTorch bf16 rel L2 / rel max | "
                  "bf16 rel L2 ≤ 1e-2 | brspeech ÷ PyTorch bf16 rel L2 |")
        md.append("|---|---|---|---|---|---|---|")
        keys = []
        for r in par:
            k = (r["case"], r["tensor"])
            if k not in keys:
                keys.append(k)
        for case, tensor in keys:
            def get(impl, dtype):
                return next((r for r in par if r["case"] == case and r["tensor"] == tensor and r["impl"] == impl
                             and r["dtype"] == dtype), None)
            f32, b16, p16 = get("brspeech", "f32"), get("brspeech", "bf16"), get("pytorch", "bf16")
            eff = f" ({b16['dtype_effective']})" if b16 and b16.get("dtype_effective") != "bf16" else ""
            md.append(f"| {case} | {tensor} | {fmt(f32 and f32.get('tolerance_ratio'), '.3f')} | "
                      f"{fmt(b16 and b16.get('rel_l2'), '.2e')} / {fmt(b16 and b16.get('rel_max'), '.2e')}{eff} | "
                      f"{fmt(p16 and p16.get('rel_l2'), '.2e')} / {fmt(p16 and p16.get('rel_max'), '.2e')} | "
                      f"{'yes' if b16 and b16.get('rel_l2', 1) <= 1e-2 else 'no'} | "
                      f"{fmt(b16['rel_l2'] / p16['rel_l2'] if b16 and p16 and p16.get('rel_l2') else None, '.2f')} |")
    md.append("")


def section_extract(rows, md):
    ex = all_rows(rows, kind="extract")
    md.append("## Extraction throughput\n")
    if not ex:
        md.append("(no extraction results)\n")
        return
    samples = ex[0].get("samples")
    md.append(f"Clips of {samples:,} samples, random weights (the same Hugging Face folder on both sides), f16 "
              "features copied to the host; clips/s at the best batch size. Memory: NVML, after the sweep up to "
              "that batch (caching allocators keep their peak).\n")
    md.append("| model | dtype | brspeech clips/s (batch) | PyTorch clips/s (batch) | ratio | brspeech memory | PyTorch memory |")
    md.append("|---|---|---|---|---|---|---|")
    combos = []
    for r in ex:
        if (r["model"], r["dtype"]) not in combos:
            combos.append((r["model"], r["dtype"]))
    order = {"base": 0, "xlsr": 1, "f32": 0, "bf16": 1, "f16": 2}
    combos.sort(key=lambda c: (order.get(c[0], 9), order.get(c[1], 9)))
    for model, dtype in combos:
        b = best([r for r in ex if r["impl"] == "brspeech" and r["model"] == model and r["dtype"] == dtype])
        p = best([r for r in ex if r["impl"] == "pytorch" and r["model"] == model and r["dtype"] == dtype])
        ratio = f"{b['clips_per_s'] / p['clips_per_s']:.3f}" if b and p else "–"
        layers = (b or p or {}).get("layers")
        md.append(f"| {model} ({layers} layers) | {dtype} | {fmt(b and b['clips_per_s'])} ({b and b['batch']}) | "
                  f"{fmt(p and p['clips_per_s'])} ({p and p['batch']}) | {ratio} | {memory(b and b.get('memory'))} | "
                  f"{memory(p and p.get('memory'), True)} |")
    md.append("\nEvery batch size:\n")
    md.append("| model | dtype | batch | brspeech clips/s | PyTorch clips/s | ratio | brspeech s/batch | PyTorch s/batch |")
    md.append("|---|---|---|---|---|---|---|---|")
    for model, dtype in combos:
        sizes = sorted({r["batch"] for r in ex if r["model"] == model and r["dtype"] == dtype})
        for n in sizes:
            b = next((r for r in ex if r["impl"] == "brspeech" and r["model"] == model and r["dtype"] == dtype and r["batch"] == n), {})
            p = next((r for r in ex if r["impl"] == "pytorch" and r["model"] == model and r["dtype"] == dtype and r["batch"] == n), {})
            ratio = f"{b['clips_per_s'] / p['clips_per_s']:.3f}" if b.get("clips_per_s") and p.get("clips_per_s") else "–"
            md.append(f"| {model} | {dtype} | {n} | {fmt(b.get('clips_per_s')) if not b.get('error') else 'error'} | "
                      f"{fmt(p.get('clips_per_s')) if not p.get('error') else 'error'} | {ratio} | "
                      f"{fmt(b.get('s_per_batch'), '.4f')} | {fmt(p.get('s_per_batch'), '.4f')} |")
    xc = all_rows(rows, kind="xcheck")
    if xc:
        md.append("\nSame weights, same 4 clips: brspeech's f16 features against transformers' (each side in the "
                  "named precision; f32 with each library's default TF32 settings):\n")
        md.append("| model | dtype | rel L2 | rel max | max abs |")
        md.append("|---|---|---|---|---|")
        for r in xc:
            md.append(f"| {r['model']} | {r['dtype']} | {r['rel_l2']:.2e} | {r['rel_max']:.2e} | {r['max_abs']:.2e} |")
    md.append("")


def train_table(rs, md):
    md.append("| side | code | dtype | D | batch | steps/s | items/s | epoch (444,274 clips) | memory |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in rs:
        if r.get("error"):
            md.append(f"| {r['impl']} | {r.get('code', '')} | {r.get('dtype')} | {r.get('dim', '')} | {r.get('batch')} | "
                      f"error: {r['error'][:80]} | | | {memory(r.get('memory'), True)} |")
            continue
        dtype = r["dtype"] if r["dtype"] == r["dtype_effective"] else f"{r['dtype']} (ran {r['dtype_effective']})"
        md.append(f"| {r['impl']} | {r['code']} | {dtype} | {r['dim']} | {r['batch']} | "
                  f"{r['steps_per_s']:.2f} | {r['items_per_s']:.1f} | {r['epoch_hours']:.2f} h | "
                  f"{memory(r.get('memory'), True)} |")


def section_train(rows, md):
    tr = all_rows(rows, kind="train")
    md.append("## Training steps\n")
    if not tr:
        md.append("(no training results)\n")
        return
    md.append("Steps/s over the timed steps (after the warm-up), the loss read every few steps on both sides. "
              "brspeech `model::train::train` includes its loader thread and the host-to-device copy of every "
              "batch; the PyTorch side copies each batch from the host too. Epoch time = ⌊444,274 / batch⌋ steps "
              f"at the measured rate, training steps only (no validation, no data reading); the seed: {SEED_EPOCH}.\n")
    frozen = sorted(all_rows(rows, kind="train", mode="frozen"), key=lambda r: (-(r.get("dim") or 0), r.get("batch") or 0, r["impl"]))
    if frozen:
        md.append("### Frozen SSL (AASIST on cached features [B, 201, D])\n")
        train_table(frozen, md)
        md.append("\nRatios (brspeech `train` steps/s ÷ PyTorch):\n")
        md.append("| D | batch | vs PyTorch default Adam (foreach) | vs PyTorch single-tensor Adam |")
        md.append("|---|---|---|---|")
        for dim in sorted({r.get("dim") for r in frozen if r.get("dim")}, reverse=True):
            for batch in sorted({r["batch"] for r in frozen if r.get("dim") == dim}):
                b = next((r for r in frozen if r["impl"] == "brspeech" and r["dim"] == dim and r["batch"] == batch and r.get("steps_per_s")), None)
                pd = next((r for r in frozen if r["impl"] == "pytorch" and r["dim"] == dim and r["batch"] == batch and r.get("adam") == "default" and r.get("steps_per_s")), None)
                ps = next((r for r in frozen if r["impl"] == "pytorch" and r["dim"] == dim and r["batch"] == batch and r.get("adam") == "single" and r.get("steps_per_s")), None)
                md.append(f"| {dim} | {batch} | {fmt(b and pd and b['steps_per_s'] / pd['steps_per_s'], '.3f')} | "
                          f"{fmt(b and ps and b['steps_per_s'] / ps['steps_per_s'], '.3f')} |")
    seed4 = [r for r in frozen if r.get("batch") == 4 and r.get("steps_per_s")]
    fine4 = [r for r in all_rows(rows, kind="train", mode="finetune") if r.get("batch") == 4 and r.get("steps_per_s")]
    if seed4 or fine4:
        md.append("\n### Epoch projection at the seed's batch size 4 (444,274 clips)\n")
        md.append(f"Seed: {SEED_EPOCH}.\n")
        md.append("| mode | D | side | code | dtype | epoch | memory |")
        md.append("|---|---|---|---|---|---|---|")
        for r in seed4 + fine4:
            md.append(f"| {r['mode']} | {r['dim']} | {r['impl']} | {r['code']} | {r['dtype_effective']} | "
                      f"{r['epoch_hours']:.2f} h ({r['epoch_hours'] * 60:.0f} min) | {memory(r.get('memory'), True)} |")
    fine = sorted(all_rows(rows, kind="train", mode="finetune"),
                  key=lambda r: (r.get("dtype") != "f32", r["impl"], r.get("code", "")))
    if fine:
        md.append("\n### Finetune (wav2vec2-base + AASIST on waveforms, SSL in train mode)\n")
        train_table(fine, md)
        md.append("\nRatios (brspeech steps/s ÷ PyTorch default Adam, same dtype):\n")
        md.append("| brspeech code | dtype | batch | ratio |")
        md.append("|---|---|---|---|")
        for b in (r for r in fine if r["impl"] == "brspeech" and r.get("steps_per_s")):
            p = next((r for r in fine if r["impl"] == "pytorch" and r.get("adam") == "default" and r.get("steps_per_s")
                      and r["dtype"] == b["dtype"] and r["batch"] == b["batch"]), None)
            md.append(f"| {b['code']} | {b['dtype']} | {b['batch']} | "
                      f"{fmt(p and b['steps_per_s'] / p['steps_per_s'], '.3f')} |")
    md.append("")


def section_demo(out, steps, md):
    md.append("## Demo pipeline\n")
    st = next((s for s in steps if s["step"] == "demo"), None)
    md.append(f"- status: {st['status'] if st else 'not run'}")
    text = read(os.path.join(out, "raw", "demo.out"), 1500).strip()
    if text:
        md.append("```\n" + text + "\n```")
    md.append("")


def main():
    out = sys.argv[1]
    rows = load_rows(out)
    steps = load_steps(out)
    json.dump({"steps": steps, "rows": rows}, open(os.path.join(out, "results.json"), "w"), indent=1)
    cfg = next(iter(all_rows(rows, kind="run_config")), {})
    md = ["# GPU run summary\n"]
    if cfg:
        md.append(f"Run of {cfg.get('started')} on `{cfg.get('device')}`; sizes: {json.dumps(cfg)}\n")
    section_env(rows, out, md)
    section_parity(rows, out, md)
    section_extract(rows, md)
    section_train(rows, md)
    section_demo(out, steps, md)
    section_steps(steps, md)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(os.path.join(out, "summary.md"))


if __name__ == "__main__":
    main()
