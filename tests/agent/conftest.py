"""Fixtures for the agent tests: real agent processes on 127.0.0.1, cleaned up after every test."""

from __future__ import annotations

import pytest

from helpers import ServingAgent, require_native


@pytest.fixture
def serve_agent(tmp_path):
    require_native()
    started: list[ServingAgent] = []

    def start(name: str = "agent", *extra: str) -> ServingAgent:
        agent = ServingAgent(tmp_path, name, *extra)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()

