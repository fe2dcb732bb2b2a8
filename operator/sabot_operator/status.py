"""The job's state machine as one pure function: the SabotJob and its pods in, the next step out.

`reconcile(job, pods, now, children)` reads nothing but its arguments, so an operator restarted
mid-job continues from `status` and the children it finds (keyed by (kind, name)). The caller makes a `Plan`'s writes in the
order of `Plan.actions()`: status first (the record of what is about to happen), then deletions,
then creations; Events are posted after them. Every pass may stop after any write: the next pass
plans whatever is still missing for the current attempt, so it converges without creating anything
twice. Attempt numbers only grow, and every attempt's pods carry it (label and SABOT_ATTEMPT), so a
retry never shares shuffle ids with the attempt it replaces.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import jsonschema

from sabot_agent import security
from sabot_agent.settings import JOB_REFUSED, killing_signal
from sabot_agent.jobspec import RecoverySpec

from . import builders, crd
from .validation import spec_problems

PENDING, STARTING, RUNNING, SUCCEEDED, FAILED, SUSPENDED = crd.PHASES
FINISHED_PHASES = (SUCCEEDED, FAILED)
# While pods are being created or deleted the job is re-examined soon, not at the resync interval.
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class Action:
    """One write of a pass: patch_status (body = the new status), delete or create a child (kind,
    name; body = the manifest to create), or delete_job."""

    verb: str
    kind: str = ""
    name: str = ""
    body: Any = None

    def __str__(self) -> str:
        return f"{self.verb} {self.kind}/{self.name}" if self.kind else self.verb


@dataclass
class Plan:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    delete_children: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) of stale or unwanted children
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    def requeue(self, seconds: float) -> None:
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def actions(self) -> list[Action]:
        """The writes in the order a pass makes them. Status first, so what exists is always covered
        by a recorded attempt; `create` lists the shared children and the agents' TLS Secrets or
        Certificates before the pods (see _plan_children)."""
        return [
            Action("patch_status", body=self.status),
            *(Action("delete", "Pod", name) for name in self.delete_pods),
            *(Action("delete", kind, name) for kind, name in self.delete_children),
            *(Action("create", child["kind"], child["metadata"]["name"], child) for child in self.create),
            *([Action("delete_job")] if self.delete_job else []),
        ]


def timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def spec_hash(spec: dict[str, Any]) -> str:
    """Identity of what an attempt runs: every spec field except those allowed to change meanwhile."""
    frozen = {key: value for key, value in spec.items() if key not in crd.MUTABLE_WHILE_ACTIVE}
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()[:16]


def retry_delay(spec: dict[str, Any], failed_attempts: int) -> int:
    """Exponential backoff: backoffSeconds after the first failure, doubling, capped."""
    return min(spec["retry"]["backoffSeconds"] * 2 ** (failed_attempts - 1), crd.MAX_BACKOFF_SECONDS)


def set_condition(status: dict[str, Any], type_: str, value: bool, reason: str, message: str, generation: int, now: datetime) -> None:
    """Like apimachinery's meta.SetStatusCondition: lastTransitionTime moves only when the status flips."""
    conditions = status.setdefault("conditions", [])
    new_status = "True" if value else "False"
    existing = next((condition for condition in conditions if condition["type"] == type_), None)
    if existing is None:
        existing = {"type": type_}
        conditions.append(existing)
    if existing.get("status") != new_status:
        existing["lastTransitionTime"] = timestamp(now)
    existing.update(status=new_status, reason=reason, message=message[: crd.MAX_MESSAGE_LENGTH], observedGeneration=generation)
    conditions.sort(key=lambda condition: crd.CONDITION_TYPES.index(condition["type"]))


# ---------------------------------------------------------------------------------------- pods


def pod_attempt(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["labels"].get(builders.LABEL_ATTEMPT, -1))


def pod_index(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["labels"].get(builders.LABEL_INDEX, -1))


