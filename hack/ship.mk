# Makefile fragment for shipping: the image, the Helm chart and the kind end-to-end run.
# Include it from the top Makefile:
#     include hack/ship.mk
#
#   make chart-crd     copy crds/sabotjob.yaml into the chart (after hack/gen_crd.py changed it)
#   make chart-check   the offline chart, image and CRD checks (helm lint/template, kubernetes-validate,
#                      checkov, restricted Pod Security, RBAC, values schema, CRD drift)
#   make helm          build/cache the pinned helm (cold: minutes, warm: instant); prints its path
#   make e2e           kind cluster + image + helm install + tests/e2e, then delete the cluster
#                      (needs docker, kind, kubectl; helm is built if missing)
#
# helm and checkov live in $(SABOT_CACHE) (outside the repo). `build` and $(PY) (the .venv's python)
# come from the top Makefile.

SABOT_CACHE ?= $(HOME)/.cache/sabot
export SABOT_CACHE

CHART_DIR := charts/sabot-operator

.PHONY: chart-crd chart-check helm e2e

chart-crd:
	@mkdir -p $(CHART_DIR)/files/crds
	cp crds/sabotjob.yaml $(CHART_DIR)/files/crds/sabotjob.yaml

chart-check: build
	$(PY) -m pytest tests/chart tests/image

helm:
	@hack/ensure-helm.sh

e2e: build
	hack/e2e-kind.sh
