# brspeech: build, demo, test, bench. Every target does its own set-up, idempotently;
# tools/setup-libtorch.sh provides libtorch 2.11 (git-ignored .deps/) before any cargo command
# that builds the default features (which include `torch`).

CARGO ?= cargo
BIN := target/release/brspeech

.PHONY: all build demo test bench bench-slurm libtorch lint clean-demo

all: build

libtorch:
	tools/setup-libtorch.sh

build: libtorch
	$(CARGO) build --release --locked
	@echo "built $(BIN)"

# Runs the demo pipeline: the whole detector DAG (scan, metadata, chunk, extract, train,
# evaluate) on the committed corpus in data/demo with a random tiny wav2vec2, on the CPU; then
# shows that a second run is a no-op, the status of every stage and the graph, and where the
# results are. A demo with a random SSL model tests the pipeline, not detection quality.
DEMO_OUT := outputs/demo
demo: build
	$(BIN) run pipelines/demo.yaml
	$(BIN) run pipelines/demo.yaml
	$(BIN) status pipelines/demo.yaml
	$(BIN) graph pipelines/demo.yaml
	@mkdir -p pipelines/work
	$(BIN) graph pipelines/demo.yaml --format html -o pipelines/work/demo-graph.html
	@echo
	@echo "metrics:   $(DEMO_OUT)/evaluate/metrics.json (report: $(DEMO_OUT)/evaluate/report.html, report.md)"
	@echo "plots:     $(DEMO_OUT)/evaluate/plots/ (det, roc, histograms, training; .svg and .png)"
	@echo "model:     $(DEMO_OUT)/train/model/ (train_log.jsonl and train_summary.json beside it)"
	@echo "scores:    $(DEMO_OUT)/evaluate/scores.csv"
	@echo "graph:     pipelines/work/demo-graph.html"
	@echo "score a file: $(BIN) predict --model $(DEMO_OUT)/train/model data/demo/tts_espeak_ptbr/f2/*.flac"

clean-demo:
	rm -rf pipelines/work pipelines/demo.lock outputs/demo

test: libtorch
	$(CARGO) test --locked

lint: libtorch
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Engine benchmark: no-op status/run over 10k and 100k dep files, cold and warm, next to
# `dvc status` (installed into .deps/engine-bench-venv). Results: target/bench/engine.md.
# Scan benchmark: scan_corpus over 450k files against the `stat` floor, and the corpus stages
# end to end. Results: target/bench/scan.md.
# Every benchmark of docs/BENCHMARKS.md, each side by side with its baseline in the same run
# (Python environments are created under .deps/ on first use). `make bench-slurm` needs root and
# the slurm-wlm and munge packages; the GPU run is benches/gpu/ (docs/BENCHMARKS.md, "GPU").
bench: build
	benches/engine/run.sh
	benches/scan/run.sh
	$(CARGO) bench --locked --no-default-features --bench chunk
	benches/model/run.sh 2 5 3
	benches/train/run.sh 2 1024 1000

bench-slurm: build
	benches/slurm/run.sh
