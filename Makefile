# kube-failure-stories. The two commands: `make run` and `make test`.
# Every target installs what it needs first (idempotently; slow builds are cached
# under $(KFS_CACHE)).
SHELL := /bin/bash
PY := .venv/bin/python
KFS := .venv/bin/kfs
export KFS_CACHE ?= $(HOME)/.cache/kfs
REPORTS ?= reports
PYTEST_ARGS ?=

.PHONY: setup system venv binaries test-tools run test test-unit test-e2e lint bench clean-cluster

setup: venv system binaries

venv: .venv/.installed
.venv/.installed: pyproject.toml requirements.lock
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -c requirements.lock -e '.[dev]'
	touch $@

system:
	scripts/install-system.sh

# Kubernetes, etcd and kwok from their Go modules, the toolbox and pause images
# from Debian packages: tens of minutes the first time, seconds afterwards.
binaries: venv system
	$(PY) -m failure_stories.tools.prepare

# The Pushgateway the results-export test pushes to, built once from its pinned module.
PUSHGATEWAY_VERSION := $(shell sed -n 's|^require github.com/prometheus/pushgateway ||p' build/pushgateway/go.mod)
test-tools:
	build/pushgateway/build.sh $(KFS_CACHE)/pushgateway-$(PUSHGATEWAY_VERSION)

lint: venv
	.venv/bin/ruff check src tests scenarios operator images
	.venv/bin/ruff format --check src tests scenarios operator images
	.venv/bin/mypy
	.venv/bin/mypy operator/*.py images/workloads/*.py scenarios/*/workloads/*.py
	@# Every story's modules are named steps and audit: one run each.
	for f in scenarios/*/steps.py scenarios/*/audit.py; do .venv/bin/mypy $$f || exit 1; done
	.venv/bin/lint-imports

# Stories that measure timing run alone; the others three at a time (see README).
JOBS ?= 3

run: setup
	$(KFS) run --all --jobs $(JOBS) --report-dir $(REPORTS)

test-unit: venv test-tools
	.venv/bin/pytest tests/unit scenarios/*/test_*.py $(PYTEST_ARGS)

# The end-to-end tests start where a new user starts: no cluster, no state
# directories, no lock records (build caches are kept; KFS_CACHE=$$(mktemp -d)
# makes even those cold).
test-e2e: setup
	$(KFS) cluster reset
	.venv/bin/pytest tests/e2e scenarios --kfs-report-dir $(REPORTS)/pytest $(PYTEST_ARGS)

# --durations: the slowest tests are named at the end of every run, where CI's
# output is kept, to keep the whole suite inside CI's limit.
test: setup test-tools lint
	$(KFS) cluster reset
	.venv/bin/pytest tests scenarios --durations=15 --kfs-report-dir $(REPORTS)/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m failure_stories.tools.bench --out bench.json $(BENCH_ARGS)

clean-cluster: venv
	$(KFS) cluster down
