"""One reconcile pass (handlers.reconcile_once) against an in-memory stand-in for kube.Cluster, and
the operator stopped after every write of every pass of a job's life (then restarted)."""
from __future__ import annotations

import copy
from collections import Counter
from datetime import datetime, timedelta, timezone

import base64

import pytest
import yaml
from cryptography import x509
from prometheus_client import REGISTRY, generate_latest

from sabotjobs import sabot_job
from sabot_operator import builders, handlers, metrics
from sabot_operator.main import parse_args

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
NAME = "wordcount"


class FakeCluster:
    """kube.Cluster's contract: create() of an existing name changes nothing (409), deletes ignore
    missing children, a status patch that changes nothing is not sent."""

    def __init__(self, job: dict):
        self.job = job
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []
        self.created: Counter = Counter()  # (kind, name, attempt and replacement of a pod) -> creations that took effect
        self.conflicts: list[tuple[str, str]] = []  # creations of a child that was there

    def get_job(self, namespace, name):
        return copy.deepcopy(self.job)

    def list_pods(self, namespace, job_name):
        return [copy.deepcopy(obj) for (kind, _), obj in sorted(self.objects.items()) if kind == "Pod"]

    def get_children(self, namespace, job):
        return {key: copy.deepcopy(obj) for key, obj in self.objects.items() if key[0] != "Pod"}

    def patch_status(self, job, status):
        if status != self.job.get("status"):
            self.calls.append("status")
            self.job["status"] = copy.deepcopy(status)

    def create(self, manifest):
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.calls.append(f"create {key[0]}/{key[1]}")
        if key in self.objects:
            self.conflicts.append(key)
            return False
        self.objects[key] = copy.deepcopy(manifest)
        if key[0] == "Certificate":  # cert-manager issues it at once
            self.objects[key]["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        labels = manifest["metadata"]["labels"]
        self.created[(*key, labels.get(builders.LABEL_ATTEMPT), labels.get(builders.LABEL_REPLACEMENT))] += 1
        return True

    def delete(self, kind, namespace, name):
        self.calls.append(f"delete {kind}/{name}")
        self.objects.pop((kind, name), None)

    def delete_job(self, namespace, name):
        self.calls.append("delete job")
        self.job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    # What the rest of Kubernetes does, for the scenarios below.
    def pods(self) -> dict[str, dict]:
        return {name: obj for (kind, name), obj in self.objects.items() if kind == "Pod"}

    def set_pods(self, phase: str = "Running", ready: bool = True, **by_name: dict) -> None:
        for name, pod in self.pods().items():
            pod["status"] = by_name.get(name) or {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}

    def edit_spec(self, **fields) -> None:
        self.job["spec"].update(fields)
        self.job["metadata"]["generation"] += 1


def run_pass(cluster: FakeCluster, now: datetime, stop_after: int | None = None) -> list[str]:
    """One pass of the operator; with `stop_after` it stops (dies) after that many of its writes.
    Returns the pass's planned actions."""
    decided = handlers.decide(cluster, "default", NAME, now)
    if decided is None:
        return []
    job, plan = decided
    actions = plan.actions()
    for action in actions[:stop_after]:
        handlers.apply(cluster, job, action)
    return [str(action) for action in actions]


def settle(cluster: FakeCluster, start: datetime, passes: int = 20) -> int:
    """Passes an hour apart (past every backoff) until one writes nothing; returns how many ran."""
    for count in range(passes):
        before = len(cluster.calls)
        run_pass(cluster, start + timedelta(hours=count))
        if len(cluster.calls) == before:
            return count
    raise AssertionError(f"no convergence after {passes} passes: {cluster.calls[-10:]}")


def test_status_is_written_before_children_are_created():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    handlers.reconcile_once(cluster, "default", NAME, T0)
    assert cluster.calls == ["status", "create ConfigMap/wordcount-plan", "create Service/wordcount-agents", "create NetworkPolicy/wordcount-agents",
                             "create Secret/wordcount-agent-0-tls", "create Secret/wordcount-agent-1-tls",
                             "create Pod/wordcount-agent-0", "create Pod/wordcount-agent-1"]  # fmt: skip
    assert cluster.job["status"]["attempt"] == 1


def test_passes_repeated_create_nothing_twice():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    for _ in range(3):
        handlers.reconcile_once(cluster, "default", NAME, T0)
    assert sorted(cluster.objects) == [("ConfigMap", "wordcount-plan"), ("NetworkPolicy", "wordcount-agents"), ("Pod", "wordcount-agent-0"),
                                       ("Pod", "wordcount-agent-1"), ("Secret", "wordcount-agent-0-tls"), ("Secret", "wordcount-agent-1-tls"),
                                       ("Service", "wordcount-agents")]  # fmt: skip
    assert cluster.job["status"]["attempt"] == 1 and not cluster.conflicts


def test_the_secrets_a_pass_writes_hold_keys_the_plan_did_not():
    """reconcile plans Secrets without keys (a pure value); the pass issues them just before writing."""
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    job, plan = handlers.decide(cluster, "default", NAME, T0)
    assert all(set(child["data"]) == {"tls.crt", "tls.key", "ca.crt"} for child in plan.create if child["kind"] == "Secret")
    assert issued_by_one_ca(cluster) is None  # nothing written yet
    for action in plan.actions():
        handlers.apply(cluster, job, action)
    assert issued_by_one_ca(cluster) == 2


def test_a_pass_after_a_lost_status_write_recreates_only_missing_pods():
    """The operator stopped after writing status (attempt 1) and creating one pod: the next pass
    creates the rest and does not start another attempt."""
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    handlers.reconcile_once(cluster, "default", NAME, T0)
    del cluster.objects[("Pod", "wordcount-agent-1")]
    cluster.calls.clear()
    handlers.reconcile_once(cluster, "default", NAME, T0)
    assert [call for call in cluster.calls if call.startswith("create")] == ["create Pod/wordcount-agent-1"]
    assert cluster.job["status"]["attempt"] == 1


def test_a_job_being_deleted_is_left_alone():
    job = sabot_job()
    job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster = FakeCluster(job)
    assert handlers.reconcile_once(cluster, "default", NAME, T0) is None
    assert cluster.calls == []


def test_pods_carry_the_attempt_they_belong_to():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 1}))
    handlers.reconcile_once(cluster, "default", NAME, T0)
    pod = cluster.objects[("Pod", "wordcount-agent-0")]
    assert pod["metadata"]["labels"][builders.LABEL_ATTEMPT] == "1"


