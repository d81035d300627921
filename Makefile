# Every target sets up what it needs first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup services demo test faults bench bench-quick down

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(INSTALLED)  ## the virtual environment with hoptrace and its test tools

services: setup  ## start local Redis and Apache Kafka
	$(BIN)/hoptrace services up

demo: setup  ## the main job: start the services, run the demo pipeline, print what it did
	$(BIN)/hoptrace demo

test: setup  ## the whole test suite against real Kafka and Redis started by the suite, then the fault suite on its own brokers
	$(BIN)/pytest
	$(BIN)/python -m pytest tests/faults -q

faults: setup  ## the fault suite alone, on its own Redis (6390) and Kafka (9192): kills, restarts, partitions (~10 min)
	$(BIN)/python -m pytest tests/faults -q

bench: setup  ## what hoptrace costs per message, full mode (20-40 min on 2 cores)
	$(BIN)/python -m benchmarks

bench-quick: setup  ## the same, small sizes (about 6 minutes on 2 cores)
	$(BIN)/python -m benchmarks --quick

down:  ## stop the services that hoptrace started
	$(BIN)/hoptrace services down
