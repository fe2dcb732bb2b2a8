"""The settings of `sabot-agent` and `sabot run`: environment variable names, exit codes and argument checks.

``ENV`` maps each `sabot-agent` flag (its argparse dest) to the environment variable it is read from;
the operator's pod builder (operator/sabot_operator/builders.py ``agent_env``) sets the same names, so
they are spelled only here. The argument types bound each number by the job schema's own limits
(``jobspec.MAX_AGENTS`` ...), and ``ArgumentParser`` reports a bad argument as one line (``UsageError``)
instead of argparse's usage dump, so both commands can print it, and the agent can also write it to its
termination log.
"""

from __future__ import annotations

import argparse
import math
import re
import signal

from sabot_agent.jobspec import parse_memory

# exit codes of `sabot-agent`, read by `sabot run`'s supervisor and by the operator
USAGE_ERROR = 2  # a bad flag, variable or job file, reported before anything starts
JOB_REFUSED = 3  # a job its inputs' schemas refute (found before anything starts; every attempt would be refused)
TERMINATED = 128 + signal.SIGTERM  # the agent's own exit on SIGTERM, as a shell reports a signal


def killing_signal(exit_code: int | None) -> str | None:
    """The signal that ended an agent, named, or None when it exited by itself (or still runs): a
    negative code (a direct child, Python's convention) or one above 128 (a shell's or a container
    runtime's 128 + N, and the agent's own exit on SIGTERM). An agent ended by a signal is lost, not failed."""
    if exit_code is None or 0 <= exit_code <= 128:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


ENV = {
    "job": "SABOT_JOB",
    "agent_index": "SABOT_AGENT_INDEX",
    "agent_count": "SABOT_AGENT_COUNT",
    "bind_host": "SABOT_BIND_HOST",
    "advertise_host": "SABOT_ADVERTISE_HOST",
    "flight_port": "SABOT_FLIGHT_PORT",
    "http_port": "SABOT_HTTP_PORT",
    "slots": "SABOT_SLOTS",
    "threads": "SABOT_THREADS",
    "memory_budget": "SABOT_MEMORY_BUDGET",
    "spill_dir": "SABOT_SPILL_DIR",
    "peers": "SABOT_PEERS",
    "peers_file": "SABOT_PEERS_FILE",
    "attempt": "SABOT_ATTEMPT",
    "termination_log": "SABOT_TERMINATION_LOG",
    "startup_timeout": "SABOT_STARTUP_TIMEOUT",
    "shuffle_timeout": "SABOT_SHUFFLE_TIMEOUT",
    "tls_cert": "SABOT_TLS_CERT",
    "tls_key": "SABOT_TLS_KEY",
    "tls_ca": "SABOT_TLS_CA",
    "run_id": "SABOT_RUN_ID",
    "replaceable": "SABOT_REPLACEABLE",
    "replacement": "SABOT_REPLACEMENT",
}

# not a flag: the failpoints of the recovery tests (sabot_agent.failpoints)
FAILPOINT_ENV = "SABOT_FAILPOINT"

MAX_PORT = 65535
MAX_ATTEMPT = 2**31 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")


class UsageError(ValueError):
    """A command line (or SABOT_* variable) the command refuses; the message is one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError with one line instead of printing its usage and exiting 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def integer_in(minimum: int, maximum: int):
    """An argparse type: a decimal integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        if _INTEGER.fullmatch(text.strip()) and minimum <= int(text) <= maximum:
            return int(text)
        raise argparse.ArgumentTypeError(f"must be an integer from {minimum} to {maximum}, got {text!r}")

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def memory_quantity(text: str) -> str:
    """An argparse type: a memory quantity jobspec.parse_memory accepts (e.g. 256Mi); returned as given."""
    try:
        parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
