# blooio-operator — developer entry points. `make dev` and `make test` are the two that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export GOTOOLCHAIN := local

.PHONY: install controlplane lint format test test-unit test-integration dev bench bench-smoke chaos clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip==25.3
	$(VPY) -m pip install -q -c constraints.txt -e . --group dev
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Builds tests/controlplane once per source hash into ~/.cache/blooio-operator (Go build
# cache in ~/.cache/go-build); a warm rebuild is a link, a cold one ~10 minutes.
controlplane: install
	@command -v go >/dev/null || { echo "Go 1.26+ is required (go not on PATH)"; exit 1; }
	$(VPY) -m blooio_operator controlplane --build-only

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	mkdir -p .build/typing && ln -sfn ../../operator .build/typing/blooio_operator
	$(VENV)/bin/mypy -p blooio_operator

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install controlplane lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-unit: install
	$(VENV)/bin/pytest -q tests/unit

test-integration: install controlplane
	$(VENV)/bin/pytest -q tests/integration

dev: install controlplane
	$(VENV)/bin/blooio-operator dev --state-dir .dev

bench: install controlplane
	$(VPY) -m bench.run --sizes 100,1000

chaos: install controlplane
	$(VPY) -m tests.chaos.run --iterations 100

clean:
	rm -rf .build .dev $(VENV) bench/results
