"""One reconcile pass (handlers.reconcile_once) against an in-memory stand-in for kube.Cluster."""
from __future__ import annotations

import copy

from prometheus_client import REGISTRY, generate_latest

from sabotjobs import sabot_job
from sabot_operator import builders, handlers, metrics
from sabot_operator.main import parse_args


class FakeCluster:
    """kube.Cluster's contract: create() is a no-op for existing names, deletes ignore missing ones."""

    def __init__(self, job: dict):
        self.job = job
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[str] = []

    def get_job(self, namespace, name):
        return copy.deepcopy(self.job)

    def list_pods(self, namespace, job_name):
        return [copy.deepcopy(obj) for (kind, _), obj in sorted(self.objects.items()) if kind == "Pod"]

    def patch_status(self, job, status):
        self.calls.append("status")
        self.job["status"] = copy.deepcopy(status)

    def create(self, manifest):
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.calls.append(f"create {key[0]}/{key[1]}")
        if key in self.objects:
            return False
        self.objects[key] = copy.deepcopy(manifest)
        return True

    def delete_pod(self, namespace, name):
        self.calls.append(f"delete Pod/{name}")
        self.objects.pop(("Pod", name), None)

    def delete_job(self, namespace, name):
        self.calls.append("delete job")


def test_status_is_written_before_children_are_created():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    handlers.reconcile_once(cluster, "default", "wordcount")
    assert cluster.calls == ["status", "create ConfigMap/wordcount-plan", "create Service/wordcount-agents", "create Pod/wordcount-agent-0", "create Pod/wordcount-agent-1"]
    assert cluster.job["status"]["attempt"] == 1


def test_passes_repeated_create_nothing_twice():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    for _ in range(3):
        handlers.reconcile_once(cluster, "default", "wordcount")
    assert sorted(cluster.objects) == [("ConfigMap", "wordcount-plan"), ("Pod", "wordcount-agent-0"), ("Pod", "wordcount-agent-1"), ("Service", "wordcount-agents")]
    assert cluster.job["status"]["attempt"] == 1


def test_a_pass_after_a_lost_status_write_recreates_only_missing_pods():
    """The operator stopped after writing status (attempt 1) and creating one pod: the next pass
    creates the rest and does not start another attempt."""
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 2}))
    handlers.reconcile_once(cluster, "default", "wordcount")
    del cluster.objects[("Pod", "wordcount-agent-1")]
    cluster.calls.clear()
    handlers.reconcile_once(cluster, "default", "wordcount")
    assert [call for call in cluster.calls if call.startswith("create")] == ["create Pod/wordcount-agent-1"]
    assert cluster.job["status"]["attempt"] == 1


def test_a_job_being_deleted_is_left_alone():
    job = sabot_job()
    job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    cluster = FakeCluster(job)
    assert handlers.reconcile_once(cluster, "default", "wordcount") is None
    assert cluster.calls == []


def test_pods_carry_the_attempt_they_belong_to():
    cluster = FakeCluster(sabot_job(spec_patch={"agents": 1}))
    handlers.reconcile_once(cluster, "default", "wordcount")
    pod = cluster.objects[("Pod", "wordcount-agent-0")]
    assert pod["metadata"]["labels"][builders.LABEL_ATTEMPT] == "1"


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
