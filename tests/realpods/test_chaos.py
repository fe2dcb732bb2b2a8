"""The chaos matrix on real pods (T2): one agent pod of a multi-stage SQL job (a hash join feeding an
aggregation) is lost at each point of the job, two at once, one hung, and the operator is killed while
an agent is lost. Each case: the operator replaces only the lost agent — a new pod of the same name in
the same attempt — and the job Succeeds on attempt 1 with the result duckdb computes from the same
files and the checksum of an undisturbed run (nothing counted twice); status.replacements tells which
agent was replaced and why; every agent process has ended and no extra pod is left.

Agents lose themselves with failpoints (sabot_agent.failpoints) passed through spec.pod.env: a kill is
the agent's own SIGKILL (exit code 137, as the OOM killer's), a hang its own SIGSTOP, which the
kubelet's liveness probe turns into a kill after spec.recovery.hungAfterSeconds. A failpoint without a
marker file fires only in an agent's first pod, so its replacement runs through.

The operator runs here as its own process (`python -m sabot_operator.main`, cluster-wide), not the
in-process one of the other modules, so that one case can SIGKILL it and start it again.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from engine_support import assert_same_rows, job_document
from helpers import REPO, child_env, fresh_namespace, stop_process, wait_for
from recovery_support import CASES, QUERY, TWO_AT_ONCE, recovery_inputs, reference_rows, write_recovery_data
from test_realpods import agent_logs, agent_pods, on_real_pods, run_job, status_of

AGENTS = 3
HUNG_AFTER_SECONDS = 10
JOB_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OperatorProcess:
    """`sabot-operator` as a process of its own, watching every namespace."""

    def __init__(self, kubeconfig, log_path):
        self.kubeconfig, self.log_path = kubeconfig, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**child_env(), "KUBECONFIG": str(self.kubeconfig)}
        command = [sys.executable, "-m", "sabot_operator.main", "--metrics-port", str(free_port()), "--health-port", str(free_port())]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def operator_process(realpods_cluster, tmp_path_factory):
    operator = OperatorProcess(realpods_cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(scope="module")
def chaos_data(tmp_path_factory):
    return write_recovery_data(tmp_path_factory.mktemp("chaos-data"), files=6, rows_per_file=50_000)


def chaos_job(cluster, s3, namespace: str, data, name: str, failpoints: list[str] = (), recovery: dict | None = None) -> tuple[dict, str]:
    job = job_document(name, recovery_inputs(data), data / "unused-output", agents=AGENTS, slots=2, sql=QUERY)
    job["spec"]["recovery"] = recovery or {}
    job["spec"]["retry"] = {"limit": 0}  # a case that needs a second attempt fails: recovery is within the attempt
    if failpoints:
        job["spec"]["pod"] = {"env": [{"name": "SABOT_FAILPOINT", "value": ";".join(failpoints)}]}
    return on_real_pods(cluster, s3, namespace, job)


def assert_recovered(cluster, s3, namespace: str, name: str, status: dict, output: str, data, undisturbed: dict, lost: list[int]) -> list[dict]:
    """The job ended on attempt 1 with the exact result, `lost` agents replaced once each; returns status.replacements."""
    pods = agent_pods(cluster, namespace, name)
    failpoints = {pod["metadata"]["name"]: [e for e in pod["spec"]["containers"][0]["env"] if e["name"].startswith(("SABOT_FAILPOINT", "SABOT_REPLACE"))]
                  for pod in pods}
    where = f"status: {yaml.safe_dump(status)}\npods' failpoints: {failpoints}\nagent logs:\n{agent_logs(cluster, namespace, name)}"
    assert status["attempt"] == 1 and status["failedAttempts"] == 0, where
    replacements = status.get("replacements", [])
    assert sorted(entry["agent"] for entry in replacements) == sorted(lost), where
    assert all(entry["attempt"] == 1 for entry in replacements), where
    manifest, table = s3.read(output)
    assert_same_rows([tuple(row.values()) for row in table.to_pylist()], reference_rows(data), ordered=True)
    assert (manifest["rows"], manifest["checksum"]) == (undisturbed["rows"], undisturbed["checksum"]), (manifest, undisturbed)
    assert manifest["attempt"] == 1
    # one pod per agent (the lost ones' replaced, not added to), every agent process ended by itself
    assert sorted(pod["metadata"]["name"] for pod in pods) == [f"{name}-agent-{index}" for index in range(AGENTS)], where
    assert {pod["status"]["phase"] for pod in pods} == {"Succeeded"}, where
    for pod in pods:
        replaced = pod["metadata"]["labels"]["sabot.io/agent-index"] in {str(index) for index in lost}
        assert pod["metadata"]["labels"]["sabot.io/replacement"] == ("1" if replaced else "0"), where
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout
    reasons = [event["reason"] for event in json.loads(events)["items"]]
    assert reasons.count("AgentReplaced") == len(lost) and "AttemptFailed" not in reasons, reasons
    return replacements


@pytest.fixture(scope="module")
def undisturbed(realpods_cluster, operator_process, pod_s3, chaos_data):
    """The manifest of the job run without any failure."""
    with fresh_namespace(realpods_cluster, "t2-chaos-") as namespace:
        job, output = chaos_job(realpods_cluster, pod_s3, namespace, chaos_data, "undisturbed")
        status, _ = run_job(realpods_cluster, namespace, job, timeout=JOB_TIMEOUT)
        assert "replacements" not in status and status["attempt"] == 1
        manifest, table = pod_s3.read(output)
        assert_same_rows([tuple(row.values()) for row in table.to_pylist()], reference_rows(chaos_data), ordered=True)
        return manifest


@pytest.mark.parametrize("failpoint", [case[0] for case in CASES], ids=[case[1] for case in CASES])
def test_a_lost_agent_pod_is_replaced_and_the_result_is_exact(realpods_cluster, operator_process, pod_s3, namespace, chaos_data, undisturbed, failpoint):
    agent, action = int(failpoint.split(":")[0]), failpoint.rsplit(":", 1)[-1]
    name = "chaos"
    recovery = {"hungAfterSeconds": HUNG_AFTER_SECONDS} if action == "stop" else None
    job, output = chaos_job(realpods_cluster, pod_s3, namespace, chaos_data, name, [failpoint], recovery)
    status, _ = run_job(realpods_cluster, namespace, job, timeout=JOB_TIMEOUT)
    [replacement] = assert_recovered(realpods_cluster, pod_s3, namespace, name, status, output, chaos_data, undisturbed, [agent])
    # a hung agent is killed by the kubelet once its liveness probe has failed for hungAfterSeconds
    expected = "killed by SIGTERM (exit code 143)" if action == "term" else "killed by SIGKILL (exit code 137)"
    assert replacement["reason"].startswith(expected), replacement


def test_two_agent_pods_lost_at_once_are_both_replaced(realpods_cluster, operator_process, pod_s3, namespace, chaos_data, undisturbed):
    job, output = chaos_job(realpods_cluster, pod_s3, namespace, chaos_data, "chaos", TWO_AT_ONCE)
    status, _ = run_job(realpods_cluster, namespace, job, timeout=JOB_TIMEOUT)
    assert_recovered(realpods_cluster, pod_s3, namespace, "chaos", status, output, chaos_data, undisturbed, [1, 2])


def test_an_agent_lost_while_the_operator_is_down_is_replaced_when_it_is_back(realpods_cluster, operator_process, pod_s3, namespace, chaos_data, undisturbed):
    """SIGKILL the operator as soon as it created the agents (they run, and agent 2 hangs at the join
    within a second of starting: waiting for the job to be Running could let the operator replace it
    first); agent 2's liveness probe fails it hungAfterSeconds later, while the operator is down (its
    peers wait for it); the operator started again finds the lost agent and replaces it, creating
    nothing twice."""
    name = "chaos"
    job, output = chaos_job(realpods_cluster, pod_s3, namespace, chaos_data, name, ["2:task:1:stop"], {"hungAfterSeconds": HUNG_AFTER_SECONDS})
    realpods_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
    wait_for(lambda: len(agent_pods(realpods_cluster, namespace, name)) == AGENTS, JOB_TIMEOUT, interval=0.1, what="the agents' pods created")
    operator_process.kill()
    try:
        def agent_2_failed():
            return any(pod["metadata"]["labels"]["sabot.io/agent-index"] == "2" and pod["status"].get("phase") == "Failed"
                       for pod in agent_pods(realpods_cluster, namespace, name))

        try:
            wait_for(agent_2_failed, JOB_TIMEOUT, what="agent 2's pod Failed while the operator is down")
        except TimeoutError as error:
            states = {pod["metadata"]["name"]: (pod["status"].get("phase"), pod["status"].get("containerStatuses"))
                      for pod in agent_pods(realpods_cluster, namespace, name)}
            raise AssertionError(f"{error}\npods: {states}\nagent logs:\n{agent_logs(realpods_cluster, namespace, name)}") from None
        assert "replacements" not in status_of(realpods_cluster, namespace, name)  # nobody acted on it yet
    finally:
        operator_process.start()
    wait_for(lambda: status_of(realpods_cluster, namespace, name).get("phase") in ("Succeeded", "Failed"), JOB_TIMEOUT, what="the job finished")
    status = status_of(realpods_cluster, namespace, name)
    assert status["phase"] == "Succeeded", f"{yaml.safe_dump(status)}\noperator log:\n{operator_process.log_tail()}"
    assert_recovered(realpods_cluster, pod_s3, namespace, name, status, output, chaos_data, undisturbed, [2])
