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

`plan.distribute.plan_stages` makes it; `DistributedPlan.to_json()`/`from_json()` are the plan format.
A `replicated` subtree (a small broadcast side that only reads inputs) is evaluated by every agent
over all of its inputs, once for all the stage's tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan import types as T
from sabot_agent.plan.types import PlanError

PLAN_VERSION = 1
EXCHANGE_KINDS = ("hash", "broadcast", "gather", "forward")


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
class ReplicatedOp(Op):
    """A subtree every agent evaluates over all of its inputs (not its share), once per stage, for all
    of the stage's tasks: a small broadcast side without an exchange."""

    input: Op

    @property
    def children(self):
        return (self.input,)


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


def scans(op: Op, into_replicated: bool = False) -> list[ScanOp]:
    """The scans of an operator tree whose units a stage's tasks divide (those under a ReplicatedOp
    are read whole by every agent: included only when asked)."""
    if isinstance(op, ReplicatedOp) and not into_replicated:
        return []
    found = [op] if isinstance(op, ScanOp) else []
    for child in op.children:
        found += scans(child, into_replicated)
    return found


def op_key(op: Op) -> str:
    """Equal for two operator trees that compute the same rows (the same serialized tree)."""
    return json.dumps(_op_json(op), sort_keys=True)


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
    if isinstance(op, ReplicatedOp):
        return {"op": "replicated", "input": _op_json(op.input)}
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
    if kind == "replicated":
        return ReplicatedOp(_op_from_json(node["input"]))
    raise PlanError(f"unknown operator {kind!r} in the plan")


def _stage_json(stage: Stage) -> dict:
    output = None if stage.output is None else {"kind": stage.output.kind, "keys": stage.output.keys, "partitions": stage.output.partitions}
    return {"id": stage.id, "single": stage.single, "estimatedRows": round(float(stage.estimated_rows), 1), "output": output,
            "root": _op_json(stage.root)}  # fmt: skip


def _stage_from_json(node: dict) -> Stage:
    output = node["output"]
    exchange = None if output is None else Exchange(output["kind"], list(output["keys"]), int(output["partitions"]))
    return Stage(int(node["id"]), _op_from_json(node["root"]), exchange, bool(node["single"]), float(node.get("estimatedRows", 0.0)))
