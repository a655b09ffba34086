"""Python baselines for the chunk benchmark: what the reference preprocessing does per file.

`soundfile` (default): load with soundfile (libsndfile), keep channel 0, resample to 16 kHz
with soxr (the SoX resampler, HQ: the library behind sox's `rate` effect that the reference
calls), keep the first 64,600 samples or repeat-pad shorter clips.

`torchaudio`: the reference's own libraries: `torchaudio.load` (torchaudio 2.11, decoding
through torchcodec), keep channel 0, `torchaudio.functional.resample` to 16 kHz, repeat-pad. The
reference resamples with the sox `rate` effect of torchaudio <= 2.8, which no installable
torchaudio has any more; `functional.resample` is torchaudio's own resampler.

One process, one thread, files in order.

Usage: python baseline.py LIST_FILE [REPEATS] [soundfile|torchaudio]
Prints one JSON line per repeat: {"audio_s": ..., "wall_s": ..., "cpu_s": ...}.
"""

import json
import math
import sys
import time

import numpy as np

N = 64_600
TARGET = 16_000


def chunk_soundfile(path):
    import soundfile as sf
    import soxr

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    x = data[:, 0]
    if rate != TARGET:
        x = soxr.resample(x, rate, TARGET, quality="HQ")
    if len(x) >= N:
        clip = x[:N]
    else:
        clip = np.tile(x, math.ceil(N / len(x)))[:N]
    return clip, len(data) / rate


def chunk_torchaudio(path):
    import torch
    import torchaudio

    data, rate = torchaudio.load(path)
    x = data[0]
    if rate != TARGET:
        x = torchaudio.functional.resample(x, rate, TARGET)
    if len(x) >= N:
        clip = x[:N]
    else:
        clip = x.repeat(math.ceil(N / len(x)))[:N]
    return clip.numpy(), data.shape[1] / rate


def main():
    paths = [line.strip() for line in open(sys.argv[1]) if line.strip()]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    impl = sys.argv[3] if len(sys.argv) > 3 else "soundfile"
    chunk = {"soundfile": chunk_soundfile, "torchaudio": chunk_torchaudio}[impl]
    if impl == "torchaudio":
        import torch

        torch.set_num_threads(1)
    for _ in range(repeats):
        start = time.perf_counter()
        cpu = time.process_time()
        audio_s = 0.0
        clips = []
        for p in paths:
            clip, seconds = chunk(p)
            clips.append(clip)
            audio_s += seconds
        batch = np.stack(clips)
        assert batch.shape == (len(paths), N)
        wall_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu
        print(json.dumps({"audio_s": audio_s, "wall_s": wall_s, "cpu_s": cpu_s}), flush=True)


if __name__ == "__main__":
    main()
