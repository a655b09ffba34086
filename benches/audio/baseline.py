"""Python baseline for the chunk benchmark: what the reference preprocessing does per file.

Load with soundfile (libsndfile), keep channel 0, resample to 16 kHz with soxr (the SoX
resampler, HQ: the library behind sox's `rate` effect that the reference calls), keep the first
64,600 samples or repeat-pad shorter clips. One process, files in order.

Usage: python baseline.py LIST_FILE [REPEATS]
Prints one JSON line per repeat: {"audio_s": ..., "wall_s": ..., "cpu_s": ...}.
"""

import json
import math
import sys
import time

import numpy as np
import soundfile as sf
import soxr

N = 64_600
TARGET = 16_000


def chunk(path):
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    x = data[:, 0]
    if rate != TARGET:
        x = soxr.resample(x, rate, TARGET, quality="HQ")
    if len(x) >= N:
        clip = x[:N]
    else:
        clip = np.tile(x, math.ceil(N / len(x)))[:N]
    return clip, len(data) / rate


def main():
    paths = [line.strip() for line in open(sys.argv[1]) if line.strip()]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 1
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
