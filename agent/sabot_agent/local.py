"""Local mode's process supervisor: N `python -m sabot_agent` processes on loopback ports.

Each agent runs in its own session (process group) and gets SIGKILL from the kernel if this process
dies (PR_SET_PDEATHSIG), so neither a failure, Ctrl-C nor a killed `sabot run` leaves agents behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import sabot_agent

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
TERMINATE_GRACE_SECONDS = 3.0
LISTEN_TIMEOUT_SECONDS = 120.0
LISTEN_POLL_SECONDS = 0.01


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Ports the kernel reports free; all sockets stay open until every port is chosen (no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _child_setup() -> None:
    """Runs in the child between fork and exec: own process group, die with the parent."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux/glibc: process groups and kill-on-exit still clean up
        pass


@dataclass
class AgentProcess:
    index: int
    flight_port: int
    http_port: int
    process: subprocess.Popen
    stdout_path: str
    stderr_path: str
    reason_path: str

    def status(self, timeout: float = 0.5) -> dict | None:
        """The agent's /status, or None while it is not answering."""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}/status", timeout=timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def failure_reason(self) -> str:
        code = self.process.returncode
        if os.path.exists(self.reason_path):
            with open(self.reason_path, encoding="utf-8") as handle:
                text = handle.read().strip()
            if text:
                return text
        if code is not None and code < 0:
            return f"agent {self.index}: killed by signal {signal.Signals(-code).name} (pid {self.process.pid})"
        last = _last_line(self.stderr_path)
        return f"agent {self.index}: exited with code {code}" + (f": {last}" if last else "")

    def result(self) -> dict:
        """The JSON result the agent printed as its last stdout line."""
        line = _last_line(self.stdout_path)
        try:
            return json.loads(line)
        except ValueError:
            raise RuntimeError(f"agent {self.index} exited 0 without a JSON result (last stdout line: {line!r})") from None


def _listening_line(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith('{"event": "listening"'):
                    return json.loads(line)
    except (OSError, ValueError):
        return None
    return None


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class LocalCluster:
    def __init__(
        self, job_path: str, agents: int, slots: int, threads: int | None, memory_budget: str | None, workdir: str, attempt: int = 0
    ):
        self.job_path = os.path.abspath(job_path)
        self.agent_count = agents
        self.slots = slots
        self.threads = threads
        self.memory_budget = memory_budget
        self.workdir = workdir
        self.attempt = attempt
        self.agents: list[AgentProcess] = []
        self.failed_index: int | None = None  # set by the supervisor to the agent whose failure ended the run

    def start(self) -> None:
        """Start every agent on ports the kernel picks, learn them from each agent's `listening` line,
        then hand all of them the peer list (a file renamed into place): no port is chosen here that
        another process could take before the agent binds it."""
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(sabot_agent.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        peers_file = os.path.join(self.workdir, "peers")
        for index in range(self.agent_count):
            command = [
                sys.executable, "-m", "sabot_agent",
                "--job", self.job_path,
                "--agent-index", str(index),
                "--agent-count", str(self.agent_count),
                "--bind-host", LOOPBACK,
                "--advertise-host", LOOPBACK,
                "--flight-port", "0",
                "--http-port", "0",
                "--slots", str(self.slots),
                "--peers-file", peers_file,
                "--attempt", str(self.attempt),
                "--spill-dir", os.path.join(self.workdir, "spill"),
                "--termination-log", os.path.join(self.workdir, f"agent-{index}.reason"),
            ]  # fmt: skip
            if self.threads is not None:
                command += ["--threads", str(self.threads)]
            if self.memory_budget is not None:
                command += ["--memory-budget", self.memory_budget]
            stdout_path = os.path.join(self.workdir, f"agent-{index}.out")
            stderr_path = os.path.join(self.workdir, f"agent-{index}.err")
            with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
                process = subprocess.Popen(
                    command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, preexec_fn=_child_setup
                )
            self.agents.append(AgentProcess(index, 0, 0, process, stdout_path, stderr_path, os.path.join(self.workdir, f"agent-{index}.reason")))
        self._learn_ports()
        temporary = peers_file + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{LOOPBACK}:{agent.flight_port}\n" for agent in self.agents))
        os.replace(temporary, peers_file)

    def _learn_ports(self) -> None:
        """Each agent's ports, from the JSON `listening` line it writes to stderr once its servers listen."""
        deadline = time.monotonic() + LISTEN_TIMEOUT_SECONDS
        pending = list(self.agents)
        while pending:
            for agent in list(pending):
                listening = _listening_line(agent.stderr_path)
                if listening is not None:
                    agent.flight_port, agent.http_port = listening["flight_port"], listening["http_port"]
                    pending.remove(agent)
                elif agent.process.poll() is not None:
                    return  # it failed to start: the supervisor reports why
            if pending and time.monotonic() >= deadline:
                raise RuntimeError(f"agents {[agent.index for agent in pending]} did not start listening within {LISTEN_TIMEOUT_SECONDS:g}s")
            if pending:
                time.sleep(LISTEN_POLL_SECONDS)

    def poll(self) -> list[int | None]:
        return [agent.process.poll() for agent in self.agents]

    def stop(self) -> None:
        """SIGTERM every agent's process group, SIGKILL what is still there after a grace period."""
        for agent in self.agents:
            if agent.process.poll() is None:
                _signal_group(agent.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for agent in self.agents:
            try:
                agent.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for agent in self.agents:
            # a reaped agent's pid (= its group id) may be reused: only signal groups whose leader we still hold
            if agent.process.poll() is None:
                _signal_group(agent.process.pid, signal.SIGKILL)
                agent.process.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
