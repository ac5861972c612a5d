# xmkd: every target installs what it needs first (a no-op when .venv is up to date).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not slow'"`.
PYTEST_ARGS ?=

# Optional arguments of the evaluation targets: DATA=dataset root, SPLITS=split files, CKPT=encoder.
DATA ?=
SPLITS ?=
CKPT ?=
# Extra pipeline options, e.g. `make distill-detection ARGS="--seeds 1 --epochs 5"`.
ARGS ?=
XMKD := $(BIN)/xmkd

.PHONY: install install-dev test test-fast lint format clean synth-av synth-untrimmed \
	pretrain-xkd xkd-ablation distill-detection distill-detection-raw xkd-to-detection linear-eval finetune-ucf101 finetune-hmdb51 eval-ablation \
	bench bench-decode bench-data bench-metrics bench-xkd bench-pdan bench-extract bench-inference bench-shards

# The run targets need xmkd and its dependencies; lint and the tests also the dev tools (pytest,
# ruff, librosa as the filterbank reference, the ONNX export stack), installed on top.
install: $(STAMP)

install-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

lint: install-dev
	$(BIN)/ruff check xmkd tests benchmarks
	$(BIN)/ruff format --check xmkd tests benchmarks

format: install-dev
	$(BIN)/ruff format xmkd tests benchmarks
	$(BIN)/ruff check --fix xmkd tests benchmarks

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# --- data ---------------------------------------------------------------------------------------
synth-av: install
	$(XMKD) data synth-av --out data/synth-av $(ARGS)

synth-untrimmed: install
	$(XMKD) data synth-untrimmed --out data/synth-untrimmed $(ARGS)

# --- the two methods ------------------------------------------------------------------------------
pretrain-xkd: install
	$(XMKD) pipeline pretrain-xkd $(ARGS)

xkd-ablation: install
	$(XMKD) pipeline xkd-ablation $(ARGS)

distill-detection: install
	$(XMKD) pipeline distill-detection $(ARGS)

distill-detection-raw: install
	$(XMKD) pipeline distill-detection-raw $(ARGS)

# --- the two methods chained: does audio-visual pretraining help cross-modal distillation? ---------
# XKD and MAE-only pretraining, then raw untrimmed video -> RGB features of the XKD, MAE-only and
# random-init encoders -> two-stream teacher -> Augmented-RGB student (CKPT= a given XKD video encoder).
xkd-to-detection: install
	$(XMKD) pipeline xkd-to-detection $(if $(CKPT),--ckpt $(CKPT)) $(ARGS)

# --- downstream evaluation (DATA=, SPLITS=, CKPT=, DATASET= for real data; synthetic by default) ---
EVAL_ARGS = $(if $(DATA),--dataset $(or $(DATASET),$(1)) --data $(DATA)) $(if $(SPLITS),--splits $(SPLITS)) $(if $(CKPT),--ckpt $(CKPT))

linear-eval: install
	$(XMKD) pipeline linear-eval $(call EVAL_ARGS,ucf101)

finetune-ucf101: install
	$(XMKD) pipeline finetune --recipe ucf101 $(call EVAL_ARGS,ucf101) --out runs/finetune-ucf101

finetune-hmdb51: install
	$(XMKD) pipeline finetune --recipe hmdb51 $(call EVAL_ARGS,hmdb51) --out runs/finetune-hmdb51

eval-ablation: install
	$(XMKD) pipeline eval-ablation $(ARGS)

# --- benchmarks (figures go to runs/bench/*.json and the README) ----------------------------------
bench: bench-decode bench-data bench-metrics bench-pdan bench-xkd bench-extract bench-inference bench-shards

bench-decode: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/decode.py --json runs/bench/decode.json

# clips/s per CPU core of one XKD training item at the paper's sizes, and CPU cores per GPU
bench-data: install
	$(BIN)/python benchmarks/data.py --json runs/bench/data.json

bench-metrics: install
	$(BIN)/python benchmarks/metrics.py --json runs/bench/metrics.json

bench-pdan: install
	$(BIN)/python benchmarks/pdan_throughput.py --json runs/bench/pdan.json

# XKD_RELEASE=path/to/XKD (a checkout of the authors' code): its step timed in the same run
XKD_RELEASE ?=
bench-xkd: install
	$(if $(XKD_RELEASE),$(BIN)/python -m pip install --quiet -e '.[bench]')
	XKD_RELEASE=$(XKD_RELEASE) $(BIN)/python benchmarks/xkd_throughput.py $(if $(XKD_RELEASE),--workloads base-b2 tiny-b4 --modes eager --steps 8) --json runs/bench/xkd.json

bench-extract: install
	$(BIN)/python benchmarks/extract.py --json runs/bench/extract.json

# litdata shards vs one file per item, the training split's loader, paired
bench-shards: install
	$(BIN)/python benchmarks/shards.py --json runs/bench/shards.json

# seconds per minute of video, Augmented-RGB student vs two-stream teacher (flow included)
bench-inference: install-dev
	$(BIN)/python benchmarks/inference_cost.py --repeats 3 --json runs/bench/inference_cost.json

clean:
	rm -rf runs wandb lightning_logs .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
