#!/usr/bin/env bash
# Install (once) the pinned checkov into its own virtualenv outside the repository and print the
# path of its `checkov` command. checkov pins many libraries of its own, so it never goes into .venv.
#
#   hack/ensure-checkov.sh           # install if missing, print the path (cached: well under a second)
#   hack/ensure-checkov.sh --check   # print the path and exit 0 if installed, exit 1 otherwise
#
# Location: ${SABOT_CACHE:-$HOME/.cache/sabot}/checkov/<CHECKOV_VERSION>/bin/checkov
# Needs: python3 >= 3.9 with venv, and PyPI. A missing piece is named on stderr with "missing:".
set -euo pipefail

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
CACHE="${SABOT_CACHE:-$HOME/.cache/sabot}"
VENV="$CACHE/checkov/$CHECKOV_VERSION"
CHECKOV="$VENV/bin/checkov"

die() { printf 'ensure-checkov: %s\n' "$*" >&2; exit 3; }

if [ -x "$CHECKOV" ] && [ -f "$VENV/.installed" ]; then echo "$CHECKOV"; exit 0; fi
[ "${1:-}" = "--check" ] && exit 1

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "missing: $PY"
rm -rf "$VENV"
"$PY" -m venv "$VENV" || die "missing: python venv module ($PY -m venv failed)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 \
  && "$VENV/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION" >&2 \
  || { rm -rf "$VENV"; die "missing: checkov==$CHECKOV_VERSION could not be installed from PyPI"; }
touch "$VENV/.installed"
echo "$CHECKOV"
