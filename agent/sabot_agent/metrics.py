"""Prometheus metrics of one agent. Labels are job and agent (plus small fixed sets such as rpc,
direction, method, status, and the stage of the job's plan) — never a partition or a task, so the
series count does not grow with data."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class AgentMetrics:
    def __init__(self, job: str, agent: int):
        self.job = job
        self.agent = str(agent)
        self.registry = CollectorRegistry(auto_describe=True)
        base = ["job", "agent"]
        self._shuffle_bytes = Counter("sabot_shuffle_bytes", "Shuffle payload bytes", base + ["direction", "rpc"], registry=self.registry)
        self._shuffle_rows = Counter("sabot_shuffle_rows", "Shuffle rows", base + ["direction", "rpc"], registry=self.registry)
        self._shuffle_batches = Counter(
            "sabot_shuffle_batches", "Shuffle Flight messages", base + ["direction", "rpc"], registry=self.registry
        )
        self._fetch_failures = Counter("sabot_fetch_failures", "Failed shuffle RPC attempts (retried or not)", base, registry=self.registry)
        self._fetch_failures.labels(job, self.agent)  # present at 0 from the start
        self._flight_requests = Counter(
            "sabot_flight_requests", "Flight requests served", base + ["method", "status"], registry=self.registry
        )
        self._flight_seconds = Histogram(
            "sabot_flight_request_duration_seconds",
            "Duration of served Flight requests",
            base + ["method"],
            buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0),
            registry=self.registry,
        )
        # a job has a handful of stages, so a stage label stays bounded (never a partition or a task)
        self._stage_rows = Counter("sabot_stage_rows", "Rows read (in) and produced (out) by each stage", base + ["stage", "direction"],
                                   registry=self.registry)  # fmt: skip
        self._stage_tasks = Counter("sabot_stage_tasks", "Tasks each stage finished", base + ["stage"], registry=self.registry)
        self._stage_seconds = Counter("sabot_stage_seconds", "Seconds each stage ran", base + ["stage"], registry=self.registry)
        self._live_sources: list[Callable[[], dict]] = []
        self.registry.register(_LiveCollector(self))

    def shuffle(self, direction: str, rpc: str, rows: int, nbytes: int, batches: int = 1) -> None:
        self._shuffle_bytes.labels(self.job, self.agent, direction, rpc).inc(nbytes)
        self._shuffle_rows.labels(self.job, self.agent, direction, rpc).inc(rows)
        self._shuffle_batches.labels(self.job, self.agent, direction, rpc).inc(batches)

    def fetch_failure(self) -> None:
        self._fetch_failures.labels(self.job, self.agent).inc()

    def flight_request(self, method: str, status: str, seconds: float) -> None:
        self._flight_requests.labels(self.job, self.agent, method, status).inc()
        self._flight_seconds.labels(self.job, self.agent, method).observe(seconds)

    def stage_rows(self, stage: int, direction: str, rows: int) -> None:
        self._stage_rows.labels(self.job, self.agent, str(stage), direction).inc(rows)

    def stage_task_done(self, stage: int) -> None:
        self._stage_tasks.labels(self.job, self.agent, str(stage)).inc()

    def stage_seconds(self, stage: int, seconds: float) -> None:
        self._stage_seconds.labels(self.job, self.agent, str(stage)).inc(seconds)

    def add_live_source(self, source: Callable[[], dict]) -> None:
        """A callable returning current values (store, slots, executor) read at every scrape."""
        self._live_sources.append(source)


# name -> (kind, help); the live sources report values under these names
_LIVE_METRICS = {
    "slots": ("gauge", "Task slots of this agent"),
    "slots_busy": ("gauge", "Task slots currently held by a task"),
    "executor_threads": ("gauge", "Threads of the native morsel executor"),
    "executor_queue_depth": ("gauge", "Morsels waiting in the executor queue"),
    "executor_morsels": ("counter", "Morsels processed by the executor"),
    "store_bytes": ("gauge", "Bytes held by the partition store (memory and spilled)"),
    "store_memory_bytes": ("gauge", "Bytes of the partition store held in memory"),
    "store_batches": ("gauge", "Batches held by the partition store"),
    "store_partitions": ("gauge", "Partitions held by the partition store"),
    "spilled_bytes": ("counter", "Bytes spilled to Arrow IPC files"),
    "backpressure_seconds": ("counter", "Seconds tasks waited to store stage output while a spill ran (memory above 1.5x budget)"),
}


class _LiveCollector:
    def __init__(self, metrics: AgentMetrics):
        self._metrics = metrics

    def describe(self):
        return []

    def collect(self):
        values: dict = {}
        for source in self._metrics._live_sources:
            values.update(source())
        labels = [self._metrics.job, self._metrics.agent]
        for name, (kind, help_text) in _LIVE_METRICS.items():
            if name not in values:
                continue
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(f"sabot_{name}", help_text, labels=["job", "agent"])
            family.add_metric(labels, float(values[name]))
            yield family
