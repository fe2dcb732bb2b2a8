# The two commands of the quickstart: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Recorded after the editable install so dependency changes reinstall, source changes only rebuild.
INSTALLED := $(VENV)/.installed
NATIVE_SOURCES := $(wildcard native/src/*.h native/src/*.inc native/src/*.cc native/sabot_native/*.pyx native/sabot_native/*.pxd)

.PHONY: run test build bench clean

include hack/cluster/cluster.mk
include hack/s3/s3.mk
include hack/ship.mk

run: build
	$(PY) -m sabot_agent.cli run examples/groupby-generated.yaml --agents 2

# Tools of the cluster, chart and real-pods tiers are built or installed up front, cached outside the
# repo: Kubernetes binaries and helm from Go modules, checkov in its own virtualenv, Prometheus,
# containerd and the project image for real pods. Exit code 3 means a
# prerequisite (Go, the module proxy, PyPI) is missing: those tests then skip, naming it.
test: build
	hack/cluster/ensure-binaries.sh || [ $$? -eq 3 ]
	hack/ensure-helm.sh >/dev/null || [ $$? -eq 3 ]
	hack/s3/ensure-seaweedfs.sh >/dev/null || [ $$? -eq 3 ]
	hack/ensure-checkov.sh >/dev/null || [ $$? -eq 3 ]
	hack/ensure-prometheus.sh >/dev/null || [ $$? -eq 3 ]
	hack/realpods/ensure.sh || [ $$? -eq 3 ]
	$(PY) -m pytest tests

build: $(INSTALLED) native/sabot_native/.built

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "setuptools==80.9.0" "cython==3.3.1"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

# In-place rebuild: only what changed is recompiled (objects are kept in build/).
native/sabot_native/.built: $(NATIVE_SOURCES) setup.py $(INSTALLED)
	$(PY) setup.py --quiet build_ext --inplace --parallel 2
	touch $@

bench: build
	$(PY) -m pip install --quiet "polars>=1.0" "duckdb>=1.0"
	for b in $(filter-out bench/benchlib.py,$(wildcard bench/*.py)); do $(PY) $$b || exit 1; done

clean:
	rm -rf build native/sabot_native/*.so native/sabot_native/*.cpp native/sabot_native/.built $(INSTALLED)
