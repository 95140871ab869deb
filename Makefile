# blooio-operator — developer entry points. `make dev` and `make test` are the two that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export GOTOOLCHAIN := local

.PHONY: install controlplane lint format test test-unit test-integration dev bench bench-smoke chaos storm storm-ha soak clean

# pip runs as a script, never `python -m pip` from here: with the repository root first on
# sys.path, the directory operator/ would shadow the standard library's `operator` in a
# fresh venv (once the editable install is in, site imports the real one first).
$(STAMP): pyproject.toml constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip==25.3
	$(VENV)/bin/pip install -q -c constraints.txt -e . --group dev
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Builds tests/controlplane once per source hash into ~/.cache/blooio-operator (Go build
# cache in ~/.cache/go-build); a warm rebuild is a link, a cold one ~10 minutes.
controlplane: install
	@command -v go >/dev/null || { echo "Go 1.26+ is required (go not on PATH)"; exit 1; }
	$(VENV)/bin/blooio-operator controlplane --build-only

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	mkdir -p .build/typing && ln -sfn ../../operator .build/typing/blooio_operator
	$(VENV)/bin/mypy -p blooio_operator

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Two pytest-xdist workers, one file per worker at a time (--dist loadfile: module fixtures
# stay whole), each with its own control plane (session fixtures are per worker). The suite
# mostly waits on processes, so two workers on 2 cores roughly halve it. A crashed worker
# fails the run instead of being replaced (pytest-xdist#784: loadfile can hang on a restart),
# and `timeout` bounds the controller itself (pytest-timeout only arms inside workers).
PYTEST_WORKERS ?= 2
PYTEST_XDIST = $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --max-worker-restart 0)
test: install controlplane lint helm
	timeout --signal=INT --kill-after=60 3000 $(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_XDIST)

test-unit: install
	$(VENV)/bin/pytest -q tests/unit

test-integration: install controlplane
	$(VENV)/bin/pytest -q tests/integration

dev: install controlplane
	$(VENV)/bin/blooio-operator dev --state-dir .dev

bench: install controlplane
	$(VPY) -m bench.run --sizes 100,1000

bench-smoke: install controlplane
	$(VPY) -m bench.run --sizes 10 --restart-window 5 --out .build/bench-smoke

chaos: install controlplane
	$(VPY) -m tests.chaos.run --iterations 100

# Issue 11's storm, one world per seed, one after another (each ~2-3 min on 2 cores, ~7 if a
# count stays above zero until the 5-minute deadline):
# 300 resources in 3 namespaces, 12 operator kills, Blooio faults, an apiserver restart.
# STORM_ARGS adds options, e.g. --replicas 2 --ha-mode partition (issue 20: two replicas
# with leader election, every disruption aimed at the leader; tests/chaos/storm_ha.py);
# STORM_DIR keeps each kind of run's logs and reports apart.
STORM_SEEDS ?= 1 2 3 4 5
STORM_ARGS ?=
STORM_DIR ?= .build/storm
storm: install controlplane
	mkdir -p $(STORM_DIR)
	rc=0; for seed in $(STORM_SEEDS); do \
	  $(VPY) -m tests.chaos.storm --seed $$seed --work-dir $(STORM_DIR)/seed-$$seed \
	    --report $(STORM_DIR)/seed-$$seed.json $(STORM_ARGS) || rc=1; \
	done; exit $$rc

# Issue 20's storm with two replicas, both modes, three seeds each (~4 min per seed on 2 cores).
STORM_HA_SEEDS ?= 1 2 3
storm-ha: install controlplane
	rc=0; for mode in kill-leader partition; do \
	  $(MAKE) --no-print-directory storm STORM_SEEDS="$(STORM_HA_SEEDS)" \
	    STORM_ARGS="--replicas 2 --ha-mode $$mode $(STORM_ARGS)" STORM_DIR=.build/storm-ha-$$mode || rc=1; \
	done; exit $$rc

# Issue 18's soak: faults that last (503s, hangs, 429s, a revoked key, apiserver restarts
# with deletions in the gap, a dead receiver), one class at a time, each for a compressed
# hour (1 h -> 180 s), over 100 resources in 2 namespaces; counts per resource per hour
# against the budget in tests/chaos/soak_budget.py; ~24 min on 2 cores. SOAK_ARGS adds
# options (e.g. --classes ad).
SOAK_ARGS ?=
soak: install controlplane
	mkdir -p .build/soak
	$(VPY) -m tests.chaos.soak --work-dir .build/soak/work --report .build/soak/report.json $(SOAK_ARGS)

clean:
	rm -rf .build .dev $(VENV) bench/results

# --- container image (hack/image/README.md) -------------------------------------------------
# `image`: localhost/blooio-operator:dev in the project's podman store (~/.cache/blooio-operator/
# containers), on a Debian base built with mmdebstrap when needed (`image-base`, cached by a hash
# of its inputs), plus .build/image/blooio-operator.oci.tar. Installs nothing: without podman it
# names the Debian packages to install. `make test` needs no extra step: the image test
# (tests/integration/test_image.py) runs this same build first, so it always tests the tree.
.PHONY: image image-base
image:
	hack/image/build.sh

image-base:
	hack/image/build-base.sh

# --- end-to-end on a local node (docs/operations.md, "End-to-end test") ----------------------
# `node`: kubelet + kube-scheduler + pause (tests/node), cached per source hash in
# ~/.cache/blooio-operator/node like the control plane. `e2e` (root): installs the Debian
# packages it needs when missing (hack/e2e/node-packages.sh: containerd, runc,
# containernetworking-plugins, iptables), brings up the node, loads the image, runs
# hack/e2e/scenario.sh, tears everything down.
.PHONY: node node-packages e2e
node-packages:
	hack/e2e/node-packages.sh

node: install
	@command -v go >/dev/null || { echo "Go 1.26+ is required (go not on PATH)"; exit 1; }
	$(VPY) -c 'from blooio_operator.devenv.node_build import ensure_node_binaries as b; print(*b())'

e2e: node-packages install controlplane node image
	$(VPY) -m tests.node.e2e

# --- Helm chart and release (docs/operations.md, "Install" and "Release") --------------------
# `helm`: helm (helm.sh/helm/v4) built once from the Go module proxy into
# ~/.cache/blooio-operator/tools (operator/devenv/gotools.py; the chart tests build it too).
# `chart`: regenerate the chart's templates, values and schema from deploy/ and
# operator/settings.py (hack/chart/generate.py); tests/unit/test_chart.py fails when stale.
# `release`: image archive, chart .tgz, install manifest, SPDX SBOM (syft) and SHA256SUMS
# in .build/release/<version>/ (hack/release/release.sh).
# `e2e-upgrade` (root, like e2e): 0.1.0 (tag v0.1.0, its image built from that commit in a
# git worktree) -> this tree -> 0.1.0 with 50 resources on the local node.
.PHONY: helm chart release e2e-upgrade
helm: install
	@command -v go >/dev/null || { echo "Go 1.26+ is required (go not on PATH)"; exit 1; }
	$(VPY) -m blooio_operator.devenv.gotools helm

chart: install
	$(VPY) hack/chart/generate.py

release: install
	@command -v go >/dev/null || { echo "Go 1.26+ is required (go not on PATH)"; exit 1; }
	hack/release/release.sh

e2e-upgrade: node-packages install controlplane node image
	$(VPY) -m tests.node.e2e_upgrade

# --- monitoring (issue 22; docs/operations.md, "Monitoring") ------------------------------------
# `monitoring-e2e`: a real Prometheus (v0.316.0, built once from the module proxy into
# ~/.cache/blooio-operator/tools; ~8 min cold with Go's build cache warm from promtool) scrapes
# the operator with the shipped scrape settings and a real token, loads the shipped rules; a
# revoked key makes BlooioOperatorCredentialsInvalid fire and resolve (~45 s). Also the rules'
# promtool tests, the dashboard's queries, and the objects applied with the CRDs. All of these
# run in `make test` too.
.PHONY: monitoring-e2e
monitoring-e2e: install controlplane
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/test_monitoring.py \
	  tests/integration/test_metrics_objects.py tests/integration/test_metrics_prometheus.py
