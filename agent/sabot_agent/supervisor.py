"""`sabot run`'s supervision of its agents: wait for them, replace a lost one, fail on a real failure.

An agent is lost when it is killed (a signal: SIGKILL, the kernel's OOM killer, a SIGTERM from outside) or hangs (its HTTP port
has not answered for `hungAfterSeconds`: stopped, deadlocked, partitioned). A lost agent is replaced by
a new process of the same index on the same Flight port (LocalCluster.replace); its peers, started with
--replaceable, wait for it and fetch from it again, and it recomputes its own share while fetching its
inputs from the peers' retained stage outputs. At most `maxAgentReplacements` agents are replaced per
run; one more loss fails the job. An agent that exits with an error code reported a failure of the job
itself (bad data, an expression error): replacing it would only fail again, so that fails the job.

`lost_reason` decides from what was observed, so the rule is testable without processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sabot_agent.jobspec import RecoverySpec
from sabot_agent.settings import killing_signal

# exit codes are polled this often; health is checked at most this often per agent
PROCESS_POLL_SECONDS = 0.05
HEALTH_INTERVAL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 2.0
PROGRESS_INTERVAL_SECONDS = 0.5


@dataclass
class Replacement:
    agent: int
    reason: str
    at_seconds: float  # since the run started

    def as_dict(self) -> dict:
        return {"agent": self.agent, "reason": self.reason, "atSeconds": round(self.at_seconds, 3)}


@dataclass
class Outcome:
    failure: str | None = None  # None: every agent succeeded
    replacements: list[Replacement] = field(default_factory=list)


def lost_reason(index: int, exit_code: int | None, silent_seconds: float, hung_after: float) -> str | None:
    """Why agent `index` is lost and should be replaced, or None (running, or exited by itself). The
    operator applies the same rule to its pods (settings.killing_signal)."""
    if (name := killing_signal(exit_code)) is not None:
        return f"agent {index}: killed by signal {name}"
    if exit_code is None and silent_seconds >= hung_after:
        return f"agent {index}: did not answer on its HTTP port for {silent_seconds:.0f}s (hung)"
    return None


def supervise(cluster, progress, recovery: RecoverySpec) -> Outcome:
    """Wait for every agent of a started LocalCluster, replacing lost ones; returns how it ended (the
    caller stops what still runs)."""
    outcome = Outcome()
    started = time.monotonic()
    # when the health checks of an agent began to fail (None: its last check was answered); silence is
    # measured from there, so time the supervisor spent elsewhere (replacing an agent) is not silence
    failing_since: list[float | None] = [None] * cluster.agent_count
    next_health = [started] * cluster.agent_count
    last_status: list[dict | None] = [None] * cluster.agent_count
    next_progress = 0.0
    while True:
        codes = cluster.poll()
        now = time.monotonic()
        for index, agent in enumerate(cluster.agents):
            if codes[index] is None and now >= next_health[index]:
                status = agent.status(timeout=HEALTH_TIMEOUT_SECONDS)
                now = time.monotonic()
                next_health[index] = now + HEALTH_INTERVAL_SECONDS
                if status is not None:
                    failing_since[index], last_status[index] = None, status
                elif failing_since[index] is None:
                    failing_since[index] = now
        lost = []
        for index, agent in enumerate(cluster.agents):
            silent = now - failing_since[index] + HEALTH_TIMEOUT_SECONDS if failing_since[index] is not None else 0.0
            reason = lost_reason(index, codes[index], silent, recovery.hung_after_seconds)
            if reason is not None:
                lost.append((index, agent.failure_reason() if codes[index] is not None else reason))
        for index, reason in lost:
            if len(outcome.replacements) >= recovery.max_agent_replacements:
                cluster.failed_index = index
                limit = recovery.max_agent_replacements
                outcome.failure = reason if not limit else f"{reason}; {limit} agent replacement{'s' if limit != 1 else ''} already used"
                return outcome
            outcome.replacements.append(Replacement(index, reason, time.monotonic() - started))
            progress.note(f"sabot: {reason}; replacing it ({len(outcome.replacements)} of {recovery.max_agent_replacements})")
            cluster.replace(index)
            failing_since[index], last_status[index] = None, None
            next_health[index] = time.monotonic()
        if lost:
            continue  # look at every agent again: others may have been lost meanwhile
        failed = [agent for agent, code in zip(cluster.agents, codes) if code not in (None, 0)]
        if failed:
            # an agent that exits with an error reports a failure of the job (a lost one was replaced above)
            cluster.failed_index = failed[0].index
            outcome.failure = failed[0].failure_reason()
            return outcome
        if all(code == 0 for code in codes):
            return outcome
        if now >= next_progress:
            progress.update(last_status)
            next_progress = now + PROGRESS_INTERVAL_SECONDS
        time.sleep(PROCESS_POLL_SECONDS)
