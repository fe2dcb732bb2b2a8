"""Operator tests: import paths, and the T1 cluster fixtures of tests/cluster/conftest.py.

Fixtures of a sibling folder's conftest are not visible here, so that module is loaded under its own
name and its fixtures re-exported (if tests/cluster and tests/operator run in one session, each
folder starts its own control plane; moving the fixtures to tests/conftest.py would share one).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The packages live in plain top-level folders; a checkout without `pip install -e .` imports them here.
for folder in ("operator", "agent"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))

_spec = importlib.util.spec_from_file_location("sabot_cluster_fixtures", REPO / "tests" / "cluster" / "conftest.py")
cluster_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cluster_fixtures
_spec.loader.exec_module(cluster_fixtures)
kube_cluster = cluster_fixtures.kube_cluster
namespace = cluster_fixtures.namespace
