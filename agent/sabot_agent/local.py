"""Local mode's process supervisor: N `python -m sabot_agent` processes on loopback ports.

Each agent runs in its own session (process group) and gets SIGKILL from the kernel if this process
dies (PR_SET_PDEATHSIG), so neither a failure, Ctrl-C nor a killed `sabot run` leaves agents behind.

Unless the job sets `spec.security.tls: disabled`, the agents talk mutual TLS: a new CA and one
certificate per agent (security.issue_job_certificates) are written to `<workdir>/tls` (mode 0700,
files 0600) and removed as soon as every agent has read them (an agent listens only after loading its
key), and again by stop(), so no key stays on disk after a success, a failure or Ctrl-C, even with
--keep-workdir.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import sabot_agent
from sabot_agent.jobspec import load_job_file
from sabot_agent.security import AgentIdentity, JobCertificates, issue_job_certificates, tls_enabled

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
TERMINATE_GRACE_SECONDS = 3.0
LISTEN_TIMEOUT_SECONDS = 120.0
LISTEN_POLL_SECONDS = 0.01
TLS_DIR = "tls"


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


def local_certificates(job_name: str, attempt: int, agent_count: int) -> JobCertificates:
    """A new CA and a certificate per agent, valid for the addresses local agents dial."""
    identities = [AgentIdentity(job_name, attempt, index) for index in range(agent_count)]
    return issue_job_certificates(identities, [["localhost", LOOPBACK]] * agent_count)


def write_certificates(directory: str, certificates: JobCertificates, indices: list[int] | None = None) -> dict[int, list[str]]:
    """ca.crt and agent-<i>.crt/.key (every agent's, or those of `indices`) in a new directory only this
    user can enter; returns each agent's --tls-cert/--tls-key/--tls-ca arguments."""
    os.mkdir(directory, 0o700)

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)
        return path

    ca = write("ca.crt", certificates.ca)
    chosen = range(len(certificates.agents)) if indices is None else indices
    return {
        index: ["--tls-cert", write(f"agent-{index}.crt", certificates.agents[index].certificate),
                "--tls-key", write(f"agent-{index}.key", certificates.agents[index].key), "--tls-ca", ca]
        for index in chosen
    }  # fmt: skip


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
        self, job_path: str, agents: int, slots: int, threads: int | None, memory_budget: str | None, workdir: str, attempt: int = 0,
        certificates: JobCertificates | None = None, run_id: str = "", replaceable: bool = False,
    ):
        self.job_path = os.path.abspath(job_path)
        self.agent_count = agents
        self.slots = slots
        self.threads = threads
        self.memory_budget = memory_budget
        self.workdir = workdir
        self.attempt = attempt
        # given: the agents use these instead of new ones (a test that keeps an agent's key to call them)
        self.certificates = certificates
        self.run_id = run_id
        self.replaceable = replaceable  # the supervisor replaces lost agents: they wait for lost peers
        self.tls_dir = os.path.join(workdir, TLS_DIR)
        self.agents: list[AgentProcess] = []
        self.replaced: list[AgentProcess] = []  # agents that were replaced, oldest first
        self.failed_index: int | None = None  # set by the supervisor to the agent whose failure ended the run
        self._env: dict[str, str] = {}

    def start(self) -> None:
        """Start every agent on ports the kernel picks, learn them from each agent's `listening` line,
        then hand all of them the peer list (a file renamed into place): no port is chosen here that
        another process could take before the agent binds it."""
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(sabot_agent.__file__)))
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, self._env.get("PYTHONPATH")]))
        job = load_job_file(self.job_path)  # for spec.security; the CLI checked the file and its inputs
        if tls_enabled(job.raw["spec"]) and self.certificates is None:
            # kept for the run: a replacement agent gets the key of the agent it replaces
            self.certificates = local_certificates(job.name, self.attempt, self.agent_count)
        elif not tls_enabled(job.raw["spec"]):
            self.certificates = None
        tls_arguments = write_certificates(self.tls_dir, self.certificates) if self.certificates else {}
        for index in range(self.agent_count):
            self.agents.append(self._spawn(index, 0, tls_arguments.get(index, []), f"agent-{index}"))
        self._learn_ports(self.agents)
        self.remove_certificates()  # each agent read its key before it listened
        peers_file = self._peers_file()
        temporary = peers_file + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{LOOPBACK}:{agent.flight_port}\n" for agent in self.agents))
        os.replace(temporary, peers_file)

    def replace(self, index: int) -> AgentProcess:
        """Kill agent `index` (if it still runs) and start a new one of the same index on the same Flight
        port, with the same key and run id: its peers, which wait for it, find it where the old one was."""
        old = self.agents[index]
        if old.process.poll() is None:
            _signal_group(old.process.pid, signal.SIGKILL)
        old.process.wait()
        tls_arguments = write_certificates(self.tls_dir, self.certificates, [index]) if self.certificates else {}
        try:
            replacement = sum(replaced.index == index for replaced in self.replaced) + 1
            agent = self._spawn(index, old.flight_port, tls_arguments.get(index, []), f"agent-{index}.{len(self.replaced) + 1}", replacement)
            self.replaced.append(old)
            self.agents[index] = agent
            self._learn_ports([agent])
        finally:
            self.remove_certificates()
        return agent

    def _peers_file(self) -> str:
        return os.path.join(self.workdir, "peers")

    def _spawn(self, index: int, flight_port: int, tls_arguments: list[str], log_name: str, replacement: int = 0) -> AgentProcess:
        command = [
            sys.executable, "-m", "sabot_agent",
            "--job", self.job_path,
            "--agent-index", str(index),
            "--agent-count", str(self.agent_count),
            "--bind-host", LOOPBACK,
            "--advertise-host", LOOPBACK,
            "--flight-port", str(flight_port),
            "--http-port", "0",
            "--slots", str(self.slots),
            "--peers-file", self._peers_file(),
            "--attempt", str(self.attempt),
            "--run-id", self.run_id,
            "--replaceable", "1" if self.replaceable else "0",
            "--replacement", str(replacement),
            "--spill-dir", os.path.join(self.workdir, "spill", log_name),
            "--termination-log", os.path.join(self.workdir, f"{log_name}.reason"),
        ]  # fmt: skip
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        if self.memory_budget is not None:
            command += ["--memory-budget", self.memory_budget]
        command += tls_arguments
        stdout_path = os.path.join(self.workdir, f"{log_name}.out")
        stderr_path = os.path.join(self.workdir, f"{log_name}.err")
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=self._env, preexec_fn=_child_setup)
        return AgentProcess(index, flight_port, 0, process, stdout_path, stderr_path, os.path.join(self.workdir, f"{log_name}.reason"))

    def _learn_ports(self, agents: list[AgentProcess]) -> None:
        """Each agent's ports, from the JSON `listening` line it writes to stderr once its servers listen."""
        deadline = time.monotonic() + LISTEN_TIMEOUT_SECONDS
        pending = list(agents)
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
        self.remove_certificates()

    def remove_certificates(self) -> None:
        shutil.rmtree(self.tls_dir, ignore_errors=True)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
