"""Thin kopf handlers: one reconcile loop per SabotJob, woken by changes of the job or its pods.

Every job has exactly one writer (its daemon), and each pass starts from a fresh read of the job,
its pods and its shared children, so a pass can run any number of times and stop after any of its
writes: children have fixed names (409 = already there), the status write is conditional on the
resourceVersion that was read, and the next pass (of this operator or a restarted one) plans
whatever the current attempt still lacks. The decisions live in status.reconcile (pure,
unit-tested); a pass is `decide`, then `apply` of each of the plan's actions in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import kopf
import urllib3
from kubernetes.client.rest import ApiException

from . import builders, crd, kube, metrics
from .status import Action, Plan, reconcile

# Without any change of the job or its pods, a job is still re-examined this often.
RESYNC_SECONDS = 30.0
# After a failed pass (API errors, conflicts) the next one waits this long, doubling up to the cap.
ERROR_BACKOFF_SECONDS = 1.0
MAX_ERROR_BACKOFF_SECONDS = 60.0
EVENT_MESSAGE_LIMIT = 1024

TRANSIENT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


@kopf.on.startup(retries=5, backoff=10, timeout=60)
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Watches end on the server after server_timeout and are re-established; the client timeout
    # catches a connection that went silent without closing.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.persistence.finalizer = f"{crd.GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=crd.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=crd.GROUP, key="last-handled-configuration")
    memo.cluster = kube.Cluster(kube.api_client())
    memo.wakeups = {}  # job uid -> asyncio.Event that cuts the daemon's wait short


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_MANAGED_BY: builders.MANAGER})
async def wake_owner_of_pod(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    for owner in body.metadata.get("ownerReferences", []):
        if owner.get("kind") == crd.KIND and owner.get("uid") in memo.wakeups:
            memo.wakeups[owner["uid"]].set()


def _spec_not_yet_observed(body: kopf.Body, **_: Any) -> bool:
    return body.metadata.get("generation") != body.get("status", {}).get("observedGeneration")


@kopf.on.event(crd.GROUP, crd.VERSION, crd.PLURAL, when=_spec_not_yet_observed)
async def wake_on_spec_change(uid: str, memo: kopf.Memo, **_: Any) -> None:
    if uid in memo.wakeups:
        memo.wakeups[uid].set()


def decide(cluster: kube.Cluster, namespace: str, name: str, now: datetime) -> tuple[dict[str, Any], Plan] | None:
    """Read the job and its children, and plan the next step. None when the job is gone or going.
    The agents' TLS Secrets the plan creates get their keys here, after the (pure) decision."""
    job = cluster.get_job(namespace, name)
    if job is None or job["metadata"].get("deletionTimestamp"):
        return None
    plan = reconcile(job, cluster.list_pods(namespace, name), now, cluster.get_children(namespace, job))
    plan.create = builders.with_new_keys(plan.create)
    return job, plan


def apply(cluster: kube.Cluster, job: dict[str, Any], action: Action) -> None:
    """Make one write of a plan."""
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    writes = {
        "patch_status": lambda: cluster.patch_status(job, action.body),
        "delete": lambda: cluster.delete(action.kind, namespace, action.name),
        "create": lambda: cluster.create(action.body),
        "delete_job": lambda: cluster.delete_job(namespace, name),
    }
    writes[action.verb]()


def reconcile_once(cluster: kube.Cluster, namespace: str, name: str, now: datetime) -> tuple[dict[str, Any], Plan] | None:
    """One pass: decide, then make the plan's writes in order (the first failing one ends the pass)."""
    decided = decide(cluster, namespace, name, now)
    if decided is not None:
        job, plan = decided
        for action in plan.actions():
            apply(cluster, job, action)
    return decided


async def _sleep_until_woken(wakeup: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(wakeup.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


@kopf.daemon(crd.GROUP, crd.VERSION, crd.PLURAL, id="reconcile", retries=10, backoff=10, cancellation_timeout=5)
async def run_job(name: str, namespace: str, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any) -> None:
    """The job's reconcile loop. API errors are retried here with a capped backoff, forever: the job
    must converge once the API server is back. Anything else is a bug: kopf restarts the daemon
    with `backoff` at most `retries` times."""
    wakeup = memo.wakeups.setdefault(uid, asyncio.Event())
    error_backoff = ERROR_BACKOFF_SECONDS
    try:
        while not stopped:
            wakeup.clear()
            started = time.monotonic()
            try:
                outcome = await asyncio.to_thread(reconcile_once, memo.cluster, namespace, name, datetime.now(timezone.utc))
            except TRANSIENT_ERRORS as error:
                conflict = isinstance(error, ApiException) and error.status == 409
                metrics.RECONCILES.labels("conflict" if conflict else "error").inc()
                if not conflict:
                    logger.warning(f"reconcile failed, retrying in {error_backoff:.0f}s: {error}")
                await _sleep_until_woken(wakeup, error_backoff)
                error_backoff = min(error_backoff * 2, MAX_ERROR_BACKOFF_SECONDS)
                continue
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            metrics.RECONCILES.labels("ok").inc()
            error_backoff = ERROR_BACKOFF_SECONDS
            if outcome is None:
                return
            job, plan = outcome
            metrics.JOB_PHASES.set(uid, plan.status["phase"])
            for event in plan.events:
                kopf.event(job, type=event.type, reason=event.reason, message=event.message[:EVENT_MESSAGE_LIMIT])
            if plan.delete_job:
                return
            await _sleep_until_woken(wakeup, min(plan.requeue_after or RESYNC_SECONDS, RESYNC_SECONDS))
    finally:
        memo.wakeups.pop(uid, None)
        metrics.JOB_PHASES.forget(uid)
