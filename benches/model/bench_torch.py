"""PyTorch side of the model benchmarks (the Rust side is the `model` bench binary, main.rs).
Every mode prints JSON lines on stdout (progress on stderr).

  bench_torch.py cpu THREADS ITERS
      wav2vec2-base (random weights) forward on 4 x 64,600 samples, AASIST (aasist_spec.py, D=768)
      forward+backward and eval forward on 4 x 201 frames (benches/model/run.sh).
  bench_torch.py extract --device D --models base,xlsr --dtypes f32,bf16 --batches-base 16,32 ...
      feature extraction as the brspeech Extractor does it: upload, per-clip normalisation,
      Hugging Face Wav2Vec2Model (sdpa attention) under autocast for bf16/f16 on CUDA, f16
      features copied to the host; clips/s per batch size, GPU memory after each.
  bench_torch.py train-frozen / train-finetune ...
      training steps: AASIST on cached-feature-shaped inputs, or Wav2Vec2Model + AASIST on
      waveforms with the SSL in train mode; torch.optim.Adam(lr 5e-6, weight_decay 5e-7).
  bench_torch.py check --device D --fixtures DIR
      versions and devices, aasist_spec.py against the fixtures (f32, CPU), and the fixtures
      under bf16 autocast on D (the reference point for brspeech's `parity-bf16`).
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aasist_spec import AasistSpec  # noqa: E402

CLIP_SAMPLES = 64600
EPOCH_CLIPS = 444274
T0 = time.perf_counter()


def emit(obj):
    print(json.dumps(obj), flush=True)


def progress(msg):
    print(f"[{time.perf_counter() - T0:7.2f}s] {msg}", file=sys.stderr, flush=True)


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class GpuMemory:
    """NVML readings: this process's GPU memory (pynvml when installed, else nvidia-smi) and the
    device's used memory (pynvml, else the driver's libnvidia-ml.so.1 through ctypes) against a
    baseline read before this process touched CUDA."""

    def __init__(self):
        self.pynvml = self.lib = self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.pynvml = pynvml
        except Exception:
            try:
                lib = ctypes.CDLL("libnvidia-ml.so.1")
                handle = ctypes.c_void_p()
                if lib.nvmlInit_v2() == 0 and lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0:
                    self.lib, self.handle = lib, handle
            except OSError:
                pass
        self.smi = shutil.which("nvidia-smi")
        self.baseline = self.device_used()

    def device_used(self):
        try:
            if self.pynvml:
                return int(self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
            if self.lib:
                m = _NvmlMemory()
                if self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) == 0:
                    return int(m.used)
        except Exception:
            pass
        return None

    def process_bytes(self):
        pid = os.getpid()
        if self.pynvml:
            try:
                procs = self.pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
                used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
                return int(sum(used)) if used else None
            except Exception:
                pass
        if not self.smi:
            return None
        try:
            out = subprocess.run([self.smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
        except Exception:
            return None
        used = [int(line.split(",")[1]) * 2**20 for line in out.strip().splitlines()
                if line.count(",") == 1 and line.split(",")[0].strip() == str(pid)]
        return sum(used) if used else None

    def snapshot(self, device):
        used = self.device_used()
        snap = {
            "nvml_process_bytes": self.process_bytes(),
            "nvml_device_used_bytes": used,
            "nvml_device_baseline_bytes": self.baseline,
            "nvml_device_delta_bytes": max(used - self.baseline, 0) if used is not None and self.baseline is not None else None,
        }
        if device.startswith("cuda"):
            snap["torch_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            snap["torch_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
        return snap


def reset_memory(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def low_dtype(name, device):
    """The autocast dtype, or None for f32 (and, as on the Rust side, on the CPU)."""
    if not device.startswith("cuda"):
        return None
    return {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def autocast(device, low):
    return torch.autocast(device_type=device.split(":")[0], dtype=low or torch.bfloat16, enabled=low is not None)


def normalize(x):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-7)


def xlsr_300m_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, mask_time_prob=0.075)


def use_sdpa(cfg):
    try:
        cfg._attn_implementation = "sdpa"
    except Exception as e:  # the attribute's setter differs between transformers versions
        progress(f"note: could not select sdpa attention explicitly ({e}); using the default")


def load_ssl(ssl_dir, model, layers=None):
    """Wav2Vec2Model with sdpa attention: from a Hugging Face folder (the same random weights
    as the Rust side) or randomly initialised from the named architecture."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if ssl_dir:
        if not os.path.isfile(os.path.join(ssl_dir, "config.json")):
            raise SystemExit(f"error: {ssl_dir} is not a Hugging Face folder (no config.json); write it with "
                             "`model-bench write-ssl` first")
        m = Wav2Vec2Model.from_pretrained(ssl_dir, attn_implementation="sdpa")
    else:
        cfg = xlsr_300m_config() if model == "xlsr" else Wav2Vec2Config()
        if layers:
            cfg.num_hidden_layers = layers
        use_sdpa(cfg)
        m = Wav2Vec2Model(cfg)
    return m.float()


