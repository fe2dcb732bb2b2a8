"""The job state machine (status.reconcile) driven step by step with pods in chosen states."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import yaml

from sabotjobs import agent_result, sabot_job, status_result
from sabot_operator import builders, crd, kube
from sabot_operator.status import AGENT_RESULT_FIELDS, child_key, parse_result, reconcile, retry_delay, timestamp

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def pod(job: dict, index: int, attempt: int, phase: str = "Running", ready: bool = True, message: str | None = None, deleting: bool = False,
        exit_code: int | None = None, replacement: int = 0, **terminated: str) -> dict:
    """A pod of the job in a chosen state; `message`, `exit_code` (default 0 when Succeeded, else 1) or
    `terminated` fields (e.g. reason="OOMKilled") make its agent container a terminated one."""
    manifest = builders.agent_pod({**job, "spec": crd.spec_with_defaults(job["spec"])}, index, attempt, replacement)
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if message is not None or exit_code is not None or terminated:
        code = exit_code if exit_code is not None else 0 if phase == "Succeeded" else 1
        status["containerStatuses"] = [{"name": "agent", "state": {"terminated": {"exitCode": code, **({"message": message} if message else {}), **terminated}}}]
    manifest["status"] = status
    if deleting:
        manifest["metadata"]["deletionTimestamp"] = timestamp(T0)
    return manifest


def unschedulable(job: dict, index: int, attempt: int, message: str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.") -> dict:
    """A pod the scheduler tried and failed to place."""
    manifest = builders.agent_pod({**job, "spec": crd.spec_with_defaults(job["spec"])}, index, attempt)
    manifest["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
    return manifest


def shared(job: dict) -> dict:
    """The job's children besides its pods (by (kind, name)) as the operator builds them for the job's
    spec and current attempt: ConfigMap, Service, NetworkPolicy and the agents' TLS Secrets."""
    job = {**job, "spec": crd.spec_with_defaults(job["spec"])}
    attempt = (job.get("status") or {}).get("attempt", 1)
    return {child_key(child): child for child in builders.shared_children(job) + builders.agent_tls_children(job, attempt)}


def without(children: dict, *kinds: str) -> dict:
    return {key: child for key, child in children.items() if key[0] not in kinds}


def created(plan) -> list[str]:
    return [child["kind"] for child in plan.create]


def step(job: dict, pods: list[dict], now: datetime = T0, children: dict | None = None):
    """Reconcile once and return (job with the new status, plan) — what the handler would write.
    The job's other children exist and fit its spec and attempt unless `children` says otherwise."""
    plan = reconcile(job, pods, now, shared(job) if children is None else children)
    return {**job, "status": plan.status}, plan


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def started(spec_patch: dict | None = None):
    return step(sabot_job(spec_patch=spec_patch), [], children={})


def running(job: dict, attempt: int = 1) -> dict:
    job, _ = step(job, [pod(job, i, attempt) for i in range(3)])
    return job


def test_a_new_job_starts_attempt_one_with_all_children():
    job, plan = started()
    status = plan.status
    assert status["phase"] == "Starting" and status["attempt"] == 1 and status["failedAttempts"] == 0
    assert created(plan) == ["ConfigMap", "Service", "NetworkPolicy", "Secret", "Secret", "Secret", "Pod", "Pod", "Pod"]
    assert all(c["metadata"]["labels"].get(builders.LABEL_ATTEMPT) == "1" for c in plan.create if c["kind"] == "Pod")
    assert [agent["name"] for agent in status["agents"]] == [f"wordcount-agent-{i}" for i in range(3)]
    assert status["agents"][0]["address"] == "wordcount-agent-0.wordcount-agents"
    assert status["ready"] == "0/3" and status["observedGeneration"] == 1
    assert condition(status, "Progressing")["status"] == "True"
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "Starting")]


def test_reconcile_is_pure_and_repeatable():
    job = sabot_job()
    assert reconcile(job, [], T0, {}) == reconcile(job, [], T0, {})


def test_all_agents_ready_means_running_and_ready():
    job, _ = started()
    job, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert plan.status["phase"] == "Running" and plan.status["ready"] == "3/3"
    assert condition(plan.status, "Ready")["status"] == "True"
    assert not plan.create and not plan.delete_pods
    assert [e.reason for e in plan.events] == ["Running"]


