"""The operator against a REAL kube-apiserver (T1: etcd, apiserver, controller-manager, scheduler, kwok).

Under kwok no container runs: kwok marks a bound pod Running and Ready, and nothing ever ends it. The
tests therefore play the agents' part themselves: they patch a pod's status to Failed or Succeeded
with the termination message an agent would write. Everything else is real: the CRD's schema and CEL
rules in the API server, ownerReferences and the garbage collector, kopf watching the API, and the
operator running in-process with kopf.testing.KopfRunner.
"""
from __future__ import annotations

import contextlib
import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from helpers import kget, wait_for
from invalid_specs import INVALID_SPECS
from sabotjobs import agent_result, sabot_job, status_result
from sabot_operator import builders, crd, handlers, kube

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "sabotjob.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def cluster(kube_cluster):
    """The T1 cluster with the SabotJob CRD installed and established."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.PLURAL}.{crd.GROUP}", "--timeout=30s")
    return kube_cluster


@pytest.fixture
def kubeconfig_env(cluster, monkeypatch):
    """Point the in-process operator (kopf's login and the kubernetes client) at the test cluster.
    The client takes its default kubeconfig path from $KUBECONFIG once, at import: patch both."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))


@contextlib.contextmanager
def operator(namespace: str):
    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "sabot_operator.handlers"]) as runner:
        yield runner
    assert runner.exception is None, runner.output


def manifest(name: str, spec_patch: dict | None = None) -> dict:
    job = sabot_job(name, spec_patch)
    return {key: job[key] for key in ("apiVersion", "kind", "spec")} | {"metadata": {"name": name}}


def apply(cluster, namespace: str, document: dict, *extra: str, check: bool = True):
    return cluster.kubectl("apply", "-n", namespace, *extra, "-f", "-", input=json.dumps(document), check=check)


def status_of(cluster, namespace: str, name: str) -> dict:
    return kget(cluster, "sabotjob", name, "-n", namespace).get("status", {})


def wait_for_status(cluster, namespace: str, name: str, what: str, predicate, timeout: float = 30) -> dict:
    return wait_for(lambda: (lambda status: status if predicate(status) else None)(status_of(cluster, namespace, name)), timeout=timeout, what=what)


def agent_pods(cluster, namespace: str, name: str) -> list[dict]:
    return kget(cluster, "pods", "-n", namespace, "-l", builders.pod_selector(name))["items"]


def live_pods_of_attempt(cluster, namespace: str, name: str, attempt: int, count: int) -> list[dict]:
    def ready():
        pods = [p for p in agent_pods(cluster, namespace, name) if not p["metadata"].get("deletionTimestamp")]
        current = [p for p in pods if p["metadata"]["labels"][builders.LABEL_ATTEMPT] == str(attempt)]
        return current if len(current) == count == len(pods) else None

    return sorted(wait_for(ready, timeout=30, what=f"{count} pods of attempt {attempt}"), key=lambda p: p["metadata"]["name"])