# ------------------------------------------------------------------ stopped after any write


def new_job() -> FakeCluster:
    return FakeCluster(sabot_job(spec_patch={"agents": 2}))


def agent_1_ended(terminated: dict) -> FakeCluster:
    """Attempt 1 running, then agent 1's container terminates as `terminated` says and its pod fails."""
    cluster = new_job()
    settle(cluster, T0)
    cluster.set_pods()
    settle(cluster, T0)
    cluster.set_pods(**{"wordcount-agent-1": {"phase": "Failed", "containerStatuses": [{"name": "agent", "state": {"terminated": terminated}}]}})
    return cluster


def agent_failed() -> FakeCluster:
    """Agent 1 fails by itself: the next pass fails the attempt and removes the pods."""
    return agent_1_ended({"exitCode": 1, "message": "disk full"})


def agent_killed() -> FakeCluster:
    """Agent 1 is killed (SIGKILL): the next passes replace it by a new pod of the same name in the same
    attempt."""
    return agent_1_ended({"exitCode": 137, "reason": "Error"})


def resumed_with_an_edited_spec() -> FakeCluster:
    """Suspended after attempt 1, its spec edited meanwhile (new ports and plan), then resumed: the
    plan ConfigMap and the Service of attempt 1 are stale."""
    cluster = new_job()
    settle(cluster, T0)
    cluster.edit_spec(suspend=True)
    settle(cluster, T0)
    cluster.edit_spec(suspend=False, flightPort=9000, pipeline={**cluster.job["spec"]["pipeline"], "shuffle": {"partitions": 12}})
    return cluster