def test_some_agents_not_ready_stays_starting():
    job, _ = started()
    _, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1, phase="Pending", ready=False), pod(job, 2, 1)])
    assert plan.status["phase"] == "Starting" and plan.status["ready"] == "2/3"
    assert not plan.events


def test_pods_never_created_before_a_restart_are_created_now():
    job, _ = started()
    _, plan = step(job, [pod(job, 0, 1)])  # the operator stopped after creating agent 0
    assert [child["metadata"]["name"] for child in plan.create] == ["wordcount-agent-1", "wordcount-agent-2"]
    assert plan.status["phase"] == "Starting"


def test_without_replacements_a_pod_lost_after_it_was_seen_fails_the_attempt():
    job = running(started({"recovery": {"maxAgentReplacements": 0}})[0])
    _, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1)])
    assert plan.status["phase"] == "Pending" and plan.status["failedAttempts"] == 1
    assert "agent 2" in condition(plan.status, "Degraded")["message"]
    assert "recovery.maxAgentReplacements is 0" in condition(plan.status, "Degraded")["message"]


def test_a_failed_agent_fails_the_attempt_and_schedules_a_retry():
    job = running(started()[0])
    pods = [pod(job, 0, 1), pod(job, 1, 1, phase="Failed", ready=False, message="flight put to agent 2 refused"), pod(job, 2, 1)]
    job, plan = step(job, pods)
    status = plan.status
    assert status["phase"] == "Pending" and status["failedAttempts"] == 1 and status["attempt"] == 1
    assert sorted(plan.delete_pods) == [f"wordcount-agent-{i}" for i in range(3)]
    assert status["nextAttemptTime"] == timestamp(T0 + timedelta(seconds=10))
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "AttemptFailed"
    assert "flight put to agent 2 refused" in degraded["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "AttemptFailed")]
    assert status["agents"][1]["message"] == "flight put to agent 2 refused"

    # Old pods still terminating: wait for them, never mix attempts.
    _, plan = step(job, [pod(job, i, 1, deleting=True) for i in range(3)], T0 + timedelta(seconds=20))
    assert plan.status["attempt"] == 1 and not plan.create and not plan.delete_pods

    # Pods gone but the backoff not over: wait.
    _, plan = step(job, [], T0 + timedelta(seconds=5))
    assert plan.status["attempt"] == 1 and not plan.create and plan.requeue_after == 5

    # Backoff over: attempt 2, whose pods wait until attempt 1's keys are gone...
    old_children = shared(job)
    job, plan = step(job, [], T0 + timedelta(seconds=10), children=old_children)
    assert plan.status["phase"] == "Starting" and plan.status["attempt"] == 2
    assert {kind for kind, _ in plan.delete_children} == {"Secret"} and not plan.create
    # ...then get new keys and start, labelled with it.
    job, plan = step(job, [], T0 + timedelta(seconds=11), children=without(old_children, "Secret"))
    assert created(plan) == ["Secret", "Secret", "Secret", "Pod", "Pod", "Pod"]
    assert {child["metadata"]["labels"][builders.LABEL_ATTEMPT] for child in plan.create if child["kind"] == "Pod"} == {"2"}
    assert {c["value"] for child in plan.create if child["kind"] == "Pod" for c in child["spec"]["containers"][0]["env"] if c["name"] == "SABOT_ATTEMPT"} == {"2"}


def test_pods_of_an_older_attempt_are_removed():
    job, _ = started()
    job = {**job, "status": {**job["status"], "attempt": 2}}
    _, plan = step(job, [pod(job, 0, 1), pod(job, 0, 2)])
    assert plan.delete_pods == ["wordcount-agent-0"] and pod(job, 0, 1)["metadata"]["labels"][builders.LABEL_ATTEMPT] == "1"


def test_retries_stop_at_the_limit():
    job, _ = started({"retry": {"limit": 1, "backoffSeconds": 1}})
    now = T0
    for attempt in (1, 2):
        job = running(job, attempt)
        job, plan = step(job, [pod(job, 0, attempt, phase="Failed", ready=False, message="disk full"), pod(job, 1, attempt), pod(job, 2, attempt)], now)
        if attempt == 1:
            assert plan.status["phase"] == "Pending"
            now += timedelta(seconds=1)
            job, plan = step(job, [], now)
            assert plan.status["attempt"] == 2
    status = plan.status
    assert status["phase"] == "Failed" and status["failedAttempts"] == 2
    assert condition(status, "Degraded")["reason"] == "RetryLimitExceeded"
    assert "retry.limit=1" in condition(status, "Degraded")["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Failed")]
    assert status["completionTime"] == timestamp(now)