def end_pod(cluster, namespace: str, pod_name: str, phase: str, message: str, exit_code: int | None = None) -> None:
    """Do what the kubelet does when the agent exits: terminal phase plus termination message."""
    terminated = {"exitCode": exit_code if exit_code is not None else 0 if phase == "Succeeded" else 1, "reason": "Completed" if phase == "Succeeded" else "Error", "message": message}
    status = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": builders.AGENT_CONTAINER, "image": crd.DEFAULT_IMAGE, "imageID": "", "ready": False, "restartCount": 0, "state": {"terminated": terminated}}],
    }
    cluster.kubectl("patch", "pod", pod_name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def events_of(cluster, namespace: str, name: str) -> list[str]:
    events = kget(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name},involvedObject.kind={crd.KIND}")["items"]
    return [event["reason"] for event in events]


# ------------------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("name, spec_patch, field, api_fragment", [case[1:] for case in INVALID_SPECS], ids=[case[0] for case in INVALID_SPECS])
def test_api_server_rejects_invalid_sabotjob(cluster, namespace, name, spec_patch, field, api_fragment):
    result = apply(cluster, namespace, manifest(name or "invalid", spec_patch), "--dry-run=server", check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert api_fragment in result.stderr, result.stderr
    assert field.split(".")[-1] in result.stderr, result.stderr


def test_api_server_accepts_a_valid_sabotjob_and_defaults_it(cluster, namespace):
    apply(cluster, namespace, manifest("valid"))
    spec = kget(cluster, "sabotjob", "valid", "-n", namespace)["spec"]
    assert spec["flightPort"] == crd.DEFAULT_FLIGHT_PORT and spec["retry"] == {"limit": 3, "backoffSeconds": 10}


def test_api_server_accepts_a_sql_job(cluster, namespace):
    sql = {"pipeline": {"aggregate": None, "sql": "SELECT region, sum(amount) AS total FROM sales GROUP BY region"}}
    result = apply(cluster, namespace, manifest("sql", sql), "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr


def test_spec_is_immutable_while_running_except_suspend(cluster, namespace):
    apply(cluster, namespace, manifest("frozen"))
    cluster.kubectl("patch", "sabotjob", "frozen", "-n", namespace, "--subresource=status", "--type=merge", "-p", '{"status": {"phase": "Running"}}')
    edit = cluster.kubectl("patch", "sabotjob", "frozen", "-n", namespace, "--type=merge", "-p", '{"spec": {"image": "sabot:other"}}', check=False)
    assert edit.returncode != 0 and "spec is immutable while the job is Starting or Running" in edit.stderr, edit.stderr
    cluster.kubectl("patch", "sabotjob", "frozen", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    cluster.kubectl("patch", "sabotjob", "frozen", "-n", namespace, "--subresource=status", "--type=merge", "-p", '{"status": {"phase": "Suspended"}}')
    cluster.kubectl("patch", "sabotjob", "frozen", "-n", namespace, "--type=merge", "-p", '{"spec": {"image": "sabot:other"}}')


# ------------------------------------------------------------------------------------------ operator


def test_apply_creates_agents_with_unique_ports_service_and_plan(cluster, namespace, kubeconfig_env):
    spec = {"agents": 3, "slotsPerAgent": 4, "hostNetwork": True, "flightPort": 9000, "metricsPort": 9100}
    with operator(namespace):
        apply(cluster, namespace, manifest("hostnet", spec))
        pods = live_pods_of_attempt(cluster, namespace, "hostnet", 1, 3)
        ports = [{p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]} for pod in pods]
        assert ports == [{"flight": 9000 + i, "http": 9100 + i} for i in range(3)]
        envs = [{e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]} for pod in pods]
        assert [env["SABOT_SLOTS"] for env in envs] == ["4", "4", "4"]
        assert [env["SABOT_AGENT_INDEX"] for env in envs] == ["0", "1", "2"]
        assert all(ref["kind"] == crd.KIND and ref["controller"] for pod in pods for ref in pod["metadata"]["ownerReferences"])

        service = kget(cluster, "service", "hostnet-agents", "-n", namespace)
        assert service["spec"]["clusterIP"] == "None"
        plan = kget(cluster, "configmap", "hostnet-plan", "-n", namespace)
        assert plan["data"]["peers"].splitlines() == [f"hostnet-agent-{i}.hostnet-agents:{9000 + i}" for i in range(3)]
        assert yaml.safe_load(plan["data"]["job.yaml"])["metadata"]["name"] == "hostnet"

        status = wait_for_status(cluster, namespace, "hostnet", "phase Running", lambda s: s.get("phase") == "Running")
        assert status["ready"] == "3/3" and status["attempt"] == 1
        assert [agent["flightPort"] for agent in status["agents"]] == [9000, 9001, 9002]
        table = cluster.kubectl("get", "sj", "hostnet", "-n", namespace).stdout
        assert table.split("\n")[0].split() == ["NAME", "PHASE", "READY", "SLOTS", "ATTEMPT", "AGE"]
        assert table.split("\n")[1].split()[:5] == ["hostnet", "Running", "3/3", "4", "1"]


def on_a_volume(job: dict) -> dict:
    """A copy of `job` whose local paths lie on a claim mounted at /data."""
    job = copy.deepcopy(job)
    job["metadata"]["name"] += "-on-volume"
    pipeline = job["spec"]["pipeline"]
    for entry in [*pipeline["inputs"].values(), pipeline["output"]]:
        if "path" in entry and "://" not in entry["path"]:
            entry["path"] = f"/data/{entry['path']}"
    job["spec"]["volumes"] = [{"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "examples"}}]
    return job


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_examples_create_their_agents_once_their_files_are_on_a_volume(cluster, namespace, kubeconfig_env, path):
    """The examples are written for `sabot run`, with local paths: as written the operator refuses them
    (their output would vanish with the pods); with those paths on a claim it creates their agents."""
    jobs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == crd.KIND]
    with operator(namespace):
        cluster.kubectl("apply", "-n", namespace, "-f", str(path))
        for job in jobs:
            apply(cluster, namespace, on_a_volume(job))
        for job in jobs:
            name = job["metadata"]["name"]
            status = wait_for_status(cluster, namespace, name, "phase Failed", lambda s: s.get("phase") == "Failed")
            degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
            assert degraded["reason"] == "InvalidSpec" and "spec.pipeline.output.path: " in degraded["message"], degraded
            assert "would vanish with the pods" in degraded["message"] and not agent_pods(cluster, namespace, name)
            agents = job["spec"].get("agents", 1)
            pods = live_pods_of_attempt(cluster, namespace, f"{name}-on-volume", 1, agents)
            assert len({pod["metadata"]["name"] for pod in pods}) == agents
            claims = [{v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
                      for pod in pods]
            assert claims == [{"volume-data": "examples"}] * agents


def test_failed_agent_leads_to_a_retry_and_past_the_limit_to_failed(cluster, namespace, kubeconfig_env):
    with operator(namespace):
        apply(cluster, namespace, manifest("flaky", {"agents": 2, "retry": {"limit": 1, "backoffSeconds": 1}}))
        first = live_pods_of_attempt(cluster, namespace, "flaky", 1, 2)
        end_pod(cluster, namespace, first[1]["metadata"]["name"], "Failed", "flight put to agent 0 failed: connection refused")

        second = live_pods_of_attempt(cluster, namespace, "flaky", 2, 2)
        assert {pod["metadata"]["uid"] for pod in second}.isdisjoint(pod["metadata"]["uid"] for pod in first)
        env = {e["name"]: e.get("value") for e in second[0]["spec"]["containers"][0]["env"]}
        assert env["SABOT_ATTEMPT"] == "2"
        status = status_of(cluster, namespace, "flaky")
        assert status["attempt"] == 2 and status["failedAttempts"] == 1
        assert "AttemptFailed" in events_of(cluster, namespace, "flaky")

        end_pod(cluster, namespace, second[0]["metadata"]["name"], "Failed", "out of memory")
        status = wait_for_status(cluster, namespace, "flaky", "phase Failed", lambda s: s.get("phase") == "Failed")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "RetryLimitExceeded" and "out of memory" in degraded["message"]
        assert "completionTime" in status


def test_succeeded_agents_report_results_and_ttl_deletes_the_job(cluster, namespace, kubeconfig_env):
    with operator(namespace):
        apply(cluster, namespace, manifest("done", {"agents": 2, "ttlSecondsAfterFinished": 2}))
        pods = live_pods_of_attempt(cluster, namespace, "done", 1, 2)
        wait_for_status(cluster, namespace, "done", "phase Running", lambda s: s.get("phase") == "Running")
        for index, pod in enumerate(pods):
            end_pod(cluster, namespace, pod["metadata"]["name"], "Succeeded", json.dumps(agent_result(index, 5 + index)))
        status = wait_for_status(cluster, namespace, "done", "phase Succeeded", lambda s: s.get("phase") == "Succeeded")
        assert [agent["result"] for agent in status["agents"]] == [status_result(index, 5 + index) for index in range(2)]
        wait_for(lambda: cluster.kubectl("get", "sabotjob", "done", "-n", namespace, check=False).returncode != 0, timeout=30, what="TTL deletion")


def test_deleting_the_job_removes_its_children(cluster, namespace, kubeconfig_env):
    with operator(namespace):
        apply(cluster, namespace, manifest("doomed", {"agents": 2}))
        live_pods_of_attempt(cluster, namespace, "doomed", 1, 2)
        cluster.kubectl("delete", "sabotjob", "doomed", "-n", namespace, "--wait=false")

        def children_gone():
            leftovers = cluster.kubectl("get", "pods,services,configmaps", "-n", namespace, "-l", f"{builders.LABEL_JOB}=doomed", "-o", "name").stdout
            return not leftovers.strip()

        wait_for(children_gone, timeout=60, what="garbage collection of the job's children")


def test_operator_restart_mid_job_creates_no_duplicates(cluster, namespace, kubeconfig_env):
    with operator(namespace):
        apply(cluster, namespace, manifest("steady", {"agents": 3}))
        live_pods_of_attempt(cluster, namespace, "steady", 1, 3)
        before = wait_for_status(cluster, namespace, "steady", "phase Running", lambda s: s.get("phase") == "Running")
    uids = {pod["metadata"]["uid"] for pod in agent_pods(cluster, namespace, "steady")}

    with operator(namespace):
        # The restarted operator converges from status alone: same attempt, same pods...
        wait_for(lambda: status_of(cluster, namespace, "steady").get("observedGeneration") == 1, what="status observed")
        pods = live_pods_of_attempt(cluster, namespace, "steady", 1, 3)
        assert {pod["metadata"]["uid"] for pod in pods} == uids
        assert status_of(cluster, namespace, "steady")["attempt"] == before["attempt"]
        # ...and it is in control: finishing the agents finishes the job.
        for pod in pods:
            end_pod(cluster, namespace, pod["metadata"]["name"], "Succeeded", json.dumps(agent_result(0, 1)))
        wait_for_status(cluster, namespace, "steady", "phase Succeeded", lambda s: s.get("phase") == "Succeeded")
    assert {pod["metadata"]["uid"] for pod in agent_pods(cluster, namespace, "steady")} == uids


def test_suspend_removes_agents_and_resume_starts_a_new_attempt(cluster, namespace, kubeconfig_env):
    with operator(namespace):
        apply(cluster, namespace, manifest("pausable", {"agents": 2}))
        live_pods_of_attempt(cluster, namespace, "pausable", 1, 2)
        cluster.kubectl("patch", "sabotjob", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        wait_for_status(cluster, namespace, "pausable", "phase Suspended", lambda s: s.get("phase") == "Suspended")
        wait_for(lambda: not agent_pods(cluster, namespace, "pausable"), what="agents removed")

        cluster.kubectl("patch", "sabotjob", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
        live_pods_of_attempt(cluster, namespace, "pausable", 2, 2)
        status = wait_for_status(cluster, namespace, "pausable", "phase Running", lambda s: s.get("phase") == "Running")
        assert status["attempt"] == 2 and status["failedAttempts"] == 0
        assert {"Suspended", "Starting"} <= set(events_of(cluster, namespace, "pausable"))


def test_operator_validation_reports_what_cel_cannot_see(cluster, namespace, kubeconfig_env):
    """An unknown groupBy column passes the CRD (it needs the input's columns) but not the operator's
    validation, which runs the agent's own job checks: Failed, a Degraded condition and an Event,
    each naming the field."""
    with operator(namespace):
        apply(cluster, namespace, manifest("typo", {"pipeline": {"aggregate": {"groupBy": ["regon"]}}}))
        status = wait_for_status(cluster, namespace, "typo", "phase Failed", lambda s: s.get("phase") == "Failed")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "InvalidSpec" and degraded["message"].startswith("spec.pipeline.aggregate.groupBy[0]:")
        wait_for(lambda: "InvalidSpec" in events_of(cluster, namespace, "typo"), what="InvalidSpec event")
        assert not agent_pods(cluster, namespace, "typo")


def test_a_sql_syntax_error_fails_the_job_before_any_pod_exists(cluster, namespace, kubeconfig_env):
    """The operator plans the query itself: a syntax error names its line and column in the status
    and an event, and no agent is created (the inputs are on S3, which the operator never reads)."""
    inputs = {"sales": {"generate": None, "format": "parquet", "path": "s3://lake/sales/"}}
    with operator(namespace):
        apply(cluster, namespace, manifest("badsql", {"pipeline": {"aggregate": None, "inputs": inputs,
                                                                   "sql": "SELECT region, sum(amount)\nFROM sales\nWHERE amount >\n  GROUP BY region"}}))  # fmt: skip
        status = wait_for_status(cluster, namespace, "badsql", "phase Failed", lambda s: s.get("phase") == "Failed")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "InvalidSpec" and degraded["message"].startswith("spec.pipeline.sql: syntax error at line 4, column 9:"), degraded
        wait_for(lambda: "InvalidSpec" in events_of(cluster, namespace, "badsql"), what="InvalidSpec event")
        assert not agent_pods(cluster, namespace, "badsql") and not status.get("attempt"), status


def test_an_agent_that_refuses_the_query_fails_the_job_without_a_retry(cluster, namespace, kubeconfig_env):
    """A column only the (file) inputs' schemas refute: the agents exit 3 with the reason, and the job
    fails on its first attempt with it, though retry.limit would allow more."""
    inputs = {"sales": {"generate": None, "format": "parquet", "path": "s3://lake/sales/"}}
    reason = "spec.pipeline.sql: unknown column nope (columns: sales.region, sales.amount)"
    with operator(namespace):
        apply(cluster, namespace, manifest("nocolumn", {"agents": 2, "pipeline": {"aggregate": None, "inputs": inputs, "sql": "SELECT nope FROM sales"}}))
        first = live_pods_of_attempt(cluster, namespace, "nocolumn", 1, 2)
        end_pod(cluster, namespace, first[0]["metadata"]["name"], "Failed", reason, exit_code=3)
        status = wait_for_status(cluster, namespace, "nocolumn", "phase Failed", lambda s: s.get("phase") == "Failed")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "InvalidSpec" and degraded["message"] == reason, degraded
        assert status["attempt"] == 1 and not status.get("failedAttempts"), status
        wait_for(lambda: "InvalidSpec" in events_of(cluster, namespace, "nocolumn"), what="InvalidSpec event")
        wait_for(lambda: [p["metadata"]["name"] for p in agent_pods(cluster, namespace, "nocolumn") if not p["metadata"].get("deletionTimestamp")]
                 == [first[0]["metadata"]["name"]], what="the running agent stopped, the refusing one kept for its logs")  # fmt: skip


def test_active_deadline_fails_a_job_that_runs_too_long(cluster, namespace, kubeconfig_env):
    """Under kwok the agents never finish, so the job outlives activeDeadlineSeconds: Failed with the
    reason, and its agents are removed."""
    with operator(namespace):
        apply(cluster, namespace, manifest("slow", {"agents": 2, "activeDeadlineSeconds": 3}))
        live_pods_of_attempt(cluster, namespace, "slow", 1, 2)
        status = wait_for_status(cluster, namespace, "slow", "phase Failed", lambda s: s.get("phase") == "Failed")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert "activeDeadlineSeconds=3" in ready["message"], status["conditions"]
        assert any(c.get("reason") == "DeadlineExceeded" for c in status["conditions"]), status["conditions"]
        wait_for(lambda: not agent_pods(cluster, namespace, "slow"), what="agents removed after the deadline")


# ------------------------------------------------------------------------------------------ scheduling


def condition_of(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def children_of(cluster, namespace: str, name: str) -> dict[str, str]:
    """"Kind/name" -> uid of every child of the job that is not being deleted."""
    items = kget(cluster, "pods,services,configmaps,networkpolicies,secrets", "-n", namespace, "-l", f"{builders.LABEL_JOB}={name}")["items"]
    return {f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["uid"] for item in items if not item["metadata"].get("deletionTimestamp")}


def all_children(name: str) -> list[str]:
    return sorted([f"ConfigMap/{name}-plan", f"Service/{name}-agents", f"NetworkPolicy/{name}-agents", f"Secret/{name}-agent-0-tls",
                   f"Secret/{name}-agent-1-tls", f"Pod/{name}-agent-0", f"Pod/{name}-agent-1"])  # fmt: skip


def test_a_job_created_suspended_creates_nothing_until_resumed(cluster, namespace, kubeconfig_env):
    """Admission by a queue (Kueue-style): created with suspend=true, the job waits without pods,
    service or plan; resuming it starts attempt 1."""
    with operator(namespace):
        apply(cluster, namespace, manifest("queued", {"agents": 2, "suspend": True}))
        status = wait_for_status(cluster, namespace, "queued", "phase Suspended", lambda s: s.get("phase") == "Suspended")
        assert status["attempt"] == 0 and not children_of(cluster, namespace, "queued")
        cluster.kubectl("patch", "sabotjob", "queued", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
        live_pods_of_attempt(cluster, namespace, "queued", 1, 2)
        status = wait_for_status(cluster, namespace, "queued", "phase Running", lambda s: s.get("phase") == "Running")
        assert status["attempt"] == 1 and sorted(children_of(cluster, namespace, "queued")) == all_children("queued")


def test_unschedulable_agents_are_reported_and_the_startup_deadline_fails_their_attempts(cluster, namespace, kubeconfig_env):
    """No node matches the nodeSelector: the scheduler's verdict shows in AgentsScheduled and in one
    Unschedulable event per attempt; each attempt fails at startupDeadlineSeconds, its pods deleted."""
    spec = {"agents": 2, "startupDeadlineSeconds": 4, "retry": {"limit": 1, "backoffSeconds": 1}, "pod": {"nodeSelector": {"sabot.io/pool": "no-such-pool"}}}
    with operator(namespace):
        apply(cluster, namespace, manifest("nowhere", spec))
        status = wait_for_status(cluster, namespace, "nowhere", "AgentsScheduled=False/Unschedulable",
                                 lambda s: condition_of(s, "AgentsScheduled").get("reason") == "Unschedulable")
        scheduled = condition_of(status, "AgentsScheduled")
        assert scheduled["status"] == "False" and "2 of 2 agents cannot be scheduled" in scheduled["message"], scheduled
        assert "node affinity/selector" in scheduled["message"], scheduled  # the scheduler's own words
        assert status["phase"] == "Starting"

        status = wait_for_status(cluster, namespace, "nowhere", "phase Failed", lambda s: s.get("phase") == "Failed", timeout=60)
        assert status["failedAttempts"] == 2 and status["attempt"] == 2
        degraded = condition_of(status, "Degraded")
        assert degraded["reason"] == "RetryLimitExceeded" and "not ready within startupDeadlineSeconds=4" in degraded["message"], degraded
        wait_for(lambda: not agent_pods(cluster, namespace, "nowhere"), what="the attempts' pods deleted")
        expected = {"Unschedulable": 2, "StartupDeadlineExceeded": 1, "Failed": 1}
        wait_for(lambda: all(events_of(cluster, namespace, "nowhere").count(reason) == count for reason, count in expected.items()),
                 what=f"events {expected}")
        # ...and no more: one warning per attempt, not one per pass.
        reasons = events_of(cluster, namespace, "nowhere")
        assert {reason: reasons.count(reason) for reason in expected} == expected, reasons


def test_agents_beyond_the_nodes_capacity_are_counted_and_suspend_releases_them(cluster, namespace, kubeconfig_env):
    """The fake node has 32 CPUs: one agent requesting 20 fits, the second does not."""
    spec = {"agents": 2, "resources": {"requests": {"cpu": "20"}}}
    with operator(namespace):
        apply(cluster, namespace, manifest("greedy", spec))
        status = wait_for_status(cluster, namespace, "greedy", "AgentsScheduled=False/Unschedulable",
                                 lambda s: condition_of(s, "AgentsScheduled").get("reason") == "Unschedulable")
        message = condition_of(status, "AgentsScheduled")["message"]
        assert message.startswith("attempt 1: 1 of 2 agents cannot be scheduled") and "Insufficient cpu" in message, message
        assert status["phase"] == "Starting" and condition_of(status, "Degraded")["status"] == "False"

        cluster.kubectl("patch", "sabotjob", "greedy", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        wait_for_status(cluster, namespace, "greedy", "phase Suspended", lambda s: s.get("phase") == "Suspended")
        wait_for(lambda: not agent_pods(cluster, namespace, "greedy"), what="agents removed")
        assert events_of(cluster, namespace, "greedy").count("Unschedulable") == 1


# ------------------------------------------------------------------------------------------ crash safety


def stopped_pass(kc: kube.Cluster, namespace: str, name: str, stop_after: int | None = None) -> list[str]:
    """One pass of the operator, in-process; with `stop_after` the operator dies after that many of
    the pass's writes. Returns the pass's planned actions."""
    job, plan = handlers.decide(kc, namespace, name, datetime.now(timezone.utc))
    actions = plan.actions()
    for action in actions[:stop_after]:
        handlers.apply(kc, job, action)
    return [str(action) for action in actions]


def passes_until(kc: kube.Cluster, cluster, namespace: str, name: str, what: str, predicate) -> dict:
    def one_pass():
        stopped_pass(kc, namespace, name)
        status = status_of(cluster, namespace, name)
        return status if predicate(status) else None

    return wait_for(one_pass, timeout=30, interval=0.5, what=what)


def test_an_operator_stopped_after_any_write_of_a_new_jobs_first_pass_converges_when_restarted(cluster, namespace, kubeconfig_env):
    """The old failure: status written (attempt 1), then the operator died before the plan and the
    service existed. Stopped after each write of the first pass, a restarted operator completes the
    attempt: every child exists once, those made before the stop are kept (but a partial set of TLS
    Secrets, whose CA is gone: it is issued again, whole), no second attempt."""
    kc = kube.Cluster(kube.api_client())
    before = {}
    for stop_after in range(1, 8):
        name = f"crash-{stop_after}"
        apply(cluster, namespace, manifest(name, {"agents": 2}))
        actions = stopped_pass(kc, namespace, name, stop_after)
        assert actions == ["patch_status", f"create ConfigMap/{name}-plan", f"create Service/{name}-agents", f"create NetworkPolicy/{name}-agents",
                           f"create Secret/{name}-agent-0-tls", f"create Secret/{name}-agent-1-tls",
                           f"create Pod/{name}-agent-0", f"create Pod/{name}-agent-1"]  # fmt: skip
        before[name] = children_of(cluster, namespace, name)
        assert sorted(before[name]) == sorted(action.split(" ")[1] for action in actions[1:stop_after])
        assert status_of(cluster, namespace, name)["phase"] == "Starting"

    with operator(namespace):
        for name, existing in before.items():
            status = wait_for_status(cluster, namespace, name, f"{name} Running", lambda s: s.get("phase") == "Running")
            assert status["attempt"] == 1 and status["failedAttempts"] == 0, status
            after = children_of(cluster, namespace, name)
            assert sorted(after) == all_children(name), after
            partial_keys = sum(key.startswith("Secret/") for key in existing) == 1
            kept = {key: uid for key, uid in existing.items() if not (partial_keys and key.startswith("Secret/"))}
            assert {key: after[key] for key in kept} == kept, f"{name}: a child made before the stop was recreated"
            if partial_keys:
                assert after[f"Secret/{name}-agent-0-tls"] != existing[f"Secret/{name}-agent-0-tls"]
            assert {pod["metadata"]["labels"][builders.LABEL_ATTEMPT] for pod in agent_pods(cluster, namespace, name)} == {"1"}


def test_an_operator_stopped_while_resuming_with_an_edited_spec_converges_when_restarted(cluster, namespace, kubeconfig_env):
    """Suspended, edited (new Flight port and plan), resumed: the first pass of attempt 2 deletes
    the stale plan and service, the second recreates them and then the pods. Stopped after each of
    those writes, a restarted operator ends with children that all fit the edited spec."""
    kc = kube.Cluster(kube.api_client())
    stops = [(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]  # (pass of attempt 2, writes made in it)
    names = [f"edited-{pass_}-{stop_after}" for pass_, stop_after in stops]
    for name in names:
        apply(cluster, namespace, manifest(name, {"agents": 2}))
    for name in names:
        passes_until(kc, cluster, namespace, name, f"{name} Running", lambda s: s.get("phase") == "Running")
        cluster.kubectl("patch", "sabotjob", name, "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    edit = {"spec": {"suspend": False, "flightPort": 9000, "pipeline": {"shuffle": {"partitions": 12}}}}
    kept = {}
    for name, (pass_, stop_after) in zip(names, stops):
        passes_until(kc, cluster, namespace, name, f"{name} Suspended", lambda s: s.get("phase") == "Suspended" and s.get("ready") == "0/2")
        wait_for(lambda: not agent_pods(cluster, namespace, name), what=f"{name}: agents removed")
        stale = children_of(cluster, namespace, name)
        cluster.kubectl("patch", "sabotjob", name, "-n", namespace, "--type=merge", "-p", json.dumps(edit))
        if pass_ == 1:
            assert stopped_pass(kc, namespace, name) == ["patch_status", f"delete ConfigMap/{name}-plan", f"delete Service/{name}-agents"]
            wait_for(lambda: sorted(children_of(cluster, namespace, name)) == [f"NetworkPolicy/{name}-agents"],
                     what=f"{name}: stale plan and service gone (the policy still fits; suspending removed the keys)")  # fmt: skip
        actions = stopped_pass(kc, namespace, name, stop_after)
        assert actions[0] == "patch_status" and len(actions) == (3 if pass_ == 0 else 7), actions
        kept[name] = {key: uid for key, uid in children_of(cluster, namespace, name).items() if uid not in stale.values()}

    with operator(namespace):
        for name in names:
            status = wait_for_status(cluster, namespace, name, f"{name} Running", lambda s: s.get("phase") == "Running")
            assert status["attempt"] == 2 and status["failedAttempts"] == 0, status
            after = children_of(cluster, namespace, name)
            assert sorted(after) == all_children(name), after
            assert {key: after[key] for key in kept[name]} == kept[name], f"{name}: a child made before the stop was recreated"
            plan = kget(cluster, "configmap", f"{name}-plan", "-n", namespace)["data"]
            assert plan["peers"].splitlines() == [f"{name}-agent-{i}.{name}-agents:9000" for i in range(2)]
            assert yaml.safe_load(plan["job.yaml"])["spec"]["pipeline"]["shuffle"]["partitions"] == 12
            ports = {port["name"]: port["port"] for port in kget(cluster, "service", f"{name}-agents", "-n", namespace)["spec"]["ports"]}
            assert ports["flight"] == 9000
            for pod in agent_pods(cluster, namespace, name):
                env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
                assert (pod["metadata"]["labels"][builders.LABEL_ATTEMPT], env["SABOT_FLIGHT_PORT"]) == ("2", "9000")


# ------------------------------------------------------------------------------------------ cert-manager

# A stand-in for cert-manager's Certificate CRD (same group, version, kind and status subresource; its
# schema keeps any field): cert-manager itself is not part of this tier, so the test plays its part
# and marks the Certificates Ready. What runs for real: the operator's create/list/delete of
# cert-manager.io/v1 Certificates in the API server, and the order pods come in.
CERTIFICATE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io",
        "scope": "Namespaced",
        "names": {"kind": "Certificate", "plural": "certificates", "singular": "certificate", "listKind": "CertificateList"},
        "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}  # fmt: skip


def test_with_an_issuer_ref_pods_wait_for_ready_certificates(cluster, namespace, kubeconfig_env):
    cluster.kubectl("apply", "-f", "-", input=json.dumps(CERTIFICATE_CRD))
    try:
        cluster.kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io", "--timeout=30s")
        spec = {"agents": 2, "security": {"issuerRef": {"name": "agents-ca", "kind": "ClusterIssuer"}}}
        with operator(namespace):
            apply(cluster, namespace, manifest("issued", spec))
            listed = wait_for(lambda: (lambda items: items if len(items) == 2 else None)(kget(cluster, "certificates.cert-manager.io", "-n", namespace)["items"]),
                              timeout=30, what="2 Certificates")  # fmt: skip
            first = min(listed, key=lambda item: item["metadata"]["name"])
            assert first["metadata"]["name"] == "issued-agent-0-cert" and first["metadata"]["ownerReferences"][0]["kind"] == crd.KIND
            assert first["spec"]["dnsNames"][0] == f"agent-0.attempt-1.issued.{namespace}.sabot.internal"
            assert first["spec"]["issuerRef"] == {"name": "agents-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
            assert not agent_pods(cluster, namespace, "issued")  # not before their certificates are issued
            for item in listed:
                ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": item["metadata"]["generation"]}]}}
                cluster.kubectl("patch", "certificates.cert-manager.io", item["metadata"]["name"], "-n", namespace, "--subresource=status",
                                "--type=merge", "-p", json.dumps(ready))  # fmt: skip
            pods = live_pods_of_attempt(cluster, namespace, "issued", 1, 2)
            volumes = [next(v for v in pod["spec"]["volumes"] if v["name"] == "tls") for pod in pods]
            assert [volume["secret"]["secretName"] for volume in volumes] == ["issued-agent-0-cert", "issued-agent-1-cert"]
            cluster.kubectl("patch", "sabotjob", "issued", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
            wait_for(lambda: not kget(cluster, "certificates.cert-manager.io", "-n", namespace)["items"], timeout=30, what="Certificates released")
    finally:
        cluster.kubectl("delete", "crd", "certificates.cert-manager.io", "--wait=false", check=False)
