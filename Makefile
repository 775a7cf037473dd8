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
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,gcp]'
	@touch $@

espeak: ## Install espeak-ng through apt when it is missing
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; }

setup: $(STAMP) espeak ## Create .venv with the pinned packages, and espeak-ng

demo: setup ## Run the whole flywheel locally on the embedded backends (WORK=demo-work)
	$(VENV)/bin/stt-flywheel demo --work-dir $(WORK)

test: setup ## Run the test suite
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: setup ## Run the tests that do not train or run the pipeline
	$(VENV)/bin/pytest -q -m "not slow"

lint: setup ## ruff (lint + format check) and mypy on src/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src

compile: setup ## Compile the pipeline to build/stt-flywheel.yaml
	$(VENV)/bin/stt-flywheel compile --output build/stt-flywheel.yaml

base-model: setup ## Re-train the committed tiny base model (about 20 minutes on 2 cores)
	$(VENV)/bin/stt-flywheel base-model train --output src/stt_flywheel/assets/base_model

clean: ## Remove the demo work directory and build outputs
	rm -rf $(WORK) build

.PHONY: help espeak setup demo test test-fast lint compile base-model clean
