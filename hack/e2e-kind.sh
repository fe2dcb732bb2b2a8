#!/usr/bin/env bash
# `make e2e`: the end-to-end suite on a throw-away kind cluster.
#   1. kind create cluster (kind-config.yaml: one control plane, two workers)
#   2. docker build the image, kind load docker-image
#   3. helm install charts/sabot-operator with that image, helm test (a tiny SabotJob to Succeeded)
#   4. pytest tests/e2e against the cluster (every example SabotJob, results, agent /metrics)
#   5. kind delete cluster (kept with SABOT_KEEP_KIND=1)
# Needs docker (with a running daemon) and kind on PATH; helm is built by hack/ensure-helm.sh.
# Without them it says what is missing and exits 2. Env: SABOT_KIND_CLUSTER (default sabot-e2e),
# SABOT_E2E_IMAGE (default sabot:e2e), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${SABOT_KIND_CLUSTER:-sabot-e2e}"
IMAGE="${SABOT_E2E_IMAGE:-sabot:e2e}"
PYTHON="${PYTHON:-.venv/bin/python}"
RELEASE=sabot
RELEASE_NAMESPACE=sabot-system

missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker (Docker Engine or compatible CLI)")
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker daemon ('docker info' failed)")
fi
command -v kind >/dev/null 2>&1 || missing+=("kind (https://kind.sigs.k8s.io)")
[ -x "$PYTHON" ] || missing+=("$PYTHON (run 'make build' first)")
HELM="$(hack/ensure-helm.sh)" || missing+=("helm (hack/ensure-helm.sh failed; see above)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "make e2e: cannot run, missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi

KUBECONFIG_FILE="$(mktemp -t sabot-e2e-kubeconfig.XXXXXX)"
cleanup() {
  if [ "${SABOT_KEEP_KIND:-0}" = 1 ]; then
    echo "kept kind cluster $CLUSTER; KUBECONFIG=$KUBECONFIG_FILE" >&2
  else
    kind delete cluster --name "$CLUSTER" >&2 || true
    rm -f "$KUBECONFIG_FILE"
  fi
}
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --config kind-config.yaml --kubeconfig "$KUBECONFIG_FILE" --wait 180s
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

"$HELM" install "$RELEASE" charts/sabot-operator --kubeconfig "$KUBECONFIG_FILE" \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=IfNotPresent \
  --wait --timeout 5m
"$HELM" test "$RELEASE" --kubeconfig "$KUBECONFIG_FILE" --namespace "$RELEASE_NAMESPACE" --timeout 10m --logs

SABOT_E2E_KUBECONFIG="$KUBECONFIG_FILE" SABOT_E2E_IMAGE="$IMAGE" "$PYTHON" -m pytest tests/e2e -ra
