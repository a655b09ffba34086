"""PyTorch side of the model CPU benchmark: Hugging Face Wav2Vec2Model (wav2vec2-base
architecture, random weights) forward on 4 x 64,600 samples, and the AASIST back end
(aasist_spec.py, D=768) forward+backward on a batch of 4 x 201 frames. Prints one JSON object.

usage: bench_torch.py THREADS ITERS
       bench_torch.py extract DEVICE DTYPE BATCH BATCHES base|xlsr
(the second form measures feature extraction: normalisation, Wav2Vec2Model under autocast for
bf16/f16, f16 features copied to the host, as the brspeech Extractor does)
"""

import json
import statistics
import sys
import time

import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aasist_spec import AasistSpec


def timed(fn, iters, warmup=2):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return {"min_s": min(out), "median_s": statistics.median(out), "runs_s": out}


def main():
    threads, iters = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    w2v = Wav2Vec2Model(Wav2Vec2Config()).eval()
    wave = torch.randn(4, 64600)

    def w2v_forward():
        with torch.no_grad():
            x = (wave - wave.mean(-1, keepdim=True)) / torch.sqrt(wave.var(-1, unbiased=False, keepdim=True) + 1e-7)
            return w2v(x).last_hidden_state

    aasist = AasistSpec(768).train()
    feats = torch.randn(4, 201, 768)
    labels = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    pos_weight = torch.tensor([0.8333333])

    def aasist_step():
        for p in aasist.parameters():
            p.grad = None
        loss = torch.nn.functional.binary_cross_entropy_with_logits(aasist(feats), labels, pos_weight=pos_weight)
        loss.backward()

    aasist_eval = AasistSpec(768).eval()

    def aasist_forward():
        with torch.no_grad():
            return aasist_eval(feats)

    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "w2v_base_forward_4x64600": timed(w2v_forward, iters),
        "aasist_fwd_bwd_4x201x768": timed(aasist_step, iters * 4),
        "aasist_eval_forward_4x201x768": timed(aasist_forward, iters * 4),
    }
    print(json.dumps(result))


def xlsr_300m():
    return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, mask_time_prob=0.075)


def extract(device, dtype, batch, batches, layout):
    torch.manual_seed(0)
    cfg = xlsr_300m() if layout == "xlsr" else Wav2Vec2Config()
    model = Wav2Vec2Model(cfg).to(device).eval()
    wave = torch.randn(batch, 64600)
    low = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]

    def run():
        with torch.no_grad():
            x = wave.to(device)
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-7)
            with torch.autocast(device_type=device.split(":")[0], dtype=low or torch.float32, enabled=low is not None):
                h = model(x).last_hidden_state
            return h.to(torch.float16).cpu()

    for _ in range(2):
        run()
    t0 = time.perf_counter()
    for _ in range(batches):
        run()
    secs = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(json.dumps({"impl": "transformers", "model": layout, "device": device, "device_name": name, "dtype": dtype,
                      "batch": batch, "batches": batches, "seconds": secs, "clips_per_s": batch * batches / secs}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
