# brspeech for CUDA machines.
#
#   docker build -t brspeech .
#   docker run --gpus all brspeech doctor
#   docker run --gpus all -v "$PWD":/work brspeech run pipelines/full.yaml
#
# The workspace (pipelines, data, models, cache, outputs) is the folder mounted at /work.
# libtorch 2.11 comes from the PyPI torch wheel (with its nvidia-* CUDA 13 wheels), installed by
# the same tools/setup-libtorch.sh the Makefile uses, so the image and a workstation build
# cannot drift. The binary's RUNPATH points at /opt/brspeech/.deps/libtorch/lib, which the
# runtime stage keeps at the same path.

FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/brspeech
COPY tools/setup-libtorch.sh tools/setup-libtorch.sh
RUN tools/setup-libtorch.sh --full
COPY . .
RUN cargo build --release --locked \
 && tools/check-cuda-link.sh target/release/brspeech

FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/brspeech/.deps /opt/brspeech/.deps
COPY --from=build /opt/brspeech/target/release/brspeech /usr/local/bin/brspeech
WORKDIR /work
ENTRYPOINT ["brspeech"]
CMD ["--version"]