def versions():
    import transformers

    v = {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0],
         "cuda_available": torch.cuda.is_available(), "cuda_runtime": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
         "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
         "cudnn_benchmark": torch.backends.cudnn.benchmark, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v.update(device_name=p.name, capability=f"{p.major}.{p.minor}", device_memory_bytes=p.total_memory,
                 device_count=torch.cuda.device_count())
    return v


# ---------------------------------------------------------------- CPU benchmark (run.sh)

def timed(fn, iters, warmup=2):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return {"min_s": min(out), "median_s": statistics.median(out), "runs_s": out}


def cpu(args):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    threads, iters = args.threads, args.iters
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    w2v = Wav2Vec2Model(Wav2Vec2Config()).eval()
    wave = torch.randn(4, 64600)

    def w2v_forward():
        with torch.no_grad():
            return w2v(normalize(wave)).last_hidden_state

    aasist = AasistSpec(768).train()
    feats = torch.randn(4, 201, 768)
    labels = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    pos_weight = torch.tensor([0.8333333])

    def aasist_step():
        for p in aasist.parameters():
            p.grad = None
        loss = F.binary_cross_entropy_with_logits(aasist(feats), labels, pos_weight=pos_weight)
        loss.backward()

    aasist_eval = AasistSpec(768).eval()

    def aasist_forward():
        with torch.no_grad():
            return aasist_eval(feats)

    emit({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "w2v_base_forward_4x64600": timed(w2v_forward, iters),
        "aasist_fwd_bwd_4x201x768": timed(aasist_step, iters * 4),
        "aasist_eval_forward_4x201x768": timed(aasist_forward, iters * 4),
    })


# ---------------------------------------------------------------- extraction

def extract_xcheck(model, device, low, path):
    """Runs this side on the Rust side's cross-check input and compares the f16 features."""
    from safetensors.torch import load_file

    ref = load_file(path)
    with torch.no_grad(), autocast(device, low):
        h = model(normalize(ref["waveform"].to(device))).last_hidden_state
    ours = h.to(torch.float16).cpu().double()
    theirs = ref["features"].double()
    d = ours - theirs
    return {"rel_l2": (d.norm() / theirs.norm()).item(), "rel_max": (d.abs().max() / theirs.abs().max()).item(),
            "max_abs": d.abs().max().item()}


