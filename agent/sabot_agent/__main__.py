"""`python -m sabot_agent` runs one agent process; `sabot run` starts its agents this way."""

from sabot_agent.agent import entry_point

entry_point()
