"""Failpoints: make one agent fail at a chosen point of a job, for the recovery tests and benchmark.

`SABOT_FAILPOINT="<agent>:<point>:<action>[:<marker file>]"` in an agent's environment makes agent
<agent> SIGKILL, SIGSTOP or SIGTERM itself (<action>: kill, stop, term) the first time it reaches <point>:

    task:<stage>     a task of the stage starts (reading, mapping, reducing)
    sealed:<stage>   the agent sealed its output of the stage
    serving          the agent serves a partition to a peer (a DoGet, or one sent with a seal: the call is cut)
    written          the agent staged its result part
    done             the agent sealed its done marker (agent 0: after publishing) and waits for the job to end

A replacement gets the environment of the agent it replaces, so a failpoint must not fire in it again:
with a marker file, the file is created (exclusively) before the action and a failpoint whose marker
exists does nothing; without one, the failpoint fires only in the agent's first instance (--replacement
0), which is what a pod, whose files go with it, can use. Several failpoints are separated by ";".
Unarmed (no variable), every check is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

from sabot_agent.settings import FAILPOINT_ENV

# term: a SIGTERM as a drain or a supervisor sends it (the agent unwinds and exits 128 + SIGTERM)
ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}
POINTS_WITHOUT_STAGE = ("serving", "written", "done")
STAGE_POINTS = ("task", "sealed")

_armed: dict[tuple[int, str], tuple[str, str]] = {}


def parse(text: str) -> dict[tuple[int, str], tuple[str, str]]:
    """(agent, point) -> (action, marker file or ""); a malformed item raises ValueError naming it."""
    points = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        agent, *fields = item.split(":")
        stage_points = 1 if fields and fields[0] in POINTS_WITHOUT_STAGE else 2
        point, rest = ":".join(fields[:stage_points]), fields[stage_points:]
        if not agent.isdigit() or not (stage_points == 1 or fields[0] in STAGE_POINTS) or len(rest) not in (1, 2):
            raise ValueError(f"{FAILPOINT_ENV}: {item!r} is not <agent>:<point>:<action>[:<marker file>]")
        action, marker = rest[0], rest[1] if len(rest) == 2 else ""
        if action not in ACTIONS:
            raise ValueError(f"{FAILPOINT_ENV}: unknown action {action!r} in {item!r} ({', '.join(ACTIONS)})")
        points[(int(agent), point)] = (action, marker)
    return points


def arm(text: str, replacement: int) -> None:
    """Arm the failpoints of `text` in this process, agent instance `replacement` (0: the first)."""
    _armed.clear()
    _armed.update({key: value for key, value in parse(text).items() if value[1] or replacement == 0})


def reached(agent: int, point: str) -> None:
    """Fail here if a failpoint names this agent and point and has not fired yet."""
    found = _armed.pop((agent, point), None)
    if found is None:
        return
    action, marker = found
    if marker:
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return
    os.kill(os.getpid(), ACTIONS[action])
