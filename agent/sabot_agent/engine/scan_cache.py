"""Columns of input units that more than one scan of a plan reads, decoded once per agent.

A decorrelated subquery scans the table its outer query scans (TPC-H q2, q11, q17, q18, q20, q21,
q22): each scan would read and decode the same Parquet column chunks of the same row groups again.
The plan names every scan up front, so the columns two or more scans of an input read are known
before the first stage runs; those are kept, per unit, after their first read (in the encoded form
the scans read: small-dictionary strings stay dictionaries), up to a byte budget, until no later
stage scans their input. Columns only one scan reads are never kept. Arrow arrays are immutable, so a kept column serves every
later reader as it is.
"""

from __future__ import annotations

import collections
import threading

import pyarrow as pa

from sabot_agent import inputs as I
from sabot_agent.plan import physical as P

# an agent keeps at most this much of its inputs' decoded columns, and at most a quarter of its memory budget
SCAN_CACHE_BYTES = 256 << 20


def cache_budget(memory_budget_bytes: int | None) -> int:
    return SCAN_CACHE_BYTES if memory_budget_bytes is None else min(SCAN_CACHE_BYTES, memory_budget_bytes // 4)


def shared_columns(plan: P.DistributedPlan) -> dict[str, frozenset[str]]:
    """input -> the source columns that two or more scans of the plan read."""
    readers: collections.Counter = collections.Counter()
    for stage in plan.stages:
        for scan in _scans(stage):
            readers.update((scan.input, source) for source in {source for _, source in scan.columns})
    shared: dict[str, set[str]] = collections.defaultdict(set)
    for (name, column), count in readers.items():
        if count > 1:
            shared[name].add(column)
    return {name: frozenset(columns) for name, columns in shared.items()}


def _scans(stage: P.Stage) -> list[P.ScanOp]:
    return P.scans(stage.root, into_replicated=True)


class ScanCache:
    def __init__(self, shared: dict[str, frozenset[str]], budget_bytes: int, scanned_after: list[set[str]] | None = None):
        """`shared`: input -> columns to keep; `scanned_after[i]`: the inputs stages after the i-th still scan."""
        self._shared = shared
        self._scanned_after = scanned_after or []
        self._budget = budget_bytes
        self._used = 0
        self._columns: dict[tuple[str, I.Unit, str], pa.ChunkedArray] = {}
        self._lock = threading.Lock()

    def read(self, info: I.InputInfo, units: list[I.Unit], columns: list[str]) -> pa.Table:
        """read_units(info, units, columns, encoded=True), from the kept columns where it can."""
        name = info.spec.name
        shared = self._shared.get(name, frozenset())
        if not units or not shared.intersection(columns):
            return I.read_units(info, units, columns, encoded=True)
        with self._lock:
            kept = {column: [self._columns.get((name, unit, column)) for unit in units] for column in columns if column in shared}
        kept = {column: parts for column, parts in kept.items() if all(part is not None for part in parts)}
        missing = [column for column in columns if column not in kept]
        read = I.read_units(info, units, missing, encoded=True) if missing else None
        if read is not None:
            self._keep(name, units, read, [column for column in missing if column in shared])
        arrays = [read.column(column) if column in missing else _concat(kept[column]) for column in columns]
        return pa.Table.from_arrays(arrays, names=columns)

    @classmethod
    def for_plan(cls, plan: P.DistributedPlan, budget_bytes: int) -> ScanCache:
        scanned_after = [{scan.input for later in plan.stages[position + 1 :] for scan in _scans(later)} for position in range(len(plan.stages))]
        return cls(shared_columns(plan), budget_bytes, scanned_after)

    def stage_done(self, position: int) -> None:
        """The stage at this position of the plan ran: drop the kept columns of inputs no later stage scans."""
        still_scanned = self._scanned_after[position]
        with self._lock:
            for key in [key for key in self._columns if key[0] not in still_scanned]:
                self._used -= self._columns.pop(key).nbytes

    def _keep(self, name: str, units: list[I.Unit], table: pa.Table, columns: list[str]) -> None:
        """Each unit's rows of the given columns of a read (zero-copy slices), while the budget lasts."""
        if table.num_rows != sum(unit.piece_rows for unit in units):
            return  # rows not known per unit: nothing to cut at
        offset = 0
        for unit in units:
            for column in columns:
                part = table.column(column).slice(offset, unit.piece_rows)
                with self._lock:
                    if self._used + part.nbytes > self._budget:
                        return
                    if (name, unit, column) not in self._columns:
                        self._columns[(name, unit, column)] = part
                        self._used += part.nbytes
            offset += unit.piece_rows


def _concat(parts: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    return pa.chunked_array([chunk for part in parts for chunk in part.chunks], parts[0].type)
