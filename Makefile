# The two commands of the README, and a few helpers. Everything installs itself:
# a virtual environment in .venv, the Kafka jars in ~/.cache/tokensync.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test unit lint down status clean bench prerequisites-demo prerequisites-test

# The system packages (JDK, Maven, redis-server; for the tests also PostgreSQL, MariaDB,
# nginx, Chromium): installed with apt as root, else the one command to run is printed.
prerequisites-demo prerequisites-test: prerequisites-%:
	@PYTHON=$(PYTHON) bash scripts/prerequisites.sh $*

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "tokensync needs Python 3.11+ (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,test,lint]'
	@touch $(STAMP)

## demo: start the local stack (Kafka, a Redis per region, relay, workers) and run the demo
demo: prerequisites-demo $(STAMP)
	$(BIN)/tokensync stack up
	$(BIN)/tokensync demo

## test: the whole test suite against real Kafka, Redis and PostgreSQL
test: prerequisites-test $(STAMP)
	$(BIN)/tokensync stack fetch
	$(BIN)/pytest

## unit: the unit tier alone (no servers, seconds)
unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

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
