"""Failpoints: make one agent fail at a chosen point of a job, for the recovery tests and benchmark.

`SABOT_FAILPOINT="<agent>:<point>:<action>:<marker file>"` in an agent's environment makes agent
<agent> SIGKILL or SIGSTOP itself (<action>: kill, stop) the first time it reaches <point>:

    task:<stage>     a task of the stage starts (reading, mapping, reducing)
    sealed:<stage>   the agent sealed its output of the stage
    serving          the agent serves a DoGet to a peer (the stream is cut)
    written          the agent staged its result part
    done             the agent sealed its done marker (agent 0: after publishing) and waits for the job to end

The marker file is created (exclusively) before the action, so a replacement with the same
environment does not fail again; several variables' worth of failpoints are separated by ";". Without
the variable every check is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

from sabot_agent.settings import FAILPOINT_ENV
ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _parse(text: str) -> dict[tuple[int, str], tuple[str, str]]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        agent, kind, *rest = item.split(":")
        point = kind if kind in ("serving", "written", "done") else f"{kind}:{rest.pop(0)}"
        action, marker = rest
        if action not in ACTIONS:
            raise ValueError(f"{FAILPOINT_ENV}: unknown action {action!r} in {item!r} (kill, stop)")
        points[(int(agent), point)] = (action, marker)
    return points


_POINTS = _parse(os.environ.get(FAILPOINT_ENV, ""))


def reached(agent: int, point: str) -> None:
    """Fail here if a failpoint names this agent and point and has not fired yet."""
    found = _POINTS.get((agent, point))
    if found is None:
        return
    action, marker = found
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    os.kill(os.getpid(), ACTIONS[action])