def test_the_published_result_agent_0_reports_is_the_jobs_output():
    job = running(started()[0])
    published = {"uri": "s3://results/wordcount/", "rows": 60, "parts": 3}
    results = [{**agent_result(i, 10 * (i + 1)), **({"output": published} if i == 0 else {})} for i in range(3)]
    _, plan = step(job, [pod(job, i, 1, phase="Succeeded", ready=False, message=json.dumps(results[i])) for i in range(3)])
    assert plan.status["phase"] == "Succeeded" and plan.status["output"] == published
    assert plan.status["agents"][0]["result"]["output"] == published


def test_backoff_doubles_and_is_capped():
    spec = crd.spec_with_defaults({"retry": {"backoffSeconds": 10}})
    assert [retry_delay(spec, n) for n in (1, 2, 3)] == [10, 20, 40]
    assert retry_delay(spec, 30) == crd.MAX_BACKOFF_SECONDS


def test_all_agents_succeeded_means_succeeded_with_results():
    job = running(started({"ttlSecondsAfterFinished": 60})[0])
    pods = [pod(job, i, 1, phase="Succeeded", ready=False, message=json.dumps(agent_result(i, 10 * (i + 1)))) for i in range(3)]
    job, plan = step(job, pods)
    status = plan.status
    assert status["phase"] == "Succeeded" and status["completionTime"] == timestamp(T0)
    assert [agent["result"] for agent in status["agents"]] == [status_result(i, 10 * (i + 1)) for i in range(3)]
    assert "60 rows" in condition(status, "Progressing")["message"]
    assert condition(status, "Degraded")["status"] == "False"
    assert not plan.delete_pods  # finished pods stay for `kubectl logs`

    assert "output" not in status  # no agent reported a published result

    # TTL: kept until it expires, then deleted.
    _, plan = step(job, pods, T0 + timedelta(seconds=59))
    assert not plan.delete_job and plan.requeue_after == 1
    _, plan = step(job, pods, T0 + timedelta(seconds=60))
    assert plan.delete_job and [e.reason for e in plan.events] == ["TTLExpired"]


def test_a_finished_job_stops_pods_left_running():
    job = running(started()[0])
    job = {**job, "status": {**job["status"], "phase": "Failed"}}
    _, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1, phase="Failed", ready=False)])
    assert plan.delete_pods == ["wordcount-agent-0"]


def test_suspend_removes_agents_and_resume_starts_a_new_attempt():
    job = running(started()[0])
    job["spec"]["suspend"] = True
    job, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert plan.status["phase"] == "Suspended" and len(plan.delete_pods) == 3
    assert condition(plan.status, "Progressing")["reason"] == "Suspended"
    assert [e.reason for e in plan.events] == ["Suspended"]
    assert "startTime" not in plan.status

    job, plan = step(job, [])
    assert plan.status["phase"] == "Suspended" and not plan.events

    job["spec"]["suspend"] = False
    job, plan = step(job, [])
    assert plan.status["phase"] == "Starting" and plan.status["attempt"] == 2 and plan.status["failedAttempts"] == 0


def test_a_job_created_suspended_starts_nothing():
    _, plan = step(sabot_job(spec_patch={"suspend": True}), [], children={})
    assert plan.status["phase"] == "Suspended" and not plan.create and not plan.delete_children
    assert [str(action) for action in plan.actions()] == ["patch_status"]


def test_active_deadline_fails_the_job():
    job = running(started({"activeDeadlineSeconds": 30})[0])
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], T0 + timedelta(seconds=29))
    assert plan.status["phase"] == "Running" and plan.requeue_after == 1
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], T0 + timedelta(seconds=30))
    assert plan.status["phase"] == "Failed" and len(plan.delete_pods) == 3
    assert condition(plan.status, "Degraded")["reason"] == "DeadlineExceeded"


def test_invalid_spec_fails_with_a_condition_and_event_naming_the_field():
    _, plan = step(sabot_job(spec_patch={"flightPort": 9000, "metricsPort": 9000}), [])
    assert plan.status["phase"] == "Failed" and not plan.create
    degraded = condition(plan.status, "Degraded")
    assert degraded["reason"] == "InvalidSpec" and degraded["message"].startswith("spec.metricsPort:")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    assert plan.events[0].message.startswith("spec.metricsPort:")


