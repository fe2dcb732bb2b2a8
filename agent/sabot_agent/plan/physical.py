"""The distributed plan: the logical plan cut into stages joined by exchanges.

A stage is a tree of physical operators that every agent (or only agent 0, for a `single` stage) runs
on its task slots. Its leaves say where the rows come from and so what a task is:
- `scan` of a file or generated input: one task per unit of the agent's share (row groups);
- `exchange` reads of upstream stages: a hash exchange gives one task per partition the agent owns
  (partition p belongs to agent p mod N), a forward exchange one task (partition = the agent's own
  index), a gather exchange one task on agent 0; a broadcast exchange is read whole by every task;
- `values`: one task on agent 0.
A stage ends in an exchange (hash on key columns into P partitions, broadcast to every agent,
gather to agent 0, forward to the same agent) or, for the last stage, in the job's output.

`plan_stages(query, ...)` is deterministic: the same query, input statistics and settings give the same
plan in every process. `DistributedPlan.to_json()`/`from_json()` are the plan format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan import types as T
from sabot_agent.plan.types import PlanError

PLAN_VERSION = 1
EXCHANGE_KINDS = ("hash", "broadcast", "gather", "forward")
# a join side estimated below this is broadcast when that is cheaper than shuffling both sides
BROADCAST_MAX_BYTES = 32 << 20
ALWAYS_BROADCAST_BYTES = 1 << 20
FILTER_SELECTIVITY = 0.3
AGGREGATE_REDUCTION = 0.1


# ---------------------------------------------------------------------------------------- operators


class Op:
    """A physical operator; `children` are evaluated first (left to right)."""

    @property
    def children(self) -> tuple["Op", ...]:
        return ()


@dataclass
class ScanOp(Op):
    input: str
    columns: list[tuple[str, str]]  # (output name, the input's column name)
    types: list[pa.DataType]
    predicate: E.Expr | None = None  # over output names: prunes row groups, then applied exactly


@dataclass
class ValuesOp(Op):
    fields: list[L.Field]
    rows: list[tuple]


@dataclass
class ExchangeRead(Op):
    stage: int
    kind: str


@dataclass
class FilterOp(Op):
    input: Op
    predicate: E.Expr

    @property
    def children(self):
        return (self.input,)


@dataclass
class ProjectOp(Op):
    input: Op
    exprs: list[tuple[str, E.Expr]]

    @property
    def children(self):
        return (self.input,)


@dataclass
class AggregateOp(Op):
    """mode partial: input rows -> per-group partial states (the native kernels' own columns);
    final: partial states (from an exchange) -> results; complete: input rows -> results;
    distinct: input rows -> results, for aggregates with DISTINCT calls (no partial form).
    `keys` are computed from the input (partial, complete, distinct) or named in it (final)."""

    input: Op
    mode: str
    keys: list[tuple[str, E.Expr]]
    aggregates: list[tuple[str, L.AggregateCall]]

    @property
    def children(self):
        return (self.input,)


@dataclass
class JoinOp(Op):
    """Hash join: `right` is the build side. Keys are column names of each side."""

    left: Op
    right: Op
    kind: str
    left_keys: list[str]
    right_keys: list[str]
    residual: E.Expr | None = None

    @property
    def children(self):
        return (self.left, self.right)


@dataclass
class SortOp(Op):
    input: Op
    keys: list[L.SortKey]
    limit: int | None = None
    offset: int = 0

    @property
    def children(self):
        return (self.input,)


@dataclass
class LimitOp(Op):
    input: Op
    limit: int | None
    offset: int = 0

    @property
    def children(self):
        return (self.input,)


@dataclass
class UnionOp(Op):
    parts: list[Op]

    @property
    def children(self):
        return tuple(self.parts)


@dataclass
class Exchange:
    kind: str
    keys: list[str] = field(default_factory=list)
    partitions: int = 1


@dataclass
class Stage:
    id: int
    root: Op
    output: Exchange | None  # None: the job's result
    single: bool = False  # runs on agent 0 only
    estimated_rows: float = 0.0


@dataclass
class DistributedPlan:
    stages: list[Stage]
    output_names: list[str]
    ordered: bool

    @property
    def result(self) -> Stage:
        return self.stages[-1]

    def stage(self, stage_id: int) -> Stage:
        return self.stages[stage_id]

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, "outputNames": self.output_names, "ordered": self.ordered,
                           "stages": [_stage_json(stage) for stage in self.stages]}, separators=(",", ":"))  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> "DistributedPlan":
        doc = json.loads(text)
        if doc.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {doc.get('version')} is not {PLAN_VERSION}")
        return cls([_stage_from_json(node) for node in doc["stages"]], list(doc["outputNames"]), bool(doc["ordered"]))


def reads(op: Op) -> list[ExchangeRead]:
    found = [op] if isinstance(op, ExchangeRead) else []
    for child in op.children:
        found += reads(child)
    return found


def scans(op: Op) -> list[ScanOp]:
    found = [op] if isinstance(op, ScanOp) else []
    for child in op.children:
        found += scans(child)
    return found


# ---------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class TableStats:
    """What the planner knows of an input before reading it: rows and average bytes per row per column."""

    rows: int
    column_bytes: dict[str, float]


@dataclass(frozen=True)
class Estimate:
    rows: float
    row_bytes: float

    @property
    def bytes(self) -> float:
        return self.rows * self.row_bytes


def type_bytes(data_type: pa.DataType) -> float:
    """A guess of a value's size in bytes, for estimates."""
    if T.is_string(data_type) or T.is_binary(data_type):
        return 24.0
    if pa.types.is_boolean(data_type):
        return 1.0
    try:
        return max(1.0, data_type.bit_width / 8)
    except ValueError:
        return 8.0


def _schema_bytes(schema: L.Schema) -> float:
    return sum(type_bytes(f.type) for f in schema) or 1.0


# ---------------------------------------------------------------------------------------- planner


@dataclass
class _Fragment:
    op: Op
    schema: L.Schema | None  # None for partial-aggregate states (the native kernels name them)
    dist: str  # any | hash | single
    estimate: Estimate
    keys: tuple[str, ...] = ()
    partitions: int = 0


class _Planner:
    def __init__(self, stats: dict[str, TableStats], agents: int, partitions: int):
        self.stats = stats
        self.agents = agents
        self.partitions = partitions
        self.stages: list[Stage] = []
        self._names = 0

    def fresh(self, prefix: str) -> str:
        self._names += 1
        return f"__{prefix}{self._names}"

    def cut(self, fragment: _Fragment, kind: str, keys: list[str] | None = None, partitions: int = 1) -> ExchangeRead:
        stage_id = len(self.stages)
        exchange = Exchange(kind, list(keys or []), partitions if kind == "hash" else (self.agents if kind == "forward" else 1))
        self.stages.append(Stage(stage_id, fragment.op, exchange, single=fragment.dist == "single", estimated_rows=fragment.estimate.rows))
        return ExchangeRead(stage_id, kind)

    # -- dispatch

    def plan(self, node: L.Node) -> _Fragment:
        handler = getattr(self, f"_{type(node).__name__}")
        return handler(node)

    def _Scan(self, node: L.Scan) -> _Fragment:
        stats = self.stats.get(node.table)
        rows = float(stats.rows) if stats else 1e6
        row_bytes = sum((stats.column_bytes.get(source, 8.0) if stats else 8.0) for _, source in node.columns) or 1.0
        op = ScanOp(node.table, list(node.columns), list(node.source_types), node.predicate)
        return _Fragment(op, node.schema, "any", Estimate(rows, row_bytes))

    def _Values(self, node: L.Values) -> _Fragment:
        return _Fragment(ValuesOp(list(node.fields), list(node.rows)), node.schema, "single", Estimate(len(node.rows), _schema_bytes(node.schema)))

    def _Filter(self, node: L.Filter) -> _Fragment:
        child = self.plan(node.input)
        if isinstance(child.op, ScanOp) and child.op.predicate is None:
            # the scan prunes row groups with the predicate and applies it exactly
            child.op.predicate = node.predicate
            op = child.op
        else:
            op = FilterOp(child.op, node.predicate)
        selectivity = FILTER_SELECTIVITY ** min(2, len(E.conjuncts(node.predicate)))
        return _Fragment(op, child.schema, child.dist, Estimate(child.estimate.rows * selectivity, child.estimate.row_bytes), child.keys,
                         child.partitions)  # fmt: skip

    def _Project(self, node: L.Project) -> _Fragment:
        child = self.plan(node.input)
        keys = child.keys
        if child.dist == "hash":
            # partitioning survives under the names a key column is projected to
            renamed = {expr.name: name for name, expr in node.exprs if isinstance(expr, E.Column)}
            keys = tuple(renamed[key] for key in child.keys) if all(key in renamed for key in child.keys) else ()
        dist = child.dist if child.dist != "hash" or keys else "any"
        return _Fragment(ProjectOp(child.op, list(node.exprs)), node.schema, dist, Estimate(child.estimate.rows, _schema_bytes(node.schema)),
                         keys, child.partitions if keys else 0)  # fmt: skip

    def _Aggregate(self, node: L.Aggregate) -> _Fragment:
        child = self.plan(node.input)
        key_names = [name for name, _ in node.keys]
        rows = child.estimate.rows * AGGREGATE_REDUCTION if node.keys else 1.0
        estimate = Estimate(max(rows, 1.0), _schema_bytes(node.schema))
        distinct = any(call.distinct for _, call in node.aggregates)
        plain_keys = {expr.name for _, expr in node.keys if isinstance(expr, E.Column)}
        if child.dist == "single" or (child.dist == "hash" and child.keys and set(child.keys) <= plain_keys):
            mode = "distinct" if distinct else "complete"
            op = AggregateOp(child.op, mode, list(node.keys), list(node.aggregates))
            keys = tuple(name for name, expr in node.keys if isinstance(expr, E.Column) and expr.name in child.keys)
            if child.dist == "hash":
                keys = tuple(next(name for name, expr in node.keys if isinstance(expr, E.Column) and expr.name == key) for key in child.keys)
            return _Fragment(op, node.schema, child.dist, estimate, keys if child.dist == "hash" else (), child.partitions)
        if distinct:
            # DISTINCT calls have no partial state: ship the rows (keys and arguments) to their group's partition
            columns = [(name, expr) for name, expr in node.keys]
            arguments: list[tuple[str, L.AggregateCall]] = []
            for name, call in node.aggregates:
                if call.argument is None:
                    arguments.append((name, call))
                    continue
                column_name = self.fresh("arg")
                columns.append((column_name, call.argument))
                arguments.append((name, L.AggregateCall(call.function, E.column(column_name, call.argument.type), call.type, call.distinct)))
            projected = ProjectOp(child.op, columns)
            source = _Fragment(projected, None, child.dist, child.estimate)
            read = self.cut(source, "hash", key_names, self.partitions) if node.keys else self.cut(source, "gather")
            keys = [(name, E.column(name, expr.type)) for name, expr in node.keys]
            op = AggregateOp(read, "distinct", keys, arguments)
        else:
            partial = AggregateOp(child.op, "partial", list(node.keys), list(node.aggregates))
            source = _Fragment(partial, None, child.dist, estimate)
            read = self.cut(source, "hash", key_names, self.partitions) if node.keys else self.cut(source, "gather")
            keys = [(name, E.column(name, expr.type)) for name, expr in node.keys]
            op = AggregateOp(read, "final", keys, list(node.aggregates))
        if node.keys:
            return _Fragment(op, node.schema, "hash", estimate, tuple(key_names), self.partitions)
        return _Fragment(op, node.schema, "single", estimate)

    def _Sort(self, node: L.Sort) -> _Fragment:
        child = self.plan(node.input)
        if child.dist == "single":
            return _Fragment(SortOp(child.op, list(node.keys), node.limit, node.offset), child.schema, "single", child.estimate)
        local_limit = None if node.limit is None else node.limit + node.offset
        # each task sorts (and keeps its top rows when there is a limit); agent 0 merges
        local = SortOp(child.op, list(node.keys), local_limit, 0) if local_limit is not None else child.op
        read = self.cut(_Fragment(local, child.schema, child.dist, child.estimate), "gather")
        estimate = Estimate(min(child.estimate.rows, local_limit or math.inf), child.estimate.row_bytes)
        return _Fragment(SortOp(read, list(node.keys), node.limit, node.offset), child.schema, "single", estimate)

    def _Limit(self, node: L.Limit) -> _Fragment:
        child = self.plan(node.input)
        if child.dist == "single":
            return _Fragment(LimitOp(child.op, node.limit, node.offset), child.schema, "single", child.estimate)
        local_limit = None if node.limit is None else node.limit + node.offset
        local = LimitOp(child.op, local_limit, 0) if local_limit is not None else child.op
        read = self.cut(_Fragment(local, child.schema, child.dist, child.estimate), "gather")
        estimate = Estimate(min(child.estimate.rows, local_limit or math.inf), child.estimate.row_bytes)
        return _Fragment(LimitOp(read, node.limit, node.offset), child.schema, "single", estimate)

    def _Union(self, node: L.Union) -> _Fragment:
        parts = [self.plan(part) for part in node.parts]
        reads_ = [self.cut(part, "forward") for part in parts]
        rows = sum(part.estimate.rows for part in parts)
        return _Fragment(UnionOp(list(reads_)), node.schema, "any", Estimate(rows, _schema_bytes(node.schema)))

    def _Join(self, node: L.Join) -> _Fragment:
        if node.kind == "right":
            # a right join is the left join of the swapped sides; the columns are put back in order
            swapped = L.Join(node.right, node.left, "left", node.right_keys, node.left_keys, node.residual)
            fragment = self._Join(swapped)
            exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
            return _Fragment(ProjectOp(fragment.op, exprs), node.schema, fragment.dist, fragment.estimate, fragment.keys, fragment.partitions)
        left, right = self.plan(node.left), self.plan(node.right)
        left, left_keys = self._materialize_keys(left, node.left_keys)
        right, right_keys = self._materialize_keys(right, node.right_keys)
        rows = max(left.estimate.rows, right.estimate.rows) if node.kind not in ("semi", "anti", "anti_null_aware") else left.estimate.rows
        if node.kind == "cross":
            rows = left.estimate.rows * right.estimate.rows
        estimate = Estimate(rows, _schema_bytes(node.schema))
        kind = node.kind

        def finish(op: Op, dist: str, keys=(), partitions=0) -> _Fragment:
            if any(name.startswith("__key") for name in left_keys + right_keys):
                op = ProjectOp(op, [(f.name, E.column(f.name, f.type)) for f in node.schema])
            return _Fragment(op, node.schema, dist, estimate, keys, partitions)

        if kind in ("single", "cross"):
            # one side is a scalar subquery or small: every agent gets all of it
            if kind == "cross" and right.estimate.bytes > left.estimate.bytes and left.dist != "single":
                build = self.cut(left, "broadcast")
                op = JoinOp(right.op, build, "cross", [], [], node.residual)
                exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
                return _Fragment(ProjectOp(op, exprs), node.schema, right.dist, estimate, right.keys, right.partitions)
            build = self.cut(right, "gather" if left.dist == "single" else "broadcast")
            return finish(JoinOp(left.op, build, kind, [], [], node.residual), left.dist, left.keys, left.partitions)
        if left.dist == "single" and kind != "full":
            build = self.cut(right, "gather")
            return finish(JoinOp(left.op, build, kind, left_keys, right_keys, node.residual), "single")
        if kind == "anti_null_aware" or (kind != "full" and self._broadcast(left, right)):
            build = self.cut(right, "broadcast")
            return finish(JoinOp(left.op, build, kind, left_keys, right_keys, node.residual), left.dist, left.keys, left.partitions)
        if kind == "inner" and right.dist != "single" and self._broadcast(right, left):
            # the left side is the small one: build on it, keep the columns in the join's order
            build = self.cut(left, "broadcast")
            op = JoinOp(right.op, build, "inner", right_keys, left_keys, node.residual)
            exprs = [(f.name, E.column(f.name, f.type)) for f in node.schema]
            return _Fragment(ProjectOp(op, exprs), node.schema, right.dist, estimate, right.keys, right.partitions)
        left_read = self._partitioned(left, left_keys)
        right_read = self._partitioned(right, right_keys)
        op = JoinOp(left_read, right_read, kind, left_keys, right_keys, node.residual)
        keys = tuple(left_keys) if not any(k.startswith("__key") for k in left_keys) else ()
        return finish(op, "hash" if keys else "any", keys, self.partitions if keys else 0)

    def _broadcast(self, probe: _Fragment, build: _Fragment) -> bool:
        size = build.estimate.bytes
        if build.dist == "single":
            return True
        return size <= ALWAYS_BROADCAST_BYTES or (size <= BROADCAST_MAX_BYTES and size * self.agents <= probe.estimate.bytes)

    def _partitioned(self, fragment: _Fragment, keys: list[str]) -> Op:
        """The side's rows hash-partitioned on keys: as they are when already so, else through an exchange."""
        if fragment.dist == "hash" and list(fragment.keys) == keys and fragment.partitions == self.partitions:
            return fragment.op
        return self.cut(fragment, "hash", keys, self.partitions)

    def _materialize_keys(self, fragment: _Fragment, keys: tuple[E.Expr, ...]) -> tuple[_Fragment, list[str]]:
        """Join and exchange keys are columns: computed keys get a column of their own first."""
        names, extra = [], []
        for key in keys:
            if isinstance(key, E.Column):
                names.append(key.name)
            else:
                name = self.fresh("key")
                names.append(name)
                extra.append((name, key))
        if not extra:
            return fragment, names
        exprs = [(f.name, E.column(f.name, f.type)) for f in fragment.schema] + extra
        schema = fragment.schema + tuple(L.Field(name, expr.type) for name, expr in extra)
        return _Fragment(ProjectOp(fragment.op, exprs), schema, fragment.dist, fragment.estimate, fragment.keys, fragment.partitions), names


def default_partitions(agents: int, slots: int) -> int:
    """Hash partitions of an exchange: two tasks per task slot of the job, a multiple of the agent
    count so every agent owns the same number."""
    return max(1, 2 * agents * slots)


def plan_stages(query: L.Query, stats: dict[str, TableStats], agents: int, partitions: int) -> DistributedPlan:
    if agents < 1 or partitions < 1:
        raise PlanError("a plan needs at least one agent and one partition")
    planner = _Planner(stats, agents, partitions)
    fragment = planner.plan(query.root)
    root = ProjectOp(fragment.op, [(name, E.column(f.name, f.type)) for name, f in zip(query.output_names, fragment.schema)])
    planner.stages.append(Stage(len(planner.stages), root, None, single=fragment.dist == "single", estimated_rows=fragment.estimate.rows))
    return DistributedPlan(planner.stages, list(query.output_names), query.ordered)


# ---------------------------------------------------------------------------------------- JSON


def _field_json(f: L.Field) -> list:
    return [f.name, T.type_text(f.type)]


def _call_json(call: L.AggregateCall) -> dict:
    return {"fn": call.function, "arg": E.to_json(call.argument) if call.argument is not None else None, "type": T.type_text(call.type),
            "distinct": call.distinct}  # fmt: skip


def _call_from_json(node: dict) -> L.AggregateCall:
    return L.AggregateCall(node["fn"], E.from_json(node["arg"]) if node["arg"] is not None else None, T.parse_type(node["type"]), node["distinct"])


def _op_json(op: Op) -> dict[str, Any]:
    if isinstance(op, ScanOp):
        return {"op": "scan", "input": op.input, "columns": [list(c) for c in op.columns], "types": [T.type_text(t) for t in op.types],
                "predicate": E.to_json(op.predicate) if op.predicate is not None else None}  # fmt: skip
    if isinstance(op, ValuesOp):
        fields = [_field_json(f) for f in op.fields]
        rows = [[E.to_json(E.Literal(f.type, value)) for f, value in zip(op.fields, row)] for row in op.rows]
        return {"op": "values", "fields": fields, "rows": rows}
    if isinstance(op, ExchangeRead):
        return {"op": "exchange", "stage": op.stage, "kind": op.kind}
    if isinstance(op, FilterOp):
        return {"op": "filter", "input": _op_json(op.input), "predicate": E.to_json(op.predicate)}
    if isinstance(op, ProjectOp):
        return {"op": "project", "input": _op_json(op.input), "exprs": [[name, E.to_json(expr)] for name, expr in op.exprs]}
    if isinstance(op, AggregateOp):
        return {"op": "aggregate", "mode": op.mode, "input": _op_json(op.input), "keys": [[name, E.to_json(expr)] for name, expr in op.keys],
                "aggregates": [[name, _call_json(call)] for name, call in op.aggregates]}  # fmt: skip
    if isinstance(op, JoinOp):
        return {"op": "join", "kind": op.kind, "left": _op_json(op.left), "right": _op_json(op.right), "leftKeys": op.left_keys,
                "rightKeys": op.right_keys, "residual": E.to_json(op.residual) if op.residual is not None else None}  # fmt: skip
    if isinstance(op, SortOp):
        keys = [{"expr": E.to_json(key.expr), "ascending": key.ascending, "nullsFirst": key.nulls_first} for key in op.keys]
        return {"op": "sort", "input": _op_json(op.input), "keys": keys, "limit": op.limit, "offset": op.offset}
    if isinstance(op, LimitOp):
        return {"op": "limit", "input": _op_json(op.input), "limit": op.limit, "offset": op.offset}
    if isinstance(op, UnionOp):
        return {"op": "union", "parts": [_op_json(part) for part in op.parts]}
    raise PlanError(f"cannot write operator {type(op).__name__}")


def _op_from_json(node: dict[str, Any]) -> Op:
    kind = node["op"]
    if kind == "scan":
        predicate = E.from_json(node["predicate"]) if node["predicate"] is not None else None
        return ScanOp(node["input"], [tuple(c) for c in node["columns"]], [T.parse_type(t) for t in node["types"]], predicate)
    if kind == "values":
        fields = [L.Field(name, T.parse_type(t)) for name, t in node["fields"]]
        return ValuesOp(fields, [tuple(E.from_json(cell).value for cell in row) for row in node["rows"]])
    if kind == "exchange":
        return ExchangeRead(node["stage"], node["kind"])
    if kind == "filter":
        return FilterOp(_op_from_json(node["input"]), E.from_json(node["predicate"]))
    if kind == "project":
        return ProjectOp(_op_from_json(node["input"]), [(name, E.from_json(expr)) for name, expr in node["exprs"]])
    if kind == "aggregate":
        keys = [(name, E.from_json(expr)) for name, expr in node["keys"]]
        return AggregateOp(_op_from_json(node["input"]), node["mode"], keys, [(name, _call_from_json(call)) for name, call in node["aggregates"]])
    if kind == "join":
        residual = E.from_json(node["residual"]) if node["residual"] is not None else None
        return JoinOp(_op_from_json(node["left"]), _op_from_json(node["right"]), node["kind"], node["leftKeys"], node["rightKeys"], residual)
    if kind == "sort":
        keys = [L.SortKey(E.from_json(key["expr"]), key["ascending"], key["nullsFirst"]) for key in node["keys"]]
        return SortOp(_op_from_json(node["input"]), keys, node["limit"], node["offset"])
    if kind == "limit":
        return LimitOp(_op_from_json(node["input"]), node["limit"], node["offset"])
    if kind == "union":
        return UnionOp([_op_from_json(part) for part in node["parts"]])
    raise PlanError(f"unknown operator {kind!r} in the plan")


def _stage_json(stage: Stage) -> dict:
    output = None if stage.output is None else {"kind": stage.output.kind, "keys": stage.output.keys, "partitions": stage.output.partitions}
    return {"id": stage.id, "single": stage.single, "estimatedRows": round(stage.estimated_rows, 1), "output": output,
            "root": _op_json(stage.root)}  # fmt: skip


def _stage_from_json(node: dict) -> Stage:
    output = node["output"]
    exchange = None if output is None else Exchange(output["kind"], list(output["keys"]), int(output["partitions"]))
    return Stage(int(node["id"]), _op_from_json(node["root"]), exchange, bool(node["single"]), float(node.get("estimatedRows", 0.0)))