def suspended_while_starting() -> FakeCluster:
    cluster = new_job()
    settle(cluster, T0)
    cluster.edit_spec(suspend=True)
    return cluster


def never_ready() -> FakeCluster:
    """Pods that stay Pending, a startup deadline and one retry: attempt 1 fails, attempt 2 fails, the
    job fails."""
    return FakeCluster(sabot_job(spec_patch={"agents": 2, "startupDeadlineSeconds": 60, "retry": {"limit": 1}}))


def with_cert_manager() -> FakeCluster:
    """cert-manager issues the agents' certificates: Certificates first, pods once they are Ready."""
    return FakeCluster(sabot_job(spec_patch={"agents": 2, "security": {"issuerRef": {"name": "agents-ca", "kind": "ClusterIssuer"}}}))


SCENARIOS = [new_job, agent_failed, agent_killed, resumed_with_an_edited_spec, suspended_while_starting, never_ready, with_cert_manager]


def issued_by_one_ca(cluster: FakeCluster) -> int | None:
    """How many agent TLS Secrets the cluster holds, all issued by the one CA they carry (asserted),
    for the attempt of the job's status; None when there are none."""
    secrets = [obj for (kind, _), obj in cluster.objects.items() if kind == "Secret"]
    if not secrets:
        return None
    assert {secret["metadata"]["labels"][builders.LABEL_ATTEMPT] for secret in secrets} == {str(cluster.job["status"]["attempt"])}
    (ca,) = {secret["data"]["ca.crt"] for secret in secrets}
    authority = x509.load_pem_x509_certificate(base64.b64decode(ca))
    for secret in secrets:
        x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"])).verify_directly_issued_by(authority)
    return len(secrets)


def content(obj: dict):
    """What a child holds; a Secret's keys are new at every issue, so its layout and purpose (hash)."""
    if obj["kind"] == "Secret":
        return sorted(obj["data"]), obj["metadata"]["annotations"]
    return obj.get("data") or obj.get("spec")


