# stt-flywheel — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
WORK ?= demo-work

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@# -qq: setuptools' notice about editable installs is noise here; pip errors still show
	$(PY) -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev,gcp]'
	@touch $@

# apt-install the Debian packages whose command is missing: $(call apt,command:package ...)
apt = @missing=""; for pair in $(1); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair\#*:}"; done; \
	[ -z "$$missing" ] || { echo "apt-get install$$missing"; $(SUDO) apt-get update -qq && \
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

espeak: ## Install espeak-ng through apt when it is missing
	$(call apt,espeak-ng:espeak-ng)

test-tools: ## Install what the tests compare against and drive: sctk (NIST sclite), chromium and its driver (pages in a real browser)
	$(call apt,sctk:sctk chromium:chromium chromedriver:chromium-driver)

setup: $(STAMP) espeak ## Create .venv with the pinned packages, and espeak-ng

demo: setup ## Run the whole flywheel locally on the embedded backends (WORK=demo-work)
	$(VENV)/bin/stt-flywheel demo --work-dir $(WORK)

test: lint docs-build test-tools ## Lint (as Cloud Build does), build the docs strictly, then run the test suite
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: setup ## The tests that neither run the whole pipeline nor need the test tools from apt (sctk, chromium)
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow and not sctk and not chromium"

lint: setup ## ruff (lint + format check), mypy on the library, the components and the pipelines, and the import contracts (lint-imports)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src components pipelines
	$(VENV)/bin/lint-imports

bench: setup espeak ## Scoring and bootstrap beside jiwer, rapidfuzz and a row-gather bootstrap; score end to end on 1M pairs; transcription beside the transformers pipeline; the error store at 1M records and capture at serving beside their floors; one hostile input's memory before and after the limits; canary arm statistics before and after the per-user cap and user resampling; forget and retention beside a full rewrite; the read commands on the demo's state beside the import floor; word confidence's ranking and calibration before and after the temperature fit
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_limits.py
	$(PY) benchmarks/bench_arms.py
	$(PY) benchmarks/bench_privacy.py
	$(PY) benchmarks/bench_transcribe.py
	$(PY) benchmarks/bench_read.py --work-dir $(WORK)
	$(PY) benchmarks/bench_confidence.py

bench-labels: setup espeak ## Review budgets of 50–400 corrections chosen by confidence and at random (and with pseudo-labels), three seeds each: held-out new-domain WER and critical-term recall after one training turn (about 40 minutes on 2 cores)
	$(PY) benchmarks/bench_labels.py

bench-scale: setup ## The store's whole-store reads (counts, export of a day, the dataset's candidates) on stores of 1M and 10M predictions, by DuckDB and by Arrow, beside a bare DuckDB query; wall time and peak memory (about 25 minutes)
	$(PY) benchmarks/bench_scale.py

bench-trainer: setup espeak ## Trainer throughput and WER: CPU here; CUDA fp32 and bf16, and a whisper-small-shaped model (full / LoRA, MFU), where a GPU is
	$(PY) benchmarks/bench_trainer.py prepare --out build/bench-data
	$(PY) benchmarks/bench_trainer.py run --data build/bench-data/data.npz --json build/bench-trainer.json \
		--variant cpu:16:10 $$($(PY) -c "import torch; print('--variant cuda-fp32:32:300 --variant cuda-bf16:32:300' if torch.cuda.is_available() else '')")
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) benchmarks/bench_trainer.py whisper --data build/bench-data/data.npz --shape small --warmup 8 \
			--variant full-bf16:32:28 --variant full-bf16:64:24 --variant lora-bf16:64:24 \
			--variant full-fp32:32:20 --json build/bench-trainer-whisper.json; fi

docs: setup ## Regenerate the reference pages from the code, then build the docs site into build/site (strict)
	$(PY) -m flywheel_pipelines.reference docs/reference
	@$(MAKE) --no-print-directory docs-build

docs-build: setup ## Build the docs site as committed into build/site, strictly (a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

compile: setup ## Compile the pipeline to build/stt-flywheel.yaml
	$(VENV)/bin/stt-flywheel compile --output build/stt-flywheel.yaml

base-model: setup ## Re-train the committed tiny base model (about 20 minutes on 2 cores)
	$(VENV)/bin/stt-flywheel base-model train --output src/stt_flywheel/assets/base_model

clean: ## Remove the demo work directory and build outputs
	rm -rf $(WORK) build

.PHONY: help espeak test-tools setup demo test test-fast bench bench-labels bench-scale bench-trainer lint docs docs-build compile base-model clean
