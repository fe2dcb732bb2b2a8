"""Fixtures for the offline checks of charts/sabot-operator (no cluster, no network).

- ``helm`` (session): path of the helm binary from hack/ensure-helm.sh (built from its Go module
  once, cached outside the repo). Skips naming the missing piece when Go or the module proxy is
  unavailable; SABOT_NO_HELM_BUILD=1 skips instead of building when it is not cached yet.
- ``checkov`` (session): path of the checkov command from hack/ensure-checkov.sh (its own
  virtualenv outside the repo); SABOT_NO_CHECKOV_INSTALL=1 skips instead of installing it.
- ``scenario`` (parametrized over charts/sabot-operator/ci/*.yaml) and ``rendered``: the manifests
  `helm template` produces for that scenario, parsed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from chart_render import SCENARIOS, render
from helpers import ensure_tool


@pytest.fixture(scope="session")
def helm() -> str:
    return ensure_tool("ensure-helm.sh", "SABOT_NO_HELM_BUILD")


@pytest.fixture(scope="session")
def checkov() -> str:
    return ensure_tool("ensure-checkov.sh", "SABOT_NO_CHECKOV_INSTALL")


@pytest.fixture(params=SCENARIOS, ids=[path.stem for path in SCENARIOS])
def scenario(request) -> Path:
    return request.param


@pytest.fixture
def rendered(helm, scenario) -> list[dict]:
    return render(helm, scenario)
