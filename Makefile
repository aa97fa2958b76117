# The two commands of the README, and a few helpers. Everything installs itself:
# a virtual environment in .venv, the Kafka jars in ~/.cache/tokensync.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint down status clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "tokensync needs Python 3.11+ (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,test,lint]'
	@touch $(STAMP)

## demo: start the local stack (Kafka, a Redis per region, relay, workers) and run the demo
demo: $(STAMP)
	$(BIN)/tokensync stack up
	$(BIN)/tokensync demo

## test: the whole test suite against real Kafka, Redis and PostgreSQL
test: $(STAMP)
	$(BIN)/tokensync stack fetch
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/tokensync bench all

status: $(STAMP)
	$(BIN)/tokensync stack status

down: $(STAMP)
	$(BIN)/tokensync stack down

clean: down
	rm -rf .tokensync
