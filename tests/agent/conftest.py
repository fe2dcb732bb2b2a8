"""Fixtures for the agent tests: real agent processes on 127.0.0.1, cleaned up after every test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_DIR = os.path.join(REPO, "agent")
if AGENT_DIR not in sys.path:
    sys.path.insert(0, AGENT_DIR)

STARTUP_TIMEOUT = 30.0


def native_or_skip():
    """The agent needs the native kernels (checksums, partitioning, aggregation); there is no fallback."""
    try:
        import sabot_native
    except ModuleNotFoundError as exc:
        if os.environ.get("CI"):  # CI builds the kernels first: a missing module there is a failure, not a skip
            pytest.fail(f"sabot_native is not importable in CI: {exc}")
        pytest.skip(f"sabot_native is not built ({exc}); run `make build`")
    return sabot_native


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [AGENT_DIR, env.get("PYTHONPATH")]))
    return env


class ServingAgent:
    """`python -m sabot_agent --serve` in its own process group; ports are read from its 'listening' line."""

    def __init__(self, tmp_path, name: str, *extra: str):
        self.stderr_path = tmp_path / f"{name}.err"
        command = [sys.executable, "-m", "sabot_agent", "--serve", "--bind-host", "127.0.0.1", "--flight-port", "0", "--http-port", "0",
                   "--spill-dir", str(tmp_path / f"{name}-spill"), *extra]  # fmt: skip
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL, env=child_env(), start_new_session=True)
        self.spill_dir = tmp_path / f"{name}-spill"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            listening = self._listening_line()
            if listening:
                self.flight_port, self.http_port = listening["flight_port"], listening["http_port"]
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}: {self.stderr_path.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent did not start within {STARTUP_TIMEOUT}s: {self.stderr_path.read_text()}")
            time.sleep(0.02)  # polling the agent's startup line

    def _listening_line(self) -> dict | None:
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("{") and '"listening"' in line:
                return json.loads(line)
        return None

    @property
    def peer(self) -> str:
        return f"127.0.0.1:{self.flight_port}"

    def http_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def serve_agent(tmp_path):
    native_or_skip()
    started: list[ServingAgent] = []

    def start(name: str = "agent", *extra: str) -> ServingAgent:
        agent = ServingAgent(tmp_path, name, *extra)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def process_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def agent_processes(job_path) -> dict[int, list[str]]:
    """The running `sabot_agent` processes of one job file: pid -> argv. Scoped to the job so other
    agents on the machine (benchmarks, other test runs) never count."""
    wanted = os.path.realpath(job_path)
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
        except OSError:
            continue
        job_args = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--job"]
        if "sabot_agent" in argv and any(os.path.realpath(arg) == wanted for arg in job_args) and process_alive(int(entry)):
            found[int(entry)] = argv
    return found