def test_an_agent_that_refused_the_job_fails_it_without_a_retry():
    """Exit 3 (sabot_agent.agent.JOB_REFUSED): a query or column the inputs' schemas refute, which the
    operator could not see without reading the inputs; every attempt would repeat it."""
    job = running(started()[0])
    reason = "spec.pipeline.sql: unknown column nope (columns: orders.id, orders.amount)"
    pods = [pod(job, 0, 1, phase="Failed", ready=False, message=reason, exit_code=3), pod(job, 1, 1), pod(job, 2, 1)]
    _, plan = step(job, pods)
    status = plan.status
    assert status["phase"] == "Failed" and status.get("failedAttempts", 0) == 0 and "nextAttemptTime" not in status
    assert sorted(plan.delete_pods) == ["wordcount-agent-1", "wordcount-agent-2"] and not plan.create
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "InvalidSpec" and degraded["message"] == reason
    assert [(e.type, e.reason, e.message) for e in plan.events] == [("Warning", "InvalidSpec", reason)]
    assert status["agents"][0]["message"] == reason


def test_a_spec_edit_while_running_is_reported_and_ignored():
    job = running(started()[0])
    job["spec"]["image"] = "sabot:0.2.0"
    job["metadata"]["generation"] = 2
    job, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert plan.status["phase"] == "Running" and not plan.create
    degraded = condition(plan.status, "Degraded")
    assert degraded["reason"] == "SpecChangeIgnored" and degraded["observedGeneration"] == 2
    assert [e.reason for e in plan.events] == ["SpecChangeIgnored"]
    _, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert not plan.events  # reported once


def test_condition_transition_time_moves_only_when_the_status_flips():
    job, _ = started()
    first = condition(job["status"], "Progressing")["lastTransitionTime"]
    job, _ = step(job, [pod(job, i, 1) for i in range(3)], T0 + timedelta(seconds=5))
    assert condition(job["status"], "Progressing")["lastTransitionTime"] == first
    assert condition(job["status"], "Ready")["lastTransitionTime"] == timestamp(T0 + timedelta(seconds=5))


def test_parse_result_maps_the_agents_result_to_status_fields():
    assert parse_result(json.dumps(agent_result(0, 3))) == status_result(0, 3)
    assert parse_result("Error: out of memory") is None
    assert parse_result('{"rows_out": "many"}') is None  # the status schema would refuse it


def test_every_result_field_is_in_the_status_schema():
    assert set(AGENT_RESULT_FIELDS.values()) == set(crd.RESULT_SCHEMA["properties"])
    assert parse_result(None) is None


def test_status_patch_nulls_removed_keys_and_skips_unchanged_ones():
    old = {"phase": "Pending", "nextAttemptTime": "x", "attempt": 1}
    new = {"phase": "Starting", "attempt": 1}
    assert kube.status_patch(old, new) == {"nextAttemptTime": None, "phase": "Starting"}


# ------------------------------------------------------------------ shared children (crash safety)


def test_a_missing_plan_or_service_is_created_before_the_missing_pods():
    """The operator stopped after writing the attempt's status: the plan ConfigMap, the Service and
    the pods do not exist yet. The next pass creates all of them, the pods last."""
    job, _ = started()
    _, plan = step(job, [], children={})
    assert [child_key(child) for child in plan.create] == [
        ("ConfigMap", "wordcount-plan"), ("Service", "wordcount-agents"), ("NetworkPolicy", "wordcount-agents"),
        ("Secret", "wordcount-agent-0-tls"), ("Secret", "wordcount-agent-1-tls"), ("Secret", "wordcount-agent-2-tls"),
        ("Pod", "wordcount-agent-0"), ("Pod", "wordcount-agent-1"), ("Pod", "wordcount-agent-2"),
    ]
    assert plan.status["attempt"] == 1 and plan.requeue_after == 1.0
    # Only the service was lost: only the service is created.
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], children=without(shared(job), "Service"))
    assert created(plan) == ["Service"]


