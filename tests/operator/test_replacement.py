"""Agent-level recovery in the job state machine: a lost agent is replaced by a new pod of the same
index and name, within the attempt, counted once in status whatever pass stops where."""
from __future__ import annotations

import json
from datetime import timedelta

from sabotjobs import agent_result
from sabot_operator import builders
from sabot_operator.status import lost_reason
from test_status import T0, condition, pod, running, started, step


def env_of(manifest: dict) -> dict:
    return {item["name"]: item.get("value") for item in manifest["spec"]["containers"][0]["env"]}


def others(job: dict, lost: int, attempt: int = 1) -> list[dict]:
    return [pod(job, index, attempt) for index in range(3) if index != lost]


def test_a_killed_agent_is_replaced_by_a_pod_of_the_same_name_in_the_same_attempt():
    job = running(started()[0])
    killed = pod(job, 1, 1, phase="Failed", ready=False, exit_code=137, reason="Error")
    job, plan = step(job, [*others(job, 1), killed], T0 + timedelta(seconds=5))
    status = plan.status
    assert status["phase"] == "Running" and status["attempt"] == 1 and status["failedAttempts"] == 0
    assert status["replacements"] == [{"attempt": 1, "agent": 1, "reason": "killed by SIGKILL (exit code 137)", "time": "2026-01-01T12:00:05Z"}]
    assert status["agents"][1]["phase"] == "Replacing" and status["agents"][1]["replacements"] == 1
    assert plan.delete_pods == ["wordcount-agent-1"] and not plan.create  # the name is free only once the old pod is gone
    assert [(event.type, event.reason) for event in plan.events] == [("Warning", "AgentReplaced")]
    assert "agent 1 (wordcount-agent-1) killed by SIGKILL (exit code 137); replacing it (1 of 3)" in plan.events[0].message
    assert condition(status, "Degraded")["reason"] == "AgentReplaced"

    # The operator stopped after writing status: the next pass deletes again and counts nothing new.
    again, plan = step(job, [*others(job, 1), killed])
    assert plan.delete_pods == ["wordcount-agent-1"] and not plan.create and again["status"]["replacements"] == status["replacements"]
    # Still terminating: wait for it.
    terminating = pod(job, 1, 1, phase="Failed", ready=False, exit_code=137, deleting=True)
    _, plan = step(job, [*others(job, 1), terminating])
    assert not plan.delete_pods and not plan.create and not plan.events
    # Gone: the replacement, same name and address, numbered 1; the others keep running.
    job, plan = step(job, others(job, 1))
    assert [child["metadata"]["name"] for child in plan.create] == ["wordcount-agent-1"]
    replacement = plan.create[0]
    assert replacement["metadata"]["labels"][builders.LABEL_REPLACEMENT] == "1" and replacement["metadata"]["labels"][builders.LABEL_ATTEMPT] == "1"
    assert env_of(replacement)["SABOT_REPLACEMENT"] == "1" and env_of(replacement)["SABOT_REPLACEABLE"] == "1"
    assert replacement["spec"]["hostname"] == "wordcount-agent-1" and not plan.delete_pods
    assert len(plan.status["replacements"]) == 1

    # It runs, and the job succeeds on attempt 1 with the replacement's result.
    new = pod(job, 1, 1, replacement=1)
    job, plan = step(job, [*others(job, 1), new])
    assert plan.status["phase"] == "Running" and plan.status["agents"][1]["phase"] == "Running" and not plan.create
    done = [pod(job, i, 1, phase="Succeeded", ready=False, replacement=int(i == 1), message=json.dumps(agent_result(i, 10))) for i in range(3)]
    job, plan = step(job, done)
    assert plan.status["phase"] == "Succeeded" and plan.status["attempt"] == 1 and plan.status["failedAttempts"] == 0
    assert plan.status["replacements"][0]["agent"] == 1 and plan.status["agents"][1]["replacements"] == 1


