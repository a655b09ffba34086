# brspeech: build, demo, test, bench. Every target does its own set-up, idempotently;
# tools/setup-libtorch.sh provides libtorch 2.11 (git-ignored .deps/) before any cargo command
# that builds the default features (which include `torch`).

CARGO ?= cargo
BIN := target/release/brspeech

.PHONY: all build demo test bench libtorch lint clean-demo

all: build

libtorch:
	tools/setup-libtorch.sh

build: libtorch
	$(CARGO) build --release --locked
	@echo "built $(BIN)"

# Runs the demo pipeline (command stages, sh + coreutils only), then shows that a second run is
# a no-op, the status of every stage and the graph.
demo: build
	$(BIN) run pipelines/demo.yaml
	$(BIN) run pipelines/demo.yaml
	$(BIN) status pipelines/demo.yaml
	$(BIN) graph pipelines/demo.yaml
	$(BIN) graph pipelines/demo.yaml --format html -o pipelines/work/demo-graph.html
	@echo "graph page: pipelines/work/demo-graph.html"

clean-demo:
	rm -rf pipelines/work pipelines/demo.lock

test: libtorch
	$(CARGO) test --locked

lint: libtorch
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Engine benchmark: no-op status/run over 10k and 100k dep files, cold and warm, next to
# `dvc status` (installed into .deps/engine-bench-venv). Results: target/bench/engine.md.
# Scan benchmark: scan_corpus over 450k files against the `stat` floor, and the corpus stages
# end to end. Results: target/bench/scan.md.
bench: build
	benches/engine/run.sh
	benches/scan/run.sh
