# corridor: `make demo` runs the product, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST := $(PY) -m pytest -p no:cacheprovider

.DEFAULT_GOAL := help
.PHONY: help install ops-tools demo test test-unit test-agents test-e2e test-ops dashboards bench clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ops,report]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)  ## create .venv and install corridor with its test tools

demo: $(STAMP)  ## embedded broker + worker + simulator; prints where to look; Ctrl-C stops all
	$(VENV)/bin/corridor demo

ops-tools:  ## Prometheus, Alertmanager, promtool from Debian (installed when missing)
	bash .ci/ensure-ops-tools.sh

# pytest exits 5 when it collects no tests: that is a failure here, like any non-zero status.
test: $(STAMP) ops-tools  ## every test: unit, agents, e2e (real broker and workers), ops (real Prometheus)
	$(PYTEST) tests

test-unit: $(STAMP)  ## pure domain, codec, contract, simulator
	$(PYTEST) tests/unit

test-agents: $(STAMP)  ## the Faust agents through agent.test_context()
	$(PYTEST) tests/agents

test-e2e: $(STAMP)  ## real broker process, real worker processes
	$(PYTEST) tests/e2e

test-ops: $(STAMP) ops-tools  ## alert rules (promtool), dashboards, deploy files, live Prometheus + Alertmanager
	$(PYTEST) tests/ops

dashboards: $(STAMP)  ## regenerate the Grafana dashboards and the k8s PrometheusRule from their sources
	$(PY) deploy/grafana/dashboards.py
	$(PY) deploy/k8s/prometheusrule.py
	$(PY) deploy/k8s/configmaps.py

bench: $(STAMP)  ## the benchmark table (throughput, latency, RSS, floor, Quix, Bytewax, scaling); not part of make test
	$(PY) -m pip install --quiet -e '.[test,ops,report,bench]'
	$(PY) -m pip install --quiet --no-deps quixstreams==3.28.1   # see the bench extra in pyproject.toml
	$(PY) benchmarks/run_all.py

clean:  ## remove the virtualenv and local data
	rm -rf $(VENV) corridor-data .pytest_cache
