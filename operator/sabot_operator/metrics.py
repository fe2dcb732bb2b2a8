"""Operator metrics (Prometheus): reconcile passes by result, their duration, and jobs by phase."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import crd

RECONCILES = Counter("sabot_operator_reconciles", "SabotJob reconcile passes by result (ok, conflict, error)", ["result"])
RECONCILE_SECONDS = Histogram(
    "sabot_operator_reconcile_duration_seconds",
    "Duration of one SabotJob reconcile pass (API reads, status write, child changes)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class JobPhases(Collector):
    """Current phase of every job this operator follows, counted at scrape time.

    A gauge incremented and decremented per transition drifts across restarts; the phase map is
    rebuilt from the jobs' status as soon as their reconcile loops run again.
    """

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, uid: str, phase: str) -> None:
        with self._lock:
            self._phases[uid] = phase

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phases.pop(uid, None)

    def collect(self):
        with self._lock:
            phases = list(self._phases.values())
        family = GaugeMetricFamily("sabot_operator_jobs", "SabotJobs followed by this operator, by phase", labels=["phase"])
        for phase in crd.PHASES:
            family.add_metric([phase], phases.count(phase))
        yield family


JOB_PHASES = JobPhases()
REGISTRY.register(JOB_PHASES)
