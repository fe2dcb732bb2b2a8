"""Fixtures of the engine tests (the helpers are in tests/engine_support.py)."""

from __future__ import annotations

import pytest

from engine_support import InProcessEngine, write_tpch


@pytest.fixture(scope="session")
def tpch_sf001(tmp_path_factory):
    """TPC-H at scale factor 0.01, written by tpchgen-cli."""
    return write_tpch(tmp_path_factory.mktemp("tpch-sf001"), 0.01)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    instance = InProcessEngine(tmp_path_factory.mktemp("engine"))
    yield instance
    instance.close()