def _pod_phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or PENDING


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return _pod_phase(pod) == RUNNING and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_replacement(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["labels"].get(builders.LABEL_REPLACEMENT, 0))


def _agent_terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and container.get("name") == builders.AGENT_CONTAINER:
            return terminated
    return None


def termination_message(pod: dict[str, Any]) -> str | None:
    terminated = _agent_terminated(pod)
    if terminated is None:
        return None
    return (terminated.get("message") or terminated.get("reason") or "").strip() or None


def lost_reason(pod: dict[str, Any]) -> str | None:
    """Why the agent of a Failed pod was lost — killed (a signal, the OOM killer, its liveness probe),
    evicted, or its pod failed before the agent ended — or None when the agent failed by itself (an
    exit code below 128 and its reason in the termination message: bad data, an expression error),
    which a replacement would only repeat."""
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return f"evicted: {status.get('message') or 'no message'}"
    terminated = _agent_terminated(pod)
    if terminated is None:  # the pod failed without its agent running to an end (node shutdown, admission)
        return f"its pod failed ({status.get('reason') or 'no reason'}: {status.get('message') or 'no message'})"
    code = terminated.get("exitCode", 0)
    if terminated.get("reason") == "OOMKilled":
        return f"OOM-killed (exit code {code})"
    if (name := killing_signal(code)) is not None:
        return f"killed by {name} (exit code {code})"
    return None


def _refused_the_job(pod: dict[str, Any] | None) -> bool:
    """The agent exited with JOB_REFUSED: a column or query its inputs' schemas refute, which the
    operator (reading no inputs) could not see."""
    terminated = _agent_terminated(pod) if pod is not None else None
    return terminated is not None and terminated.get("exitCode") == JOB_REFUSED


_RESULT_VALIDATOR = jsonschema.Draft7Validator(crd.RESULT_SCHEMA)
# The agent's result as `sabot-agent` prints it (snake_case) -> status.agents[].result.
AGENT_RESULT_FIELDS = {
    "rows_in": "rowsIn",
    "rows_shuffled": "rowsShuffled",
    "rows_out": "rowsOut",
    "bytes_shuffled": "bytesShuffled",
    "spilled_bytes": "spilledBytes",
    "seconds": "seconds",
    "output_files": "outputFiles",
    "checksum": "checksum",
    "output": "output",
}


def parse_result(message: str | None) -> dict[str, Any] | None:
    """The agent's JSON result in status form; None when it reported something else (a failure
    reason, or a result the status schema would refuse, which is then kept as text)."""
    try:
        reported = json.loads(message or "")
    except ValueError:
        return None
    if not isinstance(reported, dict):
        return None
    result = {status_key: reported[agent_key] for agent_key, status_key in AGENT_RESULT_FIELDS.items() if agent_key in reported}
    if isinstance(result.get("checksum"), int):
        result["checksum"] = str(result["checksum"])
    return result if _RESULT_VALIDATOR.is_valid(result) else None


