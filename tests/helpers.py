"""Helpers shared by the test tiers: `from helpers import ...` in any test module (tests/ is on sys.path:
pytest puts it there when it loads tests/conftest.py, which every tier's tests sit below).

A module of its own rather than `from conftest import ...`: there is a conftest.py in several folders,
and which one the name `conftest` means depends on the order pytest loaded them.

- ``REPO``, ``AGENT_DIR``
- ``kget(cluster, *args)``: `kubectl get ... -o json`, parsed (cluster: anything with ``.kubectl``)
- ``stop_process(process, grace)``: SIGTERM a process's group, SIGKILL it after ``grace`` seconds, reap it
- ``control_plane(what, quiet, **options)``: a started T1 ControlPlane for a with-block, or a skip naming what
  is missing; ``fresh_namespace(cluster, prefix)``: a namespace whose default ServiceAccount exists;
  ``hostpath_claim(cluster, namespace, claim, host_dir)``: a claim bound to a hostPath PersistentVolume
- ``ensure_tool(script, env_skip)``: a tool hack/<script> builds or installs once (helm, checkov)
- agent processes: ``child_env()``, ``require_native()``, ``process_alive(pid)``, ``agent_processes(job)``,
  ``ServingAgent`` (`sabot-agent --serve`; tests/agent's ``serve_agent`` fixture starts and stops them),
  ``start_sabot_run(path, cwd, *args)``: `sabot run PATH --json` in its own process group, output piped
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT_DIR = REPO / "agent"
for _folder in (AGENT_DIR, REPO / "hack" / "cluster"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
import controlplane  # noqa: E402
from controlplane import wait_for  # noqa: E402,F401 - re-exported for the tests


def kget(cluster, *args: str) -> dict:
    """kubectl get ... -o json, parsed."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a process started with start_new_session=True, and everything in its process group:
    SIGTERM, then SIGKILL after `grace` seconds (at once with grace=0). Reaps it; a no-op once it exited."""
    if process.poll() is not None:
        return
    if grace > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def control_plane(what: str = "T1 control plane", quiet: bool = False, **options):
    """A started hack/cluster ControlPlane(**options) for the with-block, stopped afterwards (its
    directory kept with SABOT_KEEP_CLUSTER_DIR=1). Skips naming the missing piece when its binaries cannot
    be had (Go, the module proxy, etcd); SABOT_E2E_NO_BUILD=1 skips instead of building them. `quiet`
    hides the progress of a (cold: minutes) build of those binaries."""
    try:
        binaries = controlplane.ensure_binaries(build=os.environ.get("SABOT_E2E_NO_BUILD") != "1", quiet=quiet)
    except controlplane.MissingPrerequisite as error:
        pytest.skip(f"{what} unavailable: {error}")
    plane = controlplane.ControlPlane(binaries, **options)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop(remove=not os.environ.get("SABOT_KEEP_CLUSTER_DIR"))


@contextlib.contextmanager
def fresh_namespace(cluster, prefix: str):
    """A new namespace for the with-block; pods are rejected by ServiceAccount admission until the
    controller-manager created its default ServiceAccount, so that is waited for. Deleted afterwards
    without waiting (pod-bearing namespaces take a while to finalize)."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
             timeout=30, what=f"default ServiceAccount in {name}")  # fmt: skip
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def hostpath_claim(cluster, namespace: str, claim: str, host_dir, access_mode: str = "ReadWriteOnce") -> None:
    """A PersistentVolumeClaim `claim` in `namespace`, bound to a hostPath PersistentVolume of the
    existing directory `host_dir` on a one-node cluster (so any access mode holds). The volume is
    pre-bound to the claim (claimRef, volumeName) and named after both; it outlives the claim (Retain),
    and the directory with it."""
    volume = f"{namespace}-{claim}"
    docs = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [access_mode], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain",
                  "hostPath": {"path": str(host_dir), "type": "Directory"},
                  "claimRef": {"namespace": namespace, "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": [access_mode], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    wait_for(lambda: kget(cluster, "pvc", claim, "-n", namespace)["status"].get("phase") == "Bound", 30,
             what=f"PVC {claim} Bound")


def ensure_tool(script: str, env_skip: str) -> str:
    """Run hack/<script> (builds or installs once, then cached) and return the path it prints, or skip
    naming what is missing. With <env_skip>=1 in the environment nothing is built: the test skips
    unless the tool is cached."""
    command = [str(REPO / "hack" / script)]
    if os.environ.get(env_skip) == "1":
        command.append("--check")
    result = subprocess.run(command, capture_output=True, text=True, timeout=3000)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "not cached"
        pytest.skip(f"{script}: {reason}" + (f" ({env_skip}=1)" if len(command) > 1 else ""))
    return result.stdout.strip().splitlines()[-1]


def child_env() -> dict:
    """The environment for a child `python -m sabot_agent...`: this checkout's agent package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AGENT_DIR), env.get("PYTHONPATH")]))
    return env


def start_sabot_run(path, cwd, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`sabot run PATH --json ARGS` started in its own process group (stop it with stop_process), its
    stdout and stderr piped as text; `env` adds variables. SIGINT reaches it as from a terminal even
    when the suite itself ignores SIGINT (started in the background: `make test &`)."""
    return subprocess.Popen([sys.executable, "-m", "sabot_agent.cli", "run", str(path), "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(child_env(), **(env or {})), cwd=cwd, start_new_session=True,
                            preexec_fn=_default_interrupt)  # fmt: skip


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def require_native():
    """The agent's native kernels (checksums, partitioning, aggregation); there is no fallback, and
    building them is part of the project (`make build`), so their absence fails the test."""
    try:
        import sabot_native
    except ModuleNotFoundError as exc:
        pytest.fail(f"sabot_native is not built ({exc}); run `make build`")
    return sabot_native


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


def agent_http_port(argv: list[str]) -> int | None:
    """The HTTP port a `sabot run` agent listens on (it binds port 0 and writes a `listening` line to
    agent-<i>.err beside its termination log), or None while it does not listen yet."""
    log = argv[argv.index("--termination-log") + 1]
    try:
        with open(log[: -len(".reason")] + ".err", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith('{"event": "listening"'):
                    return json.loads(line)["http_port"]
    except (OSError, ValueError):
        return None
    return None


AGENT_STARTUP_TIMEOUT = 30.0


class ServingAgent:
    """`python -m sabot_agent --serve` in its own process group; ports are read from its 'listening' line."""

    def __init__(self, tmp_path, name: str, *extra: str):
        self.stderr_path = tmp_path / f"{name}.err"
        command = [sys.executable, "-m", "sabot_agent", "--serve", "--bind-host", "127.0.0.1", "--flight-port", "0", "--http-port", "0",
                   "--spill-dir", str(tmp_path / f"{name}-spill"), *extra]  # fmt: skip
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL, env=child_env(), start_new_session=True)
        self.spill_dir = tmp_path / f"{name}-spill"
        deadline = time.monotonic() + AGENT_STARTUP_TIMEOUT
        while True:
            listening = self._listening_line()
            if listening:
                self.flight_port, self.http_port = listening["flight_port"], listening["http_port"]
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}: {self.stderr_path.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent did not start within {AGENT_STARTUP_TIMEOUT}s: {self.stderr_path.read_text()}")
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
        stop_process(self.process)
