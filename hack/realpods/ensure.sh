#!/usr/bin/env bash
# Prepare the real-pods tier (T2): Debian packages, the pause image, the project image.
#
#   hack/realpods/ensure.sh        # install what is missing, build (or reuse) both OCI tarballs
#
# Needs root (apt-get, debootstrap), the Debian mirror, PyPI (the image's dependency wheels), gcc.
# The Kubernetes binaries come from hack/cluster/ensure-binaries.sh (run that too).
# Cold: ~3 min (apt 15 s, debootstrap ~100 s, wheel ~60 s, dependency layer ~20 s); warm: ~1 s.
# Exit: 0 ready, 3 a prerequisite is missing ("missing: ..."; the T2 tests then skip), 1 other failure.
# Env: SABOT_NO_APT=1 (never apt-get), SABOT_CACHE, PYTHON.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-}"
[ -n "$PY" ] || { [ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python" || PY=python3; }

log() { printf '[realpods-ensure %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
missing() { printf 'realpods-ensure: ERROR: missing: %s\n' "$*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || missing "root (containerd, kubelet, the pod bridge and debootstrap need it)"

need_pkgs=()
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  [ "${SABOT_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 \
    || missing "Debian packages ${need_pkgs[*]} (apt-get unavailable or SABOT_NO_APT=1)"
  log "apt-get install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "${need_pkgs[@]}" >&2; then
    apt-get update -q >&2 || true
    apt-get install -y -q "${need_pkgs[@]}" >&2 || missing "Debian packages ${need_pkgs[*]} (apt-get install failed)"
  fi
fi
# Debian's containerd ships a service unit; this tier runs its own containerd and never uses that one.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi

"$PY" "$HERE/build-image.py" --pause >/dev/null
"$PY" "$HERE/build-image.py"
