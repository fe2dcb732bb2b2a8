"""Runs a distributed plan on one agent: every stage in order, each as tasks on the task slots.

Tasks of a stage (see plan.physical): scan units of the agent's share, the hash partitions the agent
owns, or one task. Every task evaluates the stage's operator tree over its inputs; its output goes
into the stage's exchange output (or, for the last stage, to the job's result). A stage whose agent
has no task of its own still runs one task over empty inputs, so every producer seals its output
with the stage's schema. A `single` stage runs on agent 0 only.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from sabot_agent import failpoints
from sabot_agent import inputs as I
from sabot_agent.engine.exchange import ExchangeReader, StageOutput, stage_shuffle_id
from sabot_agent.engine.operators import TaskInputs, execute
from sabot_agent.engine.scan_cache import ScanCache, cache_budget
from sabot_agent.plan import physical as P


@dataclass
class StageProgress:
    """What /status, the live view and the JSON result show of one stage on this agent."""

    stage: int
    exchanged: bool  # the output goes to an exchange (else it is the job's result)
    tasks: int = 0
    tasks_done: int = 0
    rows_scanned: int = 0  # rows read from the job's inputs
    rows_in: int = 0  # rows read from inputs and exchanges
    rows_out: int = 0
    bytes_in: int = 0  # Arrow bytes read from exchanges (the agent's own outputs and its peers')
    bytes_out: int = 0  # Arrow bytes written to the stage's exchange output
    seconds: float = 0.0
    state: str = "waiting"

    def as_dict(self) -> dict:
        return {"stage": self.stage, "state": self.state, "tasks": self.tasks, "tasks_done": self.tasks_done, "exchanged": self.exchanged,
                "rows_scanned": self.rows_scanned, "rows_in": self.rows_in, "rows_out": self.rows_out, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "seconds": round(self.seconds, 4)}  # fmt: skip


@dataclass
class Task:
    """One unit of work of a stage: scan units or a generated row range, or an exchange partition."""

    units: list[I.Unit] = field(default_factory=list)
    rows: tuple[int, int] | None = None
    partition: int | None = None


class _RangeTasks(Sequence):
    """A task per generated row range, made when it is run (not ~950 K of them up front)."""

    def __init__(self, ranges: Sequence[tuple[int, int]]):
        self._ranges = ranges

    def __len__(self) -> int:
        return len(self._ranges)

    def __getitem__(self, index: int) -> Task:
        return Task(rows=self._ranges[index])


class StageRunner:
    def __init__(self, *, job, plan: P.DistributedPlan, infos: dict[str, I.InputInfo], agent_index: int, agent_count: int,
                 attempt: int, store, reader: ExchangeReader, slots, slot_count: int, native, executor,
                 on_progress: Callable[[StageProgress], None], metrics=None):  # fmt: skip
        self.job = job
        self.plan = plan
        self.infos = infos
        self.agent_index = agent_index
        self.agent_count = agent_count
        self.attempt = attempt
        self.store = store
        self.reader = reader
        self.slots = slots
        self.slot_count = slot_count
        self.native = native
        self.executor = executor
        self.on_progress = on_progress
        self.metrics = metrics
        self.progress = {stage.id: StageProgress(stage.id, stage.output is not None) for stage in plan.stages}
        # tables every task of a stage shares: broadcast inputs and replicated subtrees, computed once
        self._shared: dict[tuple, _Once] = {}
        self._lock = threading.Lock()
        # columns that several scans of the plan read are decoded once
        self._reads = ScanCache.for_plan(plan, cache_budget(store.memory_budget_bytes if store is not None else None))

    # -- the plan

    def run(self) -> list[pa.Table]:
        """Run every stage; returns this agent's share of the result (empty when agent 0 has it all)."""
        result: list[pa.Table] = []
        # one worker per task slot for the whole plan (a thread costs ~1 ms to start)
        with ThreadPoolExecutor(max_workers=max(1, self.slot_count), thread_name_prefix="task") as pool:
            for position, stage in enumerate(self.plan.stages):
                if stage.single and self.agent_index != 0:
                    self._update(stage.id, state="skipped")
                    continue
                result = self._run_stage(stage, pool)
                self._reads.stage_done(position)
        return result

    def _run_stage(self, stage: P.Stage, pool: ThreadPoolExecutor) -> list[pa.Table]:
        started = time.monotonic()
        tasks = self._tasks(stage)
        self._update(stage.id, state="running", tasks=len(tasks))
        output = None
        if stage.output is not None:
            exchange = stage.output
            output = StageOutput(self.store, stage_shuffle_id(self.job.name, self.attempt, stage.id), self.agent_index, self.attempt,
                                 exchange.partitions, exchange.kind, exchange.keys, self._partition_batch, self.agent_index)  # fmt: skip
        results: list[pa.Table] = []

        def run_task(task: Task) -> None:
            with self.slots.acquire(f"stage-{stage.id}"):
                failpoints.reached(self.agent_index, f"task:{stage.id}")
                table = execute(stage.root, self._task_inputs(stage, task))
                if output is not None:
                    output.write(table)
                    self._update(stage.id, bytes_out=table.nbytes)
                else:
                    with self._lock:
                        results.append(table)
            self._update(stage.id, tasks_done=1, rows_out=table.num_rows)

        # a few tasks ahead of the slots at a time: a share of 10^12 generated rows has ~950 K tasks
        pending: collections.deque = collections.deque()
        for task in tasks:
            if len(pending) > 2 * self.slot_count:
                pending.popleft().result()
            pending.append(pool.submit(run_task, task))
        for future in pending:
            future.result()
        if output is not None:
            output.seal(results[0].schema if results else pa.schema([]))
            failpoints.reached(self.agent_index, f"sealed:{stage.id}")
        self._update(stage.id, state="done", seconds=time.monotonic() - started)
        return results

    def _update(self, stage_id: int, **values) -> None:
        with self._lock:
            progress = self.progress[stage_id]
            for name, value in values.items():
                if name in ("tasks_done", "rows_scanned", "rows_in", "rows_out", "bytes_in", "bytes_out"):
                    setattr(progress, name, getattr(progress, name) + value)
                else:
                    setattr(progress, name, value)
        if self.metrics is not None:
            if values.get("rows_in"):
                self.metrics.stage_rows(stage_id, "in", values["rows_in"])
            if values.get("rows_out"):
                self.metrics.stage_rows(stage_id, "out", values["rows_out"])
            if values.get("tasks_done"):
                self.metrics.stage_task_done(stage_id)
            if "seconds" in values:
                self.metrics.stage_seconds(stage_id, values["seconds"])
        self.on_progress(progress)

    # -- tasks

    def _tasks(self, stage: P.Stage) -> Sequence[Task]:
        scans = P.scans(stage.root)
        reads = P.reads(stage.root)
        if len(scans) > 1:
            raise RuntimeError(f"stage {stage.id} reads {len(scans)} inputs; the planner gives a stage at most one")
        if scans:
            scan = scans[0]
            info = self.infos[scan.input]
            if info.generated:
                tasks = _RangeTasks(I.generated_ranges(info.spec, self.agent_index, self.agent_count))
            else:
                units = I.pruned_units(info, scan.predicate, dict(scan.columns))
                share = I.agent_share(units, self.agent_index, self.agent_count)
                tasks = [Task(units=group) for group in I.group_units(share)]
            return tasks or [Task()]
        hashed = [read for read in reads if read.kind == "hash"]
        if hashed:
            partitions = self.plan.stage(hashed[0].stage).output.partitions
            owned = [Task(partition=p) for p in range(partitions) if p % self.agent_count == self.agent_index]
            return owned or [Task()]
        if any(read.kind == "forward" for read in reads):
            return [Task(partition=self.agent_index)]
        return [Task(partition=0)]

    def _task_inputs(self, stage: P.Stage, task: Task) -> TaskInputs:
        def scan(op: P.ScanOp) -> pa.Table:
            return self._scan(stage.id, op, task.units, task.rows)

        def exchange(op: P.ExchangeRead) -> pa.Table:
            if op.kind == "broadcast":
                return self._broadcast(op.stage, stage.id)
            if op.kind == "hash":
                if task.partition is None:
                    table = self.reader.schema(op.stage).empty_table()
                else:
                    table = self.reader.read(op.stage, task.partition)
            elif op.kind == "forward":
                table = self.reader.read(op.stage, self.agent_index)
            else:
                table = self.reader.read(op.stage, 0)
            self._update(stage.id, rows_in=table.num_rows, bytes_in=table.nbytes)
            return table

        return TaskInputs(scan=scan, exchange=exchange, aggregate=self._aggregate, replicated=lambda op: self._replicated(stage, op))

    def _replicated(self, stage: P.Stage, op: P.ReplicatedOp) -> pa.Table:
        """A replicated subtree, evaluated once for the stage's tasks over every unit of its scans."""

        def scan_all(scan: P.ScanOp) -> pa.Table:
            info = self.infos[scan.input]
            if info.generated:
                return self._scan(stage.id, scan, [], (0, info.spec.rows))
            return self._scan(stage.id, scan, I.pruned_units(info, scan.predicate, dict(scan.columns)), None)

        def no_exchange(read: P.ExchangeRead) -> pa.Table:
            raise RuntimeError(f"stage {stage.id}: a replicated subtree reads an exchange")

        inputs = TaskInputs(scan=scan_all, exchange=no_exchange, aggregate=self._aggregate, replicated=lambda inner: self._replicated(stage, inner))
        return self._shared_table(("replicated", id(op)), lambda: execute(op.input, inputs))

    def _scan(self, stage_id: int, op: P.ScanOp, units: list[I.Unit], rows: tuple[int, int] | None) -> pa.Table:
        info = self.infos[op.input]
        sources = [source for _, source in op.columns]
        if info.generated:
            if rows is None:
                table = info.schema.empty_table().select(sources)
            else:
                table = pa.Table.from_batches([I.generate_rows(info.spec, *rows)]).select(sources)
        else:
            table = self._reads.read(info, units, sources)  # encoded: the scan operator decodes what it keeps
        self._update(stage_id, rows_scanned=table.num_rows, rows_in=table.num_rows)
        return table.rename_columns([name for name, _ in op.columns])

    def _broadcast(self, upstream: int, stage_id: int) -> pa.Table:
        """A broadcast input is fetched once per agent and shared by the stage's tasks."""

        def fetch() -> pa.Table:
            table = self.reader.read(upstream, 0)
            self._update(stage_id, rows_in=table.num_rows, bytes_in=table.nbytes)
            return table

        return self._shared_table(("broadcast", upstream), fetch)

    def _shared_table(self, key: tuple, compute: Callable[[], pa.Table]) -> pa.Table:
        with self._lock:
            once = self._shared.setdefault(key, _Once())
        return once.get(compute)

    # -- native kernels

    def _partition_batch(self, batch: pa.RecordBatch, keys: list[str], partitions: int) -> list[pa.RecordBatch]:
        return self.native.partition_batch(batch, keys, partitions, executor=self.executor)

    def _aggregate(self, table: pa.Table, keys: list[str], specs: list[tuple[str, str, str]], mode: str) -> pa.Table:
        native, executor = self.native, self.executor
        # GROUP BY without aggregates (DISTINCT): the kernels want one aggregation, so count and drop it
        counted = not specs
        if counted:
            specs = [("", "count_all", "__rows")]
        if mode == "partial":
            result = native.aggregate_partial(table, keys, specs, executor=executor)
        elif mode == "final":
            result = native.aggregate_final([table], keys, specs, executor=executor)
        else:
            result = native.aggregate(table, keys, specs, executor=executor)
        if counted and mode != "partial":
            result = result.drop_columns(["__rows"])
        return result


class _Once:
    """A value the first caller computes while the others wait for it (a failure is not kept: the
    next caller tries again)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = False
        self._value = None

    def get(self, compute: Callable[[], pa.Table]) -> pa.Table:
        with self._lock:
            if not self._done:
                self._value, self._done = compute(), True
            return self._value