def test_actions_write_status_first_then_delete_then_create_shared_children_before_pods():
    job, plan = started()
    assert [str(action) for action in plan.actions()] == [
        "patch_status", "create ConfigMap/wordcount-plan", "create Service/wordcount-agents", "create NetworkPolicy/wordcount-agents",
        "create Secret/wordcount-agent-0-tls", "create Secret/wordcount-agent-1-tls", "create Secret/wordcount-agent-2-tls",
        "create Pod/wordcount-agent-0", "create Pod/wordcount-agent-1", "create Pod/wordcount-agent-2",
    ]
    job = {**job, "status": {**job["status"], "attempt": 2}}
    _, plan = step(job, [pod(job, 0, 1)], children={})
    assert [str(action) for action in plan.actions()][:3] == ["patch_status", "delete Pod/wordcount-agent-0", "create ConfigMap/wordcount-plan"]


def test_a_new_attempt_replaces_a_plan_built_for_another_spec_before_creating_pods():
    job = running(started()[0])
    old_children = shared(job)
    job["spec"]["suspend"] = True
    job, _ = step(job, [], children=old_children)
    job["spec"].update(suspend=False, pipeline={**job["spec"]["pipeline"], "shuffle": {"partitions": 12}})
    job, plan = step(job, [], children=old_children)
    assert plan.status["phase"] == "Starting" and plan.status["attempt"] == 2
    # the service and the network policy still fit; attempt 1's keys never serve attempt 2
    assert plan.delete_children == [("ConfigMap", "wordcount-plan"), *[("Secret", f"wordcount-agent-{i}-tls") for i in range(3)]]
    assert not plan.create
    # Next pass: the plan and the keys are gone; they are created for this spec and attempt, then the pods.
    _, plan = step(job, [], children=without(old_children, "ConfigMap", "Secret"))
    assert created(plan) == ["ConfigMap", "Secret", "Secret", "Secret", "Pod", "Pod", "Pod"]
    assert {child["metadata"]["labels"][builders.LABEL_ATTEMPT] for child in plan.create if child["kind"] == "Secret"} == {"2"}
    assert yaml.safe_load(plan.create[0]["data"]["job.yaml"])["spec"]["pipeline"]["shuffle"]["partitions"] == 12


def test_shared_children_are_never_rebuilt_under_the_pods_of_an_attempt():
    job = running(started()[0])
    stale = {key: {**child, "metadata": {**child["metadata"], "annotations": {}}} for key, child in shared(job).items()}
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], children=stale)
    assert not plan.delete_children and not plan.create


def test_a_spec_edited_before_the_attempt_had_all_its_children_fails_the_attempt():
    """Only without CEL: the missing pod would be built from the edited spec, unlike its peers."""
    job, _ = started()
    children = shared(job)
    job["spec"]["image"] = "sabot:0.2.0"
    _, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1)], children=children)
    assert plan.status["phase"] == "Pending" and plan.status["failedAttempts"] == 1 and not plan.create
    assert condition(plan.status, "Degraded")["reason"] == "SpecChanged"


# ------------------------------------------------------------------ transport security


def test_a_partial_set_of_tls_secrets_is_issued_again_whole_before_any_pod():
    """The operator stopped after creating agent 0's Secret: the CA that signed it is gone, so the
    next pass deletes it and a later one issues all three from one new CA, then the pods."""
    job, _ = started()
    partial = without(shared(job), "Secret") | {("Secret", "wordcount-agent-0-tls"): shared(job)[("Secret", "wordcount-agent-0-tls")]}
    _, plan = step(job, [], children=partial)
    assert plan.delete_children == [("Secret", "wordcount-agent-0-tls")] and not plan.create and plan.requeue_after == 1.0
    _, plan = step(job, [], children=without(shared(job), "Secret"))
    assert created(plan) == ["Secret", "Secret", "Secret", "Pod", "Pod", "Pod"]


def test_tls_secrets_lost_under_the_pods_fail_the_attempt():
    job, _ = started()
    _, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1)], children=without(shared(job), "Secret"))
    assert plan.status["phase"] == "Pending" and plan.status["failedAttempts"] == 1 and not plan.create
    assert condition(plan.status, "Degraded")["reason"] == "TLSSecretsLost"
    # with every pod there, nothing needs them any more: nothing happens
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], children=without(shared(job), "Secret"))
    assert plan.status["phase"] == "Running" and not plan.create and not plan.delete_children


def test_plaintext_is_warned_about_once_per_attempt():
    job, plan = started({"security": {"tls": "disabled"}})
    assert created(plan) == ["ConfigMap", "Service", "NetworkPolicy", "Pod", "Pod", "Pod"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "TLSDisabled"), ("Normal", "Starting")]
    assert plan.events[0].message.startswith("attempt 1: spec.security.tls is disabled") and "insecure" in plan.events[0].message
    job, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert [e.reason for e in plan.events] == ["Running"]