def extract(args):
    mem = GpuMemory()
    device = args.device
    for model_name in args.models.split(","):
        batches = sorted(int(b) for b in getattr(args, f"batches_{model_name}").split(","))
        ssl_dir = os.path.join(args.ssl_root, model_name) if args.ssl_root else None
        reset_memory(device)
        t0 = time.perf_counter()
        model = load_ssl(ssl_dir, model_name, args.layers).to(device).eval()
        sync(device)
        load_s = time.perf_counter() - t0
        for dtype in args.dtypes.split(","):
            # The weights stay; what the previous precision's sweep cached is released.
            reset_memory(device)
            low = low_dtype(dtype, device)
            cfg = model.config
            progress(f"extract {model_name} ({cfg.num_hidden_layers} layers, D={cfg.hidden_size}) on {device} in {dtype}: "
                     f"loaded in {load_s:.1f}s")
            base = {"kind": "extract", "impl": "pytorch", "model": model_name, "layers": cfg.num_hidden_layers,
                    "dim": cfg.hidden_size, "device": device, "dtype": dtype,
                    "dtype_effective": dtype if low else "f32", "samples": args.samples, "load_s": load_s,
                    "attn_implementation": getattr(cfg, "_attn_implementation", None)}
            for batch in batches:
                wave = torch.randn(batch, args.samples)

                def run():
                    with torch.no_grad():
                        x = normalize(wave.to(device))
                        with autocast(device, low):
                            h = model(x).last_hidden_state
                        return h.to(torch.float16).cpu()

                row = dict(base, batch=batch)
                try:
                    for _ in range(args.warmup):
                        run()
                    t = time.perf_counter()
                    for _ in range(args.iters):
                        frames = run().shape[1]
                    secs = time.perf_counter() - t
                except torch.OutOfMemoryError as e:
                    row.update(error=str(e).splitlines()[0], oom=True, memory=mem.snapshot(device))
                    progress(f"  batch {batch}: out of memory")
                    emit(row)
                    break
                clips = batch * args.iters / secs
                row.update(iters=args.iters, warmup=args.warmup, seconds=secs, s_per_batch=secs / args.iters,
                           clips_per_s=clips, frames_out=frames, memory=mem.snapshot(device))
                progress(f"  batch {batch}: {clips:.1f} clips/s")
                emit(row)
            if args.xcheck_dir:
                path = os.path.join(args.xcheck_dir, f"xcheck_{model_name}_{dtype}.safetensors")
                if os.path.exists(path):
                    r = extract_xcheck(model, device, low, path)
                    r.update(kind="xcheck", model=model_name, dtype=dtype, device=device, file=path)
                    progress(f"  cross-check with brspeech's features: rel_l2 {r['rel_l2']:.2e}")
                    emit(r)
                else:
                    progress(f"  no cross-check file {path}")
        del model
    reset_memory(device)


# ---------------------------------------------------------------- training

POOL = 8


def labels_for(k, batch, device):
    y = [1.0 if (k * batch + j) % 6 == 0 else 0.0 for j in range(batch)]
    return torch.tensor(y).view(batch, 1).to(device)