def _is_live(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp")


def _pod_condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _scheduled(pod: dict[str, Any]) -> bool:
    # A pod that runs or ran was placed, whatever its conditions say.
    return bool((pod.get("spec") or {}).get("nodeName")) or _pod_phase(pod) != PENDING or _pod_condition(pod, "PodScheduled").get("status") == "True"


def unschedulable_reason(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it tried to place the pod and could not (PodScheduled=False,
    reason Unschedulable), e.g. "0/3 nodes are available: 3 Insufficient cpu."; None otherwise."""
    condition = _pod_condition(pod, "PodScheduled")
    if condition.get("status") == "False" and condition.get("reason") == "Unschedulable" and not _scheduled(pod):
        return (condition.get("message") or "").strip() or "Unschedulable"
    return None


# ---------------------------------------------------------------------------------------- reconcile


Children = Mapping[tuple[str, str], dict[str, Any]]


def child_key(child: dict[str, Any]) -> tuple[str, str]:
    return child["kind"], child["metadata"]["name"]


def reconcile(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime, children: Children) -> Plan:
    """Decide the next step of `job` given all pods that carry its label and its other children as
    read, by (kind, name): the ConfigMap, Service and NetworkPolicy, the agents' TLS Secrets (the
    operator's, by label) and cert-manager Certificates; absent ones left out."""
    status = copy.deepcopy(job.get("status") or {})
    generation = job["metadata"].get("generation", 0)
    status["observedGeneration"] = generation
    status.setdefault("attempt", 0)
    status.setdefault("failedAttempts", 0)
    plan = Plan(status=status)
    phase = status.get("phase")
    spec = crd.spec_with_defaults(job["spec"])
    job = {**job, "spec": spec}

    if phase in FINISHED_PHASES:
        _after_finish(job, pods, plan, now)
    elif _deadline_passed(spec, status, now):
        _stop_pods(pods, plan)
        _finish(job, plan, FAILED, "DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds={spec['activeDeadlineSeconds']}", now)
    elif spec["suspend"]:
        _suspend(job, pods, plan, now)
    elif phase in crd.ACTIVE_PHASES:
        _follow_attempt(job, pods, children, plan, now)
    else:
        _start_attempt(job, pods, children, plan, now)
    if plan.status.get("phase") not in crd.ACTIVE_PHASES:
        _release_keys(children, plan)
    _transition_event(phase, plan)
    return plan


def _release_keys(children: Children, plan: Plan) -> None:
    """Agent keys exist only while an attempt is Starting or Running: an attempt that ended (failed,
    finished, suspended) no longer needs its TLS Secrets or Certificates, and the next one gets new
    ones. A Certificate's Secret goes with it: cert-manager does not make it its own child."""
    for kind, name in children:
        released = [(kind, name), ("Secret", name)] if kind == "Certificate" else [(kind, name)] if kind == "Secret" else []
        plan.delete_children += [key for key in released if key not in plan.delete_children]


# Events that report what was seen rather than the step taken: they never stand in for a phase change.
OBSERVATIONS = ("SpecChangeIgnored", "Unschedulable", "TLSDisabled", "AgentReplaced")
TLS_DISABLED_MESSAGE = "spec.security.tls is disabled: the agents exchange data over plaintext Flight, which anyone who can reach their pods can read and call (insecure)"


def _transition_event(old_phase: str | None, plan: Plan) -> None:
    new_phase = plan.status.get("phase")
    # A step that already explains itself (AttemptFailed, InvalidSpec, ...) is the transition's Event.
    if new_phase != old_phase and all(event.reason in OBSERVATIONS for event in plan.events):
        message = next((c["message"] for c in plan.status.get("conditions", []) if c["type"] == "Progressing"), "")
        plan.events.append(Event("Warning" if new_phase == FAILED else "Normal", new_phase, message))


def _deadline_passed(spec: dict[str, Any], status: dict[str, Any], now: datetime) -> bool:
    deadline = spec.get("activeDeadlineSeconds")
    return deadline is not None and "startTime" in status and now >= parse_time(status["startTime"]) + timedelta(seconds=deadline)


def _stop_pods(pods: list[dict[str, Any]], plan: Plan) -> None:
    for pod in pods:
        if _is_live(pod) and pod["metadata"]["name"] not in plan.delete_pods:
            plan.delete_pods.append(pod["metadata"]["name"])


def _after_finish(job: dict[str, Any], pods: list[dict[str, Any]], plan: Plan, now: datetime) -> None:
    # Pods still running after the end (an operator that stopped between writing the end and
    # deleting them) are stopped now; finished pods stay for `kubectl logs`.
    _stop_pods([pod for pod in pods if _pod_phase(pod) not in FINISHED_PHASES], plan)
    ttl = job["spec"].get("ttlSecondsAfterFinished")
    if ttl is None or "completionTime" not in plan.status:
        return
    expires = parse_time(plan.status["completionTime"]) + timedelta(seconds=ttl)
    if now >= expires:
        plan.delete_job = True
        plan.events.append(Event("Normal", "TTLExpired", f"deleting the job {ttl}s after it finished"))
    else:
        plan.requeue((expires - now).total_seconds())


def _conditions(job: dict[str, Any], plan: Plan, now: datetime, *, ready: tuple[bool, str, str], progressing: tuple[bool, str, str], degraded: tuple[bool, str, str] | None = None) -> None:
    generation = job["metadata"].get("generation", 0)
    set_condition(plan.status, "Ready", *ready, generation, now)
    set_condition(plan.status, "Progressing", *progressing, generation, now)
    if degraded is not None:
        set_condition(plan.status, "Degraded", *degraded, generation, now)
    elif not any(c["type"] == "Degraded" for c in plan.status["conditions"]):
        set_condition(plan.status, "Degraded", False, "AsExpected", "no failures", generation, now)


def _finish(job: dict[str, Any], plan: Plan, phase: str, reason: str, message: str, now: datetime) -> None:
    plan.status.update(phase=phase, completionTime=timestamp(now))
    plan.status.pop("nextAttemptTime", None)
    plan.status["ready"] = f"0/{job['spec']['agents']}"
    failed = phase == FAILED
    _conditions(
        job, plan, now,
        ready=(False, reason, message),
        progressing=(False, reason, message),
        degraded=(True, reason, message) if failed else (False, "AsExpected", "the job succeeded"),
    )
    if job["spec"].get("ttlSecondsAfterFinished") is not None:
        plan.requeue(job["spec"]["ttlSecondsAfterFinished"])


def _suspend(job: dict[str, Any], pods: list[dict[str, Any]], plan: Plan, now: datetime) -> None:
    _stop_pods(pods, plan)
    if any(_is_live(pod) for pod in pods) or plan.delete_pods:
        plan.requeue(SETTLE_SECONDS)
    plan.status["phase"] = SUSPENDED
    plan.status["ready"] = f"0/{job['spec']['agents']}"
    # The deadline counts running time only (as for batch/v1 Jobs): resuming starts the clock anew.
    for key in ("startTime", "attemptStartTime", "nextAttemptTime"):
        plan.status.pop(key, None)
    message = "spec.suspend is true: agents removed; setting it to false starts a new attempt"
    _conditions(job, plan, now, ready=(False, "Suspended", message), progressing=(False, "Suspended", message))


def _start_attempt(job: dict[str, Any], pods: list[dict[str, Any]], children: Children, plan: Plan, now: datetime) -> None:
    """Pending (new, retrying or resumed): wait for old pods and the backoff, validate, start."""
    spec, status = job["spec"], plan.status
    status["phase"] = PENDING
    status["ready"] = f"0/{spec['agents']}"
    _stop_pods(pods, plan)  # no attempt runs in Pending: every pod is a leftover
    if pods:
        plan.requeue(SETTLE_SECONDS)
        _conditions(job, plan, now, ready=(False, "Pending", "waiting for the previous attempt's pods to go"), progressing=(True, "CleaningUp", "waiting for the previous attempt's pods to go"))
        return
    if "nextAttemptTime" in status and now < parse_time(status["nextAttemptTime"]):
        message = f"attempt {status['attempt']} failed; attempt {status['attempt'] + 1} starts at {status['nextAttemptTime']}"
        plan.requeue((parse_time(status["nextAttemptTime"]) - now).total_seconds())
        _conditions(job, plan, now, ready=(False, "Pending", message), progressing=(True, "BackoffAfterFailure", message))
        return
    problems = spec_problems(job)
    if problems:
        message = "; ".join(problems)
        plan.events.append(Event("Warning", "InvalidSpec", message))
        _finish(job, plan, FAILED, "InvalidSpec", message, now)
        return
    status["attempt"] += 1
    status.pop("nextAttemptTime", None)
    status.pop("completionTime", None)
    status.setdefault("startTime", timestamp(now))
    status.update(phase=STARTING, specHash=spec_hash(spec), attemptStartTime=timestamp(now), agents=_agent_records(job))
    message = f"attempt {status['attempt']}: creating {spec['agents']} agents"
    _conditions(job, plan, now, ready=(False, "Starting", message), progressing=(True, "AttemptStarted", message))
    # Every attempt reports (and warns about) its own scheduling.
    set_condition(status, "AgentsScheduled", False, "Scheduling", message, job["metadata"].get("generation", 0), now)
    if not security.tls_enabled(spec):
        plan.events.append(Event("Warning", "TLSDisabled", f"attempt {status['attempt']}: {TLS_DISABLED_MESSAGE}"))
    _plan_children(job, children, plan, dict.fromkeys(range(spec["agents"]), 0), pods_exist=False)
    plan.requeue(SETTLE_SECONDS)


def _plan_children(job: dict[str, Any], children: Children, plan: Plan, pods: Mapping[int, int], *, pods_exist: bool) -> str | None:
    """Plan what the current attempt still lacks, in a safe order: the shared children (ConfigMap,
    Service, NetworkPolicy) and the agents' TLS Secrets or Certificates before any pod, so no pod
    waits in ContainerCreating for its plan or keys, starts before its DNS name exists or before the
    policy that admits its peers (a pass that fails creating them ends before the pods). A child that
    is not the one this attempt needs (built for another spec or attempt, left by a deleted job of
    the same name, or no longer wanted) is deleted now and created by a later pass that finds it
    gone, and only then the `pods` (agent index -> replacement number): a pod never mounts a stale
    plan or another attempt's keys. Once the attempt has pods, its children are recreated when missing
    but never rebuilt under them (the agents read the plan and their keys when they start).

    The operator's TLS Secrets come from one CA whose key is not kept, so they are issued together: a
    set that is only partly there (a pass stopped while creating it) is deleted and issued again,
    whole, before any pod; lost under the pods that still need one, they cannot be reissued (the
    running agents trust only the old CA) and the returned reason fails the attempt. cert-manager
    Certificates come from a shared issuer: missing ones are created, and pods only once every one is
    Ready (its Secret issued for this attempt)."""
    attempt = plan.status["attempt"]
    tls_children = builders.agent_tls_children(job, attempt)
    desired = {child_key(child): child for child in [*builders.shared_children(job), *tls_children]}
    if not pods_exist:
        for key, existing in children.items():
            if key not in desired or not builders.is_current(existing, desired[key]):
                plan.delete_children.append(key)
    secrets = [child_key(child) for child in tls_children if child["kind"] == "Secret"]
    kept_secrets = [key for key in secrets if key in children and key not in plan.delete_children]
    if not pods_exist and kept_secrets and len(kept_secrets) < len(secrets):
        plan.delete_children += kept_secrets  # a partial set: issued anew, whole, by a later pass
    if pods_exist and any(key not in children for key in secrets) and pods:
        return "the agents' TLS Secrets disappeared before all of the attempt's pods existed; their CA's key is gone, so they cannot be reissued"
    stale = bool(plan.delete_children)
    for key, child in desired.items():
        if key not in children and not (child["kind"] == "Secret" and (stale or pods_exist)):
            plan.create.append(child)
    certificates = [key for key in desired if key[0] == "Certificate"]
    waiting = any(key not in children or not builders.certificate_ready(children[key]) for key in certificates)
    if stale or waiting:
        plan.requeue(SETTLE_SECONDS)
        return None
    plan.create += [builders.agent_pod(job, index, attempt, replacement) for index, replacement in pods.items()]
    return None


# A freshly started attempt records its agents as "Creating": a pod missing in that state was never
# created (the operator stopped in between) and is created now. A lost agent (killed, evicted, its pod
# deleted) is recorded as "Replacing" — with its replacement counted in status, before anything else
# is done — while its pod goes and a new one of the same name takes its place; without replacements
# left it is "Missing" (or Failed) and fails the attempt.
CREATING = "Creating"
REPLACING = "Replacing"
MISSING = "Missing"


def _agent_records(job: dict[str, Any]) -> list[dict[str, Any]]:
    name, spec = job["metadata"]["name"], job["spec"]
    records = []
    for index in range(spec["agents"]):
        flight_port, metrics_port = builders.agent_ports(spec, index)
        records.append({
            "name": builders.agent_pod_name(name, index),
            "index": index,
            "address": builders.agent_address(name, index),
            "flightPort": flight_port,
            "metricsPort": metrics_port,
            "slots": spec["slotsPerAgent"],
            "phase": CREATING,
            "ready": False,
        })
    return records


def _follow_attempt(job: dict[str, Any], pods: list[dict[str, Any]], children: Children, plan: Plan, now: datetime) -> None:
    spec, status = job["spec"], plan.status
    attempt = status["attempt"]
    current = {pod_index(pod): pod for pod in pods if pod_attempt(pod) == attempt}
    _stop_pods([pod for pod in pods if pod_attempt(pod) != attempt], plan)
    records = status.get("agents") or _agent_records(job)
    to_create: dict[int, int] = {}  # agent index -> replacement number of the pod to create
    lost_agents = []
    for record in records:
        pod = current.get(record["index"])
        replacement = record.get("replacements", 0)
        if pod is not None and pod_replacement(pod) < replacement:
            if _is_live(pod):  # the lost agent's pod: it goes before its replacement can take the name
                plan.delete_pods.append(pod["metadata"]["name"])
            continue
        if pod is None:
            if record["phase"] in (CREATING, REPLACING):
                to_create[record["index"]] = replacement
            elif record["phase"] != SUCCEEDED:  # a finished agent's pod may go: its result is recorded
                lost_agents.append((record, None, "its pod disappeared"))
            continue
        record["phase"] = _pod_phase(pod)
        record["ready"] = _pod_ready(pod)
        message = termination_message(pod)
        result = parse_result(message)
        record.pop("message", None)
        record.pop("result", None)
        if result is not None:
            record["result"] = result
        elif message:
            record["message"] = message[: crd.MAX_MESSAGE_LENGTH]
        if record["phase"] not in FINISHED_PHASES and not _is_live(pod):
            lost_agents.append((record, pod, "its pod is being deleted"))
        elif record["phase"] == FAILED and (reason := lost_reason(pod)) is not None:
            lost_agents.append((record, pod, reason))
    for record, pod, reason in lost_agents:
        _replace_agent(job, record, pod, reason, plan, to_create, now)
    status["agents"] = records
    status["ready"] = f"{sum(record['ready'] for record in records)}/{len(records)}"
    drifted = _report_spec_drift(job, plan, now)
    unschedulable = _report_scheduling(job, [current.get(record["index"]) for record in records], plan, now)

    refused = [record for record in records if record["phase"] == FAILED and _refused_the_job(current.get(record["index"]))]
    if refused:  # the agents' planner refuted the job over its inputs' schemas: every attempt would repeat it
        message = refused[0].get("message", "an agent refused the job")
        plan.events.append(Event("Warning", "InvalidSpec", message))
        _stop_pods([pod for pod in pods if _pod_phase(pod) not in FINISHED_PHASES], plan)  # finished ones stay for `kubectl logs`
        _finish(job, plan, FAILED, "InvalidSpec", message, now)
        return
    broken = [record for record in records if record["phase"] in (FAILED, MISSING)]
    if broken:
        first = broken[0]
        _fail_attempt(job, pods, plan, "AttemptFailed", f"agent {first['index']} ({first['name']}) {first['phase'].lower()}: {first.get('message', 'no message')}", now)
        return
    if all(record["phase"] == SUCCEEDED for record in records):
        rows = sum(record.get("result", {}).get("rowsOut", 0) for record in records)
        published = next((record["result"]["output"] for record in records if "output" in record.get("result", {})), None)
        if published is not None:  # what `sabot results --cluster` and users read: where the result is
            status["output"] = published
        _finish(job, plan, SUCCEEDED, "Succeeded", f"all {len(records)} agents succeeded on attempt {attempt} ({rows} rows)", now)
        return
    if not drifted:
        lost = _plan_children(job, children, plan, to_create, pods_exist=bool(current))
        if lost:
            _fail_attempt(job, pods, plan, "TLSSecretsLost", lost, now)
            return
    elif to_create or any(child_key(child) not in children for child in builders.shared_children(job)):
        # Only the edited spec is known now: what it would build does not fit the rest of the attempt.
        _fail_attempt(job, pods, plan, "SpecChanged", "the spec was edited before all of the attempt's children existed", now)
        return
    if status["phase"] == STARTING:
        if all(record["ready"] or record["phase"] == SUCCEEDED for record in records):
            status["phase"] = RUNNING
        elif spec.get("startupDeadlineSeconds") is not None:
            deadline = spec["startupDeadlineSeconds"]
            # attemptStartTime is absent when an operator version without it started the attempt.
            expires = parse_time(status.setdefault("attemptStartTime", timestamp(now))) + timedelta(seconds=deadline)
            if now >= expires:
                waiting = sum(not (record["ready"] or record["phase"] == SUCCEEDED) for record in records)
                message = f"{waiting} of {len(records)} agents not ready within startupDeadlineSeconds={deadline}"
                _fail_attempt(job, pods, plan, "StartupDeadlineExceeded", f"{message}; {unschedulable}" if unschedulable else message, now)
                return
            plan.requeue((expires - now).total_seconds())
    message = f"attempt {attempt}: {status['ready']} agents ready"
    all_ready = status["ready"] == f"{len(records)}/{len(records)}"
    _conditions(job, plan, now, ready=(all_ready, "AgentsReady" if all_ready else "AgentsNotReady", message), progressing=(True, status["phase"], message))
    if plan.create or plan.delete_pods:
        plan.requeue(SETTLE_SECONDS)
    if spec.get("activeDeadlineSeconds") is not None:
        deadline = parse_time(status["startTime"]) + timedelta(seconds=spec["activeDeadlineSeconds"])
        plan.requeue(max((deadline - now).total_seconds(), 0.0))


def _replace_agent(job: dict[str, Any], record: dict[str, Any], pod: dict[str, Any] | None, reason: str, plan: Plan,
                   to_create: dict[int, int], now: datetime) -> None:
    """Agent `record` was lost: count and record a replacement (status is written before the pod goes,
    so a pass stopped anywhere after it neither loses nor repeats the count), delete its pod, or create
    the new one at once when the old is gone; without replacements left, the agent is broken (its
    attempt fails)."""
    status, attempt = plan.status, plan.status["attempt"]
    limit = RecoverySpec.of(job["spec"]).max_agent_replacements
    used = sum(entry.get("attempt") == attempt for entry in status.get("replacements", []))
    if used >= limit:
        exhausted = f"{limit} agent replacement{'s' if limit != 1 else ''} already used (recovery.maxAgentReplacements)" if limit else "recovery.maxAgentReplacements is 0"
        record.update(phase=MISSING if pod is None else FAILED, ready=False, message=f"{reason}; {exhausted}"[: crd.MAX_MESSAGE_LENGTH])
        return
    record["replacements"] = record.get("replacements", 0) + 1
    record.update(phase=REPLACING, ready=False, message=f"replacing it: {reason}"[: crd.MAX_MESSAGE_LENGTH])
    record.pop("result", None)
    entry = {"attempt": attempt, "agent": record["index"], "reason": reason[: crd.MAX_MESSAGE_LENGTH], "time": timestamp(now)}
    status["replacements"] = [*status.get("replacements", []), entry][-crd.MAX_RECORDED_REPLACEMENTS :]
    message = f"attempt {attempt}: agent {record['index']} ({record['name']}) {reason}; replacing it ({used + 1} of {limit})"
    plan.events.append(Event("Warning", "AgentReplaced", message))
    set_condition(status, "Degraded", True, "AgentReplaced", message, job["metadata"].get("generation", 0), now)
    if pod is None:
        to_create[record["index"]] = record["replacements"]
    elif _is_live(pod):
        plan.delete_pods.append(pod["metadata"]["name"])


def _report_spec_drift(job: dict[str, Any], plan: Plan, now: datetime) -> bool:
    """Without CEL nothing stops an edit of a running job; it is ignored until the next attempt.
    True when the spec differs from the one the attempt started with."""
    if plan.status.get("specHash") in (None, spec_hash(job["spec"])):
        return False
    message = "spec changed while the job is running; the change is ignored until the next attempt (only spec.suspend may change)"
    already = any(c["type"] == "Degraded" and c["reason"] == "SpecChangeIgnored" for c in plan.status.get("conditions", []))
    if not already:
        plan.events.append(Event("Warning", "SpecChangeIgnored", message))
    set_condition(plan.status, "Degraded", True, "SpecChangeIgnored", message, job["metadata"].get("generation", 0), now)
    return True


def _report_scheduling(job: dict[str, Any], attempt_pods: list[dict[str, Any] | None], plan: Plan, now: datetime) -> str | None:
    """Set AgentsScheduled from the attempt's pods (None: not created yet) and warn once per attempt
    when the scheduler cannot place some of them. Unschedulable is reported only once the scheduler
    has tried every pod, so the count is the attempt's, not a snapshot of its first few pods.
    Returns the summary ("k of n agents cannot be scheduled (...)") while any pod is unschedulable."""
    status, total = plan.status, len(attempt_pods)
    present = [pod for pod in attempt_pods if pod is not None]
    scheduled = sum(_scheduled(pod) for pod in present)
    refused = [(pod_index(pod), reason) for pod in present if (reason := unschedulable_reason(pod)) is not None]
    summary = None
    if refused:
        index, reason = refused[0]
        summary = f"{len(refused)} of {total} agents cannot be scheduled (agent {index}: {reason})"
    prefix = f"attempt {status['attempt']}: "
    previous = next((c for c in status.get("conditions", []) if c["type"] == "AgentsScheduled"), {})
    if scheduled == total:
        value = (True, "AgentsScheduled", f"{prefix}all {total} agents are on nodes")
    elif summary and scheduled + len(refused) == total:
        value = (False, "Unschedulable", prefix + summary)
        if previous.get("reason") != "Unschedulable":
            plan.events.append(Event("Warning", "Unschedulable", prefix + summary))
    else:
        value = (False, "Scheduling", f"{prefix}{scheduled} of {total} agents scheduled")
    set_condition(status, "AgentsScheduled", *value, job["metadata"].get("generation", 0), now)
    return summary


def _fail_attempt(job: dict[str, Any], pods: list[dict[str, Any]], plan: Plan, reason: str, reason_message: str, now: datetime) -> None:
    """End the current attempt, counted against retry.limit: its pods go (releasing their nodes) and
    the next one starts after the backoff, or the job fails."""
    spec, status = job["spec"], plan.status
    status["failedAttempts"] = status.get("failedAttempts", 0) + 1
    plan.create = []  # nothing more for an attempt that ended (its startup deadline is checked after planning its children)
    _stop_pods(pods, plan)
    attempt, limit = status["attempt"], spec["retry"]["limit"]
    if status["failedAttempts"] > limit:
        message = f"attempt {attempt} failed: {reason_message}; retry.limit={limit} reached"
        _finish(job, plan, FAILED, "RetryLimitExceeded", message, now)
        return
    delay = retry_delay(spec, status["failedAttempts"])
    status["phase"] = PENDING
    status["nextAttemptTime"] = timestamp(now + timedelta(seconds=delay))
    message = f"attempt {attempt} failed: {reason_message}; retrying in {delay}s"
    plan.events.append(Event("Warning", reason, message))
    _conditions(job, plan, now, ready=(False, reason, message), progressing=(True, "BackoffAfterFailure", message), degraded=(True, reason, message))
    plan.requeue(delay)
