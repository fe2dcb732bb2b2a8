#!/usr/bin/env bash
# Install (once) Prometheus and promtool from Debian for the tests that scrape real agents.
#
#   hack/ensure-prometheus.sh      # prints the prometheus path
#
# Exit: 0 ready, 3 a prerequisite is missing (not root, no apt-get, the package cannot be installed;
# the tests then skip naming it). Env: SABOT_NO_APT=1 (never apt-get).
set -euo pipefail

missing() { printf 'ensure-prometheus: missing: %s\n' "$*" >&2; exit 3; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  command -v prometheus
  exit 0
fi
[ "$(id -u)" = 0 ] || missing "prometheus (apt-get install prometheus needs root)"
[ "${SABOT_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 || missing "prometheus (apt-get unavailable or SABOT_NO_APT=1)"
# The package would start a system service where an init system runs; the tests start their own.
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends prometheus >&2; then
  apt-get update -q >&2 || true
  apt-get install -y -q --no-install-recommends prometheus >&2 || missing "prometheus (apt-get install prometheus failed)"
fi
command -v prometheus