def time_steps(step, warmup, iters, device):
    """`warmup` untimed steps, then `iters` (a multiple of `warmup`) timed ones, reading the loss
    (a synchronisation) every `warmup` steps as the Rust side's step events do."""
    every = max(warmup, 1)
    timed = -(-iters // every) * every
    for k in range(every):
        loss = step(k)
    last = loss.item()
    t = time.perf_counter()
    for k in range(timed):
        loss = step(every + k)
        if (k + 1) % every == 0:
            last = loss.item()
    sync(device)
    return timed, time.perf_counter() - t, last


def make_adam(params, variant):
    kw = {"lr": 5e-6, "weight_decay": 5e-7, "betas": (0.9, 0.999), "eps": 1e-8}
    if variant == "single":
        kw["foreach"] = False
    elif variant == "fused":
        kw["fused"] = True
    return torch.optim.Adam(params, **kw)


def train_row(args, mode, device, dtype, dim, batch, adam, steps, secs, last, params, mem):
    sps = steps / secs
    return {"kind": "train", "impl": "pytorch", "code": f"torch.optim.Adam ({adam})", "adam": adam, "mode": mode,
            "device": device, "dtype": dtype, "dtype_effective": dtype if low_dtype(dtype, device) else "f32",
            "dim": dim, "batch": batch, "warmup": args.warmup, "steps": steps, "seconds": secs,
            "steps_per_s": sps, "items_per_s": sps * batch, "epoch_clips": EPOCH_CLIPS,
            "epoch_steps": EPOCH_CLIPS // batch, "epoch_hours": (EPOCH_CLIPS // batch) / sps / 3600,
            "parameters": params, "last_loss": last, "memory": mem.snapshot(device)}


def train_frozen(args):
    mem = GpuMemory()
    device = args.device
    pos_weight = torch.tensor([5.0 / 6.0], device=device)
    for dim in [int(d) for d in args.dims.split(",")]:
        for batch in [int(b) for b in args.batches.split(",")]:
            for adam in args.adams.split(","):
                reset_memory(device)
                torch.manual_seed(42)
                model = AasistSpec(dim).to(device).train()
                opt = make_adam(model.parameters(), adam)
                pool = torch.randn(POOL, args.frames, dim).half()

                def step(k):
                    idx = torch.tensor([(k * batch + j) % POOL for j in range(batch)])
                    x = pool.index_select(0, idx).to(device).float()
                    y = labels_for(k, batch, device)
                    loss = F.binary_cross_entropy_with_logits(model(x), y, pos_weight=pos_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    return loss

                steps, secs, last = time_steps(step, args.warmup, args.iters, device)
                n = sum(p.numel() for p in model.parameters())
                row = train_row(args, "frozen", device, "f32", dim, batch, adam, steps, secs, last, n, mem)
                progress(f"frozen D={dim} batch {batch} adam {adam}: {row['steps_per_s']:.2f} steps/s")
                emit(row)
                del model, opt


class W2vAasistTorch(torch.nn.Module):
    """W2V_AASIST as the reference: per-clip normalisation, Wav2Vec2Model, AASIST."""

    def __init__(self, ssl):
        super().__init__()
        self.ssl = ssl
        self.backend = AasistSpec(ssl.config.hidden_size)

    def forward(self, x):
        return self.backend(self.ssl(normalize(x)).last_hidden_state)


def train_finetune(args):
    mem = GpuMemory()
    device = args.device
    pos_weight = torch.tensor([5.0 / 6.0], device=device)
    batch = args.batch
    for dtype in args.dtypes.split(","):
        for adam in args.adams.split(","):
            reset_memory(device)
            torch.manual_seed(42)
            model = W2vAasistTorch(load_ssl(args.ssl_dir, "base", args.layers)).to(device).train()
            opt = make_adam(model.parameters(), adam)
            low = low_dtype(dtype, device)
            pool = torch.randn(POOL, args.samples) * 0.1

            def step(k):
                idx = torch.tensor([(k * batch + j) % POOL for j in range(batch)])
                x = pool.index_select(0, idx).to(device)
                y = labels_for(k, batch, device)
                with autocast(device, low):
                    logits = model(x)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss

            try:
                steps, secs, last = time_steps(step, args.warmup, args.iters, device)
            except torch.OutOfMemoryError as e:
                emit({"kind": "train", "impl": "pytorch", "mode": "finetune", "dtype": dtype, "adam": adam,
                      "batch": batch, "error": str(e).splitlines()[0], "oom": True, "memory": mem.snapshot(device)})
                continue
            n = sum(p.numel() for p in model.parameters())
            row = train_row(args, "finetune", device, dtype, model.ssl.config.hidden_size, batch, adam, steps, secs,
                            last, n, mem)
            progress(f"finetune batch {batch} {dtype} adam {adam}: {row['steps_per_s']:.2f} steps/s")
            emit(row)
            del model, opt


# ---------------------------------------------------------------- checks

def check(args):
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    import aasist_spec

    emit(dict(kind="runtime", impl="pytorch", **versions()))
    fx, device = args.fixtures, args.device
    try:
        with contextlib.redirect_stdout(sys.stderr):
            aasist_spec.check(fx)
        emit({"kind": "aasist_spec_check", "ok": True})
    except AssertionError as e:
        emit({"kind": "aasist_spec_check", "ok": False, "error": str(e)})

    def compare(x, f):
        x, f = x.detach().cpu().double(), f.double()
        d = x - f
        return {"rel_l2": (d.norm() / f.norm()).item(), "rel_max": (d.abs().max() / f.abs().max()).item(),
                "tolerance_ratio": (d.abs() / (1e-5 + 1e-4 * f.abs())).max().item()}

    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    for dtype in ("f32", "bf16"):
        low = low_dtype(dtype, device)
        eff = "bf16" if low else "f32"
        for layout in ("group", "layer"):
            cfg = Wav2Vec2Config(**json.load(open(f"{fx}/ssl_tiny_{layout}_config.json")))
            use_sdpa(cfg)
            m = Wav2Vec2Model(cfg).eval()
            missing, unexpected = m.load_state_dict(load_file(f"{fx}/ssl_tiny_{layout}_weights.safetensors"), strict=False)
            assert not unexpected and all("masked_spec_embed" in k for k in missing), (missing, unexpected)
            m = m.to(device)
            io = load_file(f"{fx}/ssl_tiny_{layout}_io_eval.safetensors")
            with torch.no_grad(), autocast(device, low):
                o = m(io["input_values"].to(device), output_hidden_states=True)
            outs = [("extract_features", o.extract_features)]
            outs += [(f"hidden_states.{i}", h) for i, h in enumerate(o.hidden_states)]
            outs += [("last_hidden_state", o.last_hidden_state)]
            for name, t in outs:
                emit(dict(kind="parity", impl="pytorch", case=f"ssl_tiny_{layout}", tensor=name, device=device,
                          dtype=dtype, dtype_effective=eff, **compare(t, io[name])))
        for s, dim in (("base768", 768), ("xlsr300m", 1024)):
            a = AasistSpec(dim)
            w = load_file(f"{fx}/backend_{s}_weights.safetensors")
            a.load_state_dict({k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in w.items()})
            a = a.to(device).eval()
            io = load_file(f"{fx}/backend_{s}_io_eval.safetensors")
            seen = []
            hook = a.out_layer.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
            with torch.no_grad(), autocast(device, low):
                logits = a(io["ssl_feat"].to(device))
            hook.remove()
            for name, t in (("last_hidden", seen[0]), ("logits", logits)):
                emit(dict(kind="parity", impl="pytorch", case=f"backend_{s}", tensor=name, device=device, dtype=dtype,
                          dtype_effective=eff, **compare(t, io[name])))
    progress(f"checks on {device} done")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("threads", type=int)
    c.add_argument("iters", type=int)
    e = sub.add_parser("extract")
    e.add_argument("--device", default="cuda")
    e.add_argument("--models", default="base,xlsr")
    e.add_argument("--dtypes", default="f32,bf16")
    e.add_argument("--batches-base", default="16,32,64,128")
    e.add_argument("--batches-xlsr", default="16,32,64")
    e.add_argument("--warmup", type=int, default=2)
    e.add_argument("--iters", type=int, default=8)
    e.add_argument("--samples", type=int, default=CLIP_SAMPLES)
    e.add_argument("--ssl-root", help="folder with base/ and xlsr/ Hugging Face folders (random ones when absent)")
    e.add_argument("--layers", type=int, help="transformer depth of randomly built models")
    e.add_argument("--xcheck-dir", help="folder of brspeech's xcheck_{model}_{dtype}.safetensors files")
    f = sub.add_parser("train-frozen")
    f.add_argument("--device", default="cuda")
    f.add_argument("--dims", default="1024,768")
    f.add_argument("--batches", default="4,64")
    f.add_argument("--adams", default="default,single")
    f.add_argument("--frames", type=int, default=201)
    f.add_argument("--warmup", type=int, default=5)
    f.add_argument("--iters", type=int, default=20)
    t = sub.add_parser("train-finetune")
    t.add_argument("--device", default="cuda")
    t.add_argument("--ssl-dir", help="Hugging Face folder (default: random wav2vec2-base)")
    t.add_argument("--layers", type=int)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--dtypes", default="f32,bf16")
    t.add_argument("--adams", default="default")
    t.add_argument("--samples", type=int, default=CLIP_SAMPLES)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--iters", type=int, default=20)
    k = sub.add_parser("check")
    k.add_argument("--device", default="cuda")
    k.add_argument("--fixtures", default="tests/fixtures/parity")
    args = p.parse_args()
    {"cpu": cpu, "extract": extract, "train-frozen": train_frozen, "train-finetune": train_finetune,
     "check": check}[args.mode](args)


if __name__ == "__main__":
    main()