def test_children_the_spec_no_longer_wants_go_before_the_next_attempt():
    job = running(started()[0])
    old_children = shared(job)
    job["spec"]["suspend"] = True
    job, _ = step(job, [], children=old_children)
    job["spec"].update(suspend=False, security={"tls": "disabled", "networkPolicy": "disabled"})
    _, plan = step(job, [], children=old_children)
    # the agents' job file (in the plan) says plaintext now, too
    assert plan.delete_children == [("ConfigMap", "wordcount-plan"), ("NetworkPolicy", "wordcount-agents"),
                                    *[("Secret", f"wordcount-agent-{i}-tls") for i in range(3)]]  # fmt: skip
    assert not plan.create


def test_keys_exist_only_while_an_attempt_runs():
    job = running(started()[0])
    secrets = [("Secret", f"wordcount-agent-{i}-tls") for i in range(3)]
    pods = [pod(job, 0, 1), pod(job, 1, 1, phase="Failed", ready=False, message="disk full"), pod(job, 2, 1)]
    _, plan = step(job, pods)
    assert plan.status["phase"] == "Pending" and plan.delete_children == secrets
    finished = [pod(job, i, 1, phase="Succeeded", ready=False, message=json.dumps(agent_result(i, 1))) for i in range(3)]
    _, plan = step(job, finished)
    assert plan.status["phase"] == "Succeeded" and plan.delete_children == secrets and not plan.delete_pods
    job["spec"]["suspend"] = True
    _, plan = step(job, [pod(job, i, 1) for i in range(3)])
    assert plan.status["phase"] == "Suspended" and plan.delete_children == secrets
    # a Certificate's Secret goes with it
    job, _ = started({"security": {"issuerRef": {"name": "agents-ca"}}})
    job["spec"]["suspend"] = True
    _, plan = step(job, [], children=certificates(job, ready=True))
    assert plan.delete_children == [key for i in range(3) for key in (("Certificate", f"wordcount-agent-{i}-cert"), ("Secret", f"wordcount-agent-{i}-cert"))]


def certificates(job: dict, ready: bool) -> dict:
    built = builders.agent_tls_children({**job, "spec": crd.spec_with_defaults(job["spec"])}, job["status"]["attempt"])
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {child_key(child): {**child, "status": status} for child in built}