def outcome(cluster: FakeCluster) -> dict:
    """What must not depend on where the operator stopped."""
    status = cluster.job["status"]
    return {
        "objects": sorted(cluster.objects),
        "pod attempts": {name: pod["metadata"]["labels"][builders.LABEL_ATTEMPT] for name, pod in cluster.pods().items()},
        "pod replacements": {name: pod["metadata"]["labels"][builders.LABEL_REPLACEMENT] for name, pod in cluster.pods().items()},
        "replacements": [(entry["attempt"], entry["agent"], entry["reason"]) for entry in status.get("replacements", [])],
        "shared children": {key: content(obj) for key, obj in cluster.objects.items() if key[0] != "Pod"},
        "tls secrets": issued_by_one_ca(cluster),
        "status": {key: status.get(key) for key in ("phase", "attempt", "failedAttempts", "specHash", "ready")},
        "reasons": {c["type"]: c["reason"] for c in status["conditions"]},
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_an_operator_stopped_after_any_write_converges_when_restarted(scenario):
    reference = scenario()
    created_at_start = Counter(reference.created)
    passes = []
    for count in range(20):
        before = len(reference.calls)
        passes.append(run_pass(reference, T0 + timedelta(hours=count)))
        if len(reference.calls) == before:
            break
    expected = outcome(reference)
    assert not reference.conflicts and all(count <= 1 for count in (reference.created - created_at_start).values())

    for index, actions in enumerate(passes):
        for stop_after in range(1, len(actions)):
            cluster = scenario()
            created_before = Counter(cluster.created)
            for earlier in range(index):
                run_pass(cluster, T0 + timedelta(hours=earlier))
            run_pass(cluster, T0 + timedelta(hours=index), stop_after=stop_after)
            settle(cluster, T0 + timedelta(hours=index + 1))
            where = f"stopped after {actions[stop_after - 1]!r} (write {stop_after} of pass {index}: {actions})"
            assert outcome(cluster) == expected, where
            assert not cluster.conflicts, where
            # Nothing created twice: each child (a pod: per attempt) at most once since the scenario began;
            # only a set of TLS Secrets a pass left partial is issued again, whole (outcome: one CA).
            twice = {key for key, count in (cluster.created - created_before).items() if count > 1}
            assert all(kind == "Secret" for kind, *_ in twice), where


def test_the_scenarios_end_where_they_should():
    ends = {}
    for scenario in SCENARIOS:
        cluster = scenario()
        settle(cluster, T0)
        ends[scenario.__name__] = outcome(cluster)
    assert ends["new_job"]["status"]["phase"] == "Starting" and ends["new_job"]["pod attempts"] == {"wordcount-agent-0": "1", "wordcount-agent-1": "1"}
    retried = ends["agent_failed"]
    assert retried["status"]["attempt"] == 2 and retried["status"]["failedAttempts"] == 1
    assert set(retried["pod attempts"].values()) == {"2"}
    replaced = ends["agent_killed"]
    assert replaced["status"]["attempt"] == 1 and replaced["status"]["failedAttempts"] == 0
    assert replaced["pod replacements"] == {"wordcount-agent-0": "0", "wordcount-agent-1": "1"}
    assert replaced["replacements"] == [(1, 1, "killed by SIGKILL (exit code 137)")]
    resumed = ends["resumed_with_an_edited_spec"]
    assert resumed["status"]["attempt"] == 2 and set(resumed["pod attempts"].values()) == {"2"}
    plan = resumed["shared children"][("ConfigMap", "wordcount-plan")]
    assert yaml.safe_load(plan["job.yaml"])["spec"]["pipeline"]["shuffle"]["partitions"] == 12
    assert plan["peers"].splitlines() == ["wordcount-agent-0.wordcount-agents:9000", "wordcount-agent-1.wordcount-agents:9000"]
    assert resumed["shared children"][("Service", "wordcount-agents")]["ports"][0]["port"] == 9000
    suspended = ends["suspended_while_starting"]
    assert suspended["status"]["phase"] == "Suspended" and not suspended["pod attempts"]
    failed = ends["never_ready"]
    assert failed["status"]["phase"] == "Failed" and failed["status"]["failedAttempts"] == 2 and not failed["pod attempts"]
    assert failed["reasons"]["Degraded"] == "RetryLimitExceeded"


def test_a_stale_plan_is_deleted_and_recreated_before_any_pod_of_the_attempt():
    cluster = resumed_with_an_edited_spec()
    cluster.calls.clear()
    settle(cluster, T0)
    creates = [call for call in cluster.calls if call.startswith("create")]
    assert cluster.calls.index("delete ConfigMap/wordcount-plan") < cluster.calls.index("create ConfigMap/wordcount-plan")
    assert creates[:2] == ["create ConfigMap/wordcount-plan", "create Service/wordcount-agents"]  # the policy still fits
    assert creates[2:4] == ["create Secret/wordcount-agent-0-tls", "create Secret/wordcount-agent-1-tls"]  # new keys for attempt 2
    assert all(call.startswith("create Pod/") for call in creates[4:]) and len(creates) == 6


def test_operator_metrics_count_jobs_by_phase():
    metrics.JOB_PHASES.set("uid-a", "Running")
    metrics.JOB_PHASES.set("uid-b", "Running")
    metrics.JOB_PHASES.set("uid-c", "Failed")
    metrics.JOB_PHASES.forget("uid-c")
    exposition = generate_latest(REGISTRY).decode()
    assert 'sabot_operator_jobs{phase="Running"} 2.0' in exposition
    assert 'sabot_operator_jobs{phase="Failed"} 0.0' in exposition
    assert "sabot_operator_reconcile_duration_seconds_bucket" in exposition
    metrics.JOB_PHASES.forget("uid-a")
    metrics.JOB_PHASES.forget("uid-b")


def test_main_defaults_to_cluster_wide():
    assert parse_args([]).namespace == []
    assert parse_args(["--namespace", "a", "-n", "b", "--metrics-port", "9999"]).namespace == ["a", "b"]
