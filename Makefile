# Canopy — the commands people type. `make help` lists them.
# A fresh machine needs only Python 3.11 with pip, and Node.js with npm: the first target that
# needs uv or buf installs them under .tools/.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/venv/bin/uv
BUF := $(TOOLS)/node_modules/.bin/buf
VENV := .venv/.synced
PROTO_FILES = $(shell find protos -name '*.proto' | sort)
API_SRC := libs/canopy-api/src
PY_DIRS := libs/canopy-core/src libs/canopy-cli/src services tests scripts bench

.PHONY: help run test pytest lint fmt proto proto-check breaking bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: $(VENV) ## run the three services on the embedded PostgreSQL (Ctrl-C stops them)
	$(UV) run --frozen python -m canopy_cli.run

test: lint breaking pytest ## lint, the contracts against the stable ones, then the whole test suite (the CI command)

# Two processes: most tests wait on services, timers and PostgreSQL rather than on the CPU.
# Each process has its own database (and, without DATABASE_URL, its own embedded server); a
# module's tests stay in one process. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2
pytest: $(VENV) $(BUF) ## the test suite alone (pass ARGS="-k name" to pick tests)
	$(UV) run --frozen pytest -n $(PYTEST_WORKERS) --dist loadfile $(ARGS)

lint: $(VENV) $(BUF) proto-check ## ruff, mypy --strict, buf lint, and generated code up to date
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy $(PY_DIRS)
	$(BUF) lint

fmt: $(VENV) ## format the Python code
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

proto: $(VENV) ## regenerate libs/canopy-api from protos/
	rm -rf $(API_SRC)/canopy && mkdir -p $(API_SRC)
	$(UV) run --frozen python scripts/protogen.py $(API_SRC) $(PROTO_FILES)

proto-check: $(VENV) ## fail if libs/canopy-api differs from what protos/ generates
	@tmp=$$(mktemp -d) && \
	  $(UV) run --frozen python scripts/protogen.py $$tmp $(PROTO_FILES) >/dev/null && \
	  if diff -r -q $$tmp/canopy $(API_SRC)/canopy; then rm -rf $$tmp; \
	  else rm -rf $$tmp; echo "libs/canopy-api is stale: run 'make proto' and commit"; exit 1; fi

# The last commit of main whose contracts were declared stable (v1); README "Stable contracts".
STABLE_CONTRACTS = $(shell cat protos/STABLE)
BREAKING_BASE ?= .git\#ref=$(STABLE_CONTRACTS)
breaking: $(BUF) ## buf breaking: the contracts against the stable ones (protos/STABLE) or BREAKING_BASE
	@if [ "$(origin BREAKING_BASE)" = file ] && \
	    ! git cat-file -e '$(STABLE_CONTRACTS)^{commit}' 2>/dev/null; then \
	  echo "make breaking: the stable contracts' commit $(STABLE_CONTRACTS) (protos/STABLE) is not in" \
	       "this clone: fetch the full history (git fetch --unshallow origin main)"; exit 1; fi
	@$(BUF) breaking --against '$(BREAKING_BASE)' && \
	  echo "make breaking: the contracts keep every promise of $(BREAKING_BASE)" || { \
	  echo "make breaking: the change above breaks the stable contracts ($(BREAKING_BASE)):" \
	       "keep it additive (new fields, messages, RPCs), or make it in a new version (v2)"; \
	  exit 1; }

bench: $(VENV) ## run the benchmarks; prints one JSON object of figures
	@$(UV) run --frozen python -m bench $(ARGS)

clean: ## remove tools, the virtualenv and the embedded database
	rm -rf $(TOOLS)/venv $(TOOLS)/node_modules .venv .canopy

$(UV):
	$(PYTHON) -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BUF): $(TOOLS)/package.json $(TOOLS)/package-lock.json
	cd $(TOOLS) && npm ci --silent --no-audit --no-fund
	@touch $@

$(VENV): $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@