def test_with_cert_manager_the_pods_wait_for_their_certificates():
    job, plan = started({"security": {"issuerRef": {"name": "agents-ca"}}})
    assert created(plan) == ["ConfigMap", "Service", "NetworkPolicy", "Certificate", "Certificate", "Certificate"]
    children = without(shared(job), "Certificate")
    _, plan = step(job, [], children=children | certificates(job, ready=False))
    assert not plan.create and plan.requeue_after == 1.0
    _, plan = step(job, [], children=children | certificates(job, ready=True))
    assert created(plan) == ["Pod", "Pod", "Pod"]
    volume = next(v for v in plan.create[0]["spec"]["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "wordcount-agent-0-cert"


# ------------------------------------------------------------------ scheduling and startup deadline


def test_unschedulable_agents_set_a_condition_and_warn_once_per_attempt():
    job, _ = started()
    pods = [pod(job, 0, 1), unschedulable(job, 1, 1), unschedulable(job, 2, 1)]
    job, plan = step(job, pods)
    scheduled = condition(plan.status, "AgentsScheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert scheduled["message"] == "attempt 1: 2 of 3 agents cannot be scheduled (agent 1: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.)"
    assert [(e.type, e.reason, e.message) for e in plan.events] == [("Warning", "Unschedulable", scheduled["message"])]
    assert plan.status["phase"] == "Starting"
    job, plan = step(job, pods, T0 + timedelta(seconds=30))
    assert not plan.events  # not on every pass
    job, plan = step(job, [pod(job, i, 1) for i in range(3)], T0 + timedelta(seconds=60))
    assert condition(plan.status, "AgentsScheduled")["status"] == "True" and plan.status["phase"] == "Running"


def test_unschedulable_is_reported_once_the_scheduler_tried_every_pod():
    job, _ = started()
    waiting = pod(job, 2, 1, phase="Pending", ready=False)  # not looked at yet
    _, plan = step(job, [pod(job, 0, 1), unschedulable(job, 1, 1), waiting])
    assert condition(plan.status, "AgentsScheduled")["reason"] == "Scheduling" and not plan.events
    _, plan = step(job, [pod(job, 0, 1), unschedulable(job, 1, 1)])  # agent 2 not even created
    assert condition(plan.status, "AgentsScheduled")["reason"] == "Scheduling" and not plan.events


def test_more_agents_than_the_nodes_fit_are_counted():
    job, _ = started({"agents": 200})
    full = "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    pods = [pod(job, i, 1) for i in range(110)] + [unschedulable(job, i, 1, full) for i in range(110, 200)]
    _, plan = step(job, pods)
    assert condition(plan.status, "AgentsScheduled")["message"] == f"attempt 1: 90 of 200 agents cannot be scheduled (agent 110: {full})"
    assert plan.status["ready"] == "110/200" and [e.reason for e in plan.events] == ["Unschedulable"]


def test_startup_deadline_fails_the_attempt_and_releases_its_pods():
    job, _ = started({"startupDeadlineSeconds": 60, "retry": {"limit": 1, "backoffSeconds": 10}})
    assert job["status"]["attemptStartTime"] == timestamp(T0)
    pods = [unschedulable(job, i, 1) for i in range(3)]
    job, plan = step(job, pods, T0 + timedelta(seconds=59))
    assert plan.status["phase"] == "Starting" and plan.requeue_after == 1
    job, plan = step(job, pods, T0 + timedelta(seconds=60))
    status = plan.status
    assert status["phase"] == "Pending" and status["failedAttempts"] == 1 and sorted(plan.delete_pods) == [f"wordcount-agent-{i}" for i in range(3)]
    degraded = condition(status, "Degraded")
    assert degraded["reason"] == "StartupDeadlineExceeded"
    assert degraded["message"].startswith("attempt 1 failed: 3 of 3 agents not ready within startupDeadlineSeconds=60; 3 of 3 agents cannot be scheduled (agent 0: 0/1 nodes")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "StartupDeadlineExceeded")]

    # Attempt 2 has its own clock and its own warning; past the limit the job fails.
    job, plan = step(job, [], T0 + timedelta(seconds=70))
    assert plan.status["attempt"] == 2 and plan.status["attemptStartTime"] == timestamp(T0 + timedelta(seconds=70))
    assert condition(plan.status, "AgentsScheduled")["reason"] == "Scheduling"
    pods = [unschedulable(job, i, 2) for i in range(3)]
    job, plan = step(job, pods, T0 + timedelta(seconds=80))
    assert [e.reason for e in plan.events] == ["Unschedulable"] and "attempt 2:" in plan.events[0].message
    job, plan = step(job, pods, T0 + timedelta(seconds=130))
    assert plan.status["phase"] == "Failed" and plan.status["failedAttempts"] == 2 and len(plan.delete_pods) == 3
    assert condition(plan.status, "Degraded")["reason"] == "RetryLimitExceeded"
    assert "startupDeadlineSeconds=60" in condition(plan.status, "Degraded")["message"]


def test_the_startup_deadline_ends_with_the_startup():
    job, _ = started({"startupDeadlineSeconds": 60})
    job = running(job)
    _, plan = step(job, [pod(job, i, 1) for i in range(3)], T0 + timedelta(hours=1))
    assert plan.status["phase"] == "Running" and plan.requeue_after is None


def test_without_a_startup_deadline_a_stuck_start_waits():
    job, _ = started()
    _, plan = step(job, [unschedulable(job, i, 1) for i in range(3)], T0 + timedelta(days=1))
    assert plan.status["phase"] == "Starting" and plan.requeue_after is None


def test_suspending_a_starting_job_removes_its_pods():
    job, _ = started()
    job, _ = step(job, [unschedulable(job, i, 1) for i in range(3)])
    job["spec"]["suspend"] = True
    _, plan = step(job, [unschedulable(job, i, 1) for i in range(3)])
    assert plan.status["phase"] == "Suspended" and len(plan.delete_pods) == 3 and not plan.create
    assert "attemptStartTime" not in plan.status


def test_a_warning_seen_in_the_pass_of_a_phase_change_does_not_replace_its_event():
    job, _ = started({"startupDeadlineSeconds": 60, "retry": {"limit": 0}})
    _, plan = step(job, [unschedulable(job, i, 1) for i in range(3)], T0 + timedelta(seconds=60))
    assert plan.status["phase"] == "Failed"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Unschedulable"), ("Warning", "Failed")]