def test_a_deleted_pod_is_replaced_at_once():
    job = running(started()[0])
    job, plan = step(job, others(job, 2))
    assert [child["metadata"]["name"] for child in plan.create] == ["wordcount-agent-2"]
    assert plan.status["replacements"][0]["reason"] == "its pod disappeared"
    # The pass stopped before the create: the next one creates it, counting nothing again.
    _, plan = step(job, others(job, 2))
    assert [child["metadata"]["name"] for child in plan.create] == ["wordcount-agent-2"] and len(plan.status["replacements"]) == 1
    assert env_of(plan.create[0])["SABOT_REPLACEMENT"] == "1"


def test_a_pod_deleted_by_someone_else_is_replaced_once_it_is_gone():
    job = running(started()[0])
    job, plan = step(job, [*others(job, 0), pod(job, 0, 1, deleting=True)])
    assert plan.status["replacements"][0]["reason"] == "its pod is being deleted"
    assert not plan.create and not plan.delete_pods  # already going
    _, plan = step(job, [*others(job, 0), pod(job, 0, 1, phase="Failed", ready=False, exit_code=143, deleting=True)])
    assert not plan.create and len(plan.status["replacements"]) == 1


def test_oom_killed_and_evicted_agents_are_lost_an_agent_that_failed_the_job_is_not():
    job = running(started()[0])
    assert lost_reason(pod(job, 0, 1, phase="Failed", exit_code=137, reason="OOMKilled")) == "OOM-killed (exit code 137)"
    evicted = pod(job, 0, 1, phase="Failed")
    evicted["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    assert lost_reason(evicted) == "evicted: The node was low on resource: memory."
    assert lost_reason(pod(job, 0, 1, phase="Failed", exit_code=143, message="agent 0: stopped by SIGTERM")) == "killed by SIGTERM (exit code 143)"
    assert lost_reason(pod(job, 0, 1, phase="Failed")) == "its pod failed (no reason: no message)"
    assert lost_reason(pod(job, 0, 1, phase="Failed", message="sum of column 'x' overflows")) is None
    assert lost_reason(pod(job, 0, 1, phase="Failed", exit_code=2, message="spec.pipeline: bad")) is None


def test_past_the_bound_a_lost_agent_fails_the_attempt_which_is_retried():
    job = running(started({"recovery": {"maxAgentReplacements": 1}})[0])
    job, plan = step(job, others(job, 1))
    assert len(plan.status["replacements"]) == 1
    job, plan = step(job, [pod(job, 0, 1), pod(job, 1, 1, replacement=1), pod(job, 2, 1, phase="Failed", ready=False, exit_code=137)])
    status = plan.status
    assert status["phase"] == "Pending" and status["failedAttempts"] == 1 and len(status["replacements"]) == 1
    message = condition(status, "Degraded")["message"]
    assert "agent 2" in message and "killed by SIGKILL" in message and "1 agent replacement already used" in message
    assert sorted(plan.delete_pods) == [f"wordcount-agent-{i}" for i in range(3)]
    # The next attempt has its full budget again, and its pods start from replacement 0.
    job, plan = step(job, [], T0 + timedelta(seconds=10))
    assert plan.status["attempt"] == 2
    job, plan = step(job, [], T0 + timedelta(seconds=11))  # attempt 1's keys are gone: its pods
    assert {child["metadata"]["labels"][builders.LABEL_REPLACEMENT] for child in plan.create if child["kind"] == "Pod"} == {"0"}
    job = running(job, attempt=2)
    _, plan = step(job, others(job, 1, attempt=2))
    assert plan.status["phase"] == "Running" and [entry["attempt"] for entry in plan.status["replacements"]] == [1, 2]


def test_a_finished_agent_whose_pod_went_is_not_replaced():
    job = running(started()[0])
    job, _ = step(job, [pod(job, 0, 1), pod(job, 1, 1), pod(job, 2, 1, phase="Succeeded", ready=False, message=json.dumps(agent_result(2, 5)))])
    _, plan = step(job, others(job, 2))
    assert "replacements" not in plan.status and not plan.create and plan.status["phase"] == "Running"
