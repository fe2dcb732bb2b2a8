"""The logical plan: a tree of relational operators with typed, uniquely named columns.

Front-ends (SQL, the short aggregate/join forms) produce it; `plan.physical` cuts it into stages.
Every node knows its output `schema`, a tuple of Field(name, type); expressions refer to the columns
of the node's input(s) by name, and names are unique within every schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pyarrow as pa

from sabot_agent.plan.expressions import Expr
from sabot_agent.plan.types import PlanError

JOIN_KINDS = ("inner", "left", "right", "full", "semi", "anti", "anti_null_aware", "single", "cross")
AGGREGATE_FUNCTIONS = ("count", "count_all", "sum", "min", "max", "mean")


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType


Schema = tuple[Field, ...]


def schema_names(schema: Schema) -> list[str]:
    return [f.name for f in schema]


def field_of(schema: Schema, name: str) -> Field:
    for f in schema:
        if f.name == name:
            return f
    raise PlanError(f"unknown column {name!r} (columns: {', '.join(schema_names(schema))})")


def check_unique(schema: Schema, what: str) -> Schema:
    seen: set[str] = set()
    for f in schema:
        if f.name in seen:
            raise PlanError(f"{what}: column name {f.name!r} appears twice")
        seen.add(f.name)
    return schema


class Node:
    schema: Schema

    @property
    def inputs(self) -> tuple["Node", ...]:
        return ()


@dataclass(frozen=True)
class Scan(Node):
    """Columns of one input (a table of the job). `columns` maps output names to the input's column
    names; `predicate` (over output names) may prune Parquet row groups and is applied exactly."""

    table: str
    columns: tuple[tuple[str, str], ...]
    source_types: tuple[pa.DataType, ...]
    predicate: Expr | None = None

    @property
    def schema(self) -> Schema:
        return tuple(Field(name, data_type) for (name, _), data_type in zip(self.columns, self.source_types))


@dataclass(frozen=True)
class Values(Node):
    """A constant relation (SELECT without FROM): rows of literal values."""

    fields: Schema
    rows: tuple[tuple, ...]

    @property
    def schema(self) -> Schema:
        return self.fields


@dataclass(frozen=True)
class _Unary(Node):
    """A node of one input; unless it says otherwise, its rows have the input's columns."""

    input: Node

    @property
    def inputs(self):
        return (self.input,)

    @property
    def schema(self) -> Schema:
        return self.input.schema


@dataclass(frozen=True)
class Filter(_Unary):
    predicate: Expr


@dataclass(frozen=True)
class Project(_Unary):
    exprs: tuple[tuple[str, Expr], ...]

    @property
    def schema(self) -> Schema:
        return tuple(Field(name, expr.type) for name, expr in self.exprs)


@dataclass(frozen=True)
class AggregateCall:
    function: str  # one of AGGREGATE_FUNCTIONS
    argument: Expr | None
    type: pa.DataType
    distinct: bool = False


@dataclass(frozen=True)
class Aggregate(_Unary):
    keys: tuple[tuple[str, Expr], ...]
    aggregates: tuple[tuple[str, AggregateCall], ...]

    @property
    def schema(self) -> Schema:
        return tuple(Field(name, expr.type) for name, expr in self.keys) + tuple(Field(name, call.type) for name, call in self.aggregates)


@dataclass(frozen=True)
class Join(Node):
    """left JOIN right ON left_keys[i] = right_keys[i] (AND residual).

    kinds: inner, left, right, full (outer joins pad with nulls), semi / anti (left rows with / without
    a match; output = left columns), anti_null_aware (NOT IN: additionally no row survives when the
    right side holds a null key, and a left row with a null key survives only when the right side is
    empty), single (the right side is a scalar subquery: at most one row, appended to every left row),
    cross (no keys). Null keys never match."""

    left: Node
    right: Node
    kind: str
    left_keys: tuple[Expr, ...] = ()
    right_keys: tuple[Expr, ...] = ()
    residual: Expr | None = None

    @property
    def inputs(self):
        return (self.left, self.right)

    @property
    def schema(self) -> Schema:
        if self.kind in ("semi", "anti", "anti_null_aware"):
            return self.left.schema
        return self.left.schema + self.right.schema


@dataclass(frozen=True)
class SortKey:
    expr: Expr
    ascending: bool = True
    nulls_first: bool = False


@dataclass(frozen=True)
class Sort(_Unary):
    keys: tuple[SortKey, ...]
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Limit(_Unary):
    limit: int | None
    offset: int = 0


@dataclass(frozen=True)
class Union(Node):
    """UNION ALL of inputs with the same column types; columns are named after the first input."""

    parts: tuple[Node, ...]

    @property
    def inputs(self):
        return self.parts

    @property
    def schema(self) -> Schema:
        return self.parts[0].schema


def with_inputs(node: Node, inputs: list[Node]) -> Node:
    """The node over other inputs (the same node when they are its own)."""
    if all(new is old for new, old in zip(inputs, node.inputs)):
        return node
    if isinstance(node, Join):
        return replace(node, left=inputs[0], right=inputs[1])
    if isinstance(node, Union):
        return replace(node, parts=tuple(inputs))
    return replace(node, input=inputs[0])


@dataclass(frozen=True)
class Query:
    """A planned query: the root node and the result's column names as the user sees them."""

    root: Node
    output_names: tuple[str, ...]
    ordered: bool = False  # the result order is part of the answer (ORDER BY at the top)
    notes: tuple[str, ...] = field(default=())
