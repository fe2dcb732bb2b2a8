"""What the planner guesses before anything runs: rows, distinct values and value ranges of every
logical node's columns, from the inputs' metadata (Parquet row-group statistics, generated columns'
declared distinct counts).

The guesses decide the join order (`plan.joins`), which join side is broadcast and which side an
operator builds on (`plan.physical`); they never change a result. The rules are the textbook ones:
- a column's distinct count is known for generated columns and bounded by the value range of integer
  and date columns (max - min + 1) and always by the rows;
- a predicate's selectivity: `col = c` 1/distinct, range comparisons the covered fraction of the
  column's range (several on one column intersect), IN lists k/distinct, OR and NOT by inclusion and
  exclusion, everything else DEFAULT_SELECTIVITY;
- a column whose distinct count is its table's rows is taken as that table's key (TPC-H's
  o_orderkey; also l_orderkey, whose sparse values fill its range), and so is an aggregation's only
  key. A join on a key keeps the other side's rows times the fraction of the key's table that
  survived its filters (a foreign-key join); with keys on both sides the smaller table's is taken.
  Other equi-joins keep |L|·|R| / max(distinct(L.key), distinct(R.key)) rows (containment of key
  values), the distinct count of several keys of one side capped by its rows;
- an aggregation keeps the product of its keys' distinct counts, capped by its input.
"""

from __future__ import annotations

import datetime
import decimal
import math
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan import types as T

DEFAULT_SELECTIVITY = 0.3
# an aggregation over keys of unknown distinct counts keeps this fraction of its input
DEFAULT_AGGREGATE_REDUCTION = 0.1
# LIKE and string predicates (contains, starts_with, ...)
PATTERN_SELECTIVITY = 0.1
NULL_FRACTION = 0.05
UNKNOWN_TABLE_ROWS = 1e6


@dataclass(frozen=True)
class TableStats:
    """What the planner knows of an input before reading it: rows, average bytes per row per column,
    and where known each column's value range (min, max) and distinct count."""

    rows: int
    column_bytes: dict[str, float]
    column_ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    column_distinct: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    """A physical fragment's size: rows and bytes per row in memory."""

    rows: float
    row_bytes: float

    @property
    def bytes(self) -> float:
        return self.rows * self.row_bytes


# a column with at least this fraction of its table's rows as distinct values is taken as its key
KEY_DISTINCT_FRACTION = 0.99


@dataclass(frozen=True)
class ColumnEstimate:
    distinct: float | None = None  # None: unknown
    low: float | None = None  # the value range as numbers (dates as day ordinals), when known
    high: float | None = None
    # the column is a key of a relation of this many rows (before the filters since applied)
    key_of: float | None = None

    def capped(self, rows: float) -> "ColumnEstimate":
        return replace(self, distinct=None if self.distinct is None else min(self.distinct, rows))


@dataclass(frozen=True)
class Cardinality:
    """A logical node's estimated rows and what is known of each output column."""

    rows: float
    columns: dict[str, ColumnEstimate] = field(default_factory=dict)

    def distinct(self, expr: E.Expr) -> float | None:
        column = self.column(expr)
        return None if column is None or column.distinct is None else min(column.distinct, max(self.rows, 1.0))

    def column(self, expr: E.Expr) -> ColumnEstimate | None:
        expr = _uncast(expr)
        return self.columns.get(expr.name) if isinstance(expr, E.Column) else None


# ---------------------------------------------------------------------------------------- sizes


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


def schema_bytes(schema: L.Schema) -> float:
    return sum(type_bytes(f.type) for f in schema) or 1.0


def scan_row_bytes(stats: TableStats | None, sources: list[str], types: list[pa.DataType]) -> float:
    """A scan's bytes per row in memory. A fixed-width type's width is exact; the file's (uncompressed)
    bytes only inform variable widths: Parquet's dictionary, RLE and delta encodings store a column in
    a fraction of what it takes as Arrow arrays (5x less for TPC-H's l_orderkey), and broadcasting a
    side estimated from them would copy far more than planned."""
    total = 0.0
    for source, data_type in zip(sources, types):
        if T.is_string(data_type) or T.is_binary(data_type):
            in_file = stats.column_bytes.get(source) if stats else None
            total += max(in_file or type_bytes(data_type), 8.0)
        else:
            total += type_bytes(data_type)
    return total or 1.0


# ---------------------------------------------------------------------------------------- nodes


class Estimator:
    """Cardinalities of logical nodes, computed once per node object."""

    def __init__(self, stats: dict[str, TableStats]):
        self.stats = stats
        self._known: dict[int, tuple[L.Node, Cardinality]] = {}

    def of(self, node: L.Node) -> Cardinality:
        known = self._known.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        result = getattr(self, f"_{type(node).__name__}")(node)
        self._known[id(node)] = (node, result)  # the node is kept so its id is not reused
        return result

    def _Scan(self, node: L.Scan) -> Cardinality:
        stats = self.stats.get(node.table)
        rows = float(stats.rows) if stats else UNKNOWN_TABLE_ROWS
        columns = {}
        for (name, source), data_type in zip(node.columns, node.source_types):
            columns[name] = _column_from_stats(stats, source, data_type, rows)
        scanned = Cardinality(rows, columns)
        return filtered(scanned, node.predicate) if node.predicate is not None else scanned

    def _Values(self, node: L.Values) -> Cardinality:
        return Cardinality(float(len(node.rows)))

    def _Filter(self, node: L.Filter) -> Cardinality:
        return filtered(self.of(node.input), node.predicate)

    def _Project(self, node: L.Project) -> Cardinality:
        child = self.of(node.input)
        columns = {}
        for name, expr in node.exprs:
            known = child.column(expr)
            if known is not None:
                columns[name] = known
        return Cardinality(child.rows, columns)

    def _Aggregate(self, node: L.Aggregate) -> Cardinality:
        child = self.of(node.input)
        if not node.keys:
            return Cardinality(1.0)
        distinct = [child.distinct(expr) for _, expr in node.keys]
        if any(count is None for count in distinct):
            rows = child.rows * DEFAULT_AGGREGATE_REDUCTION
        else:
            rows = math.prod(distinct)
        rows = max(1.0, min(rows, child.rows))
        columns = {name: child.column(expr).capped(rows) for name, expr in node.keys if child.column(expr) is not None}
        if len(node.keys) == 1:
            name = node.keys[0][0]
            columns[name] = replace(columns.get(name, ColumnEstimate()), distinct=rows, key_of=rows)
        return Cardinality(rows, columns)

    def _Join(self, node: L.Join) -> Cardinality:
        left, right = self.of(node.left), self.of(node.right)
        return join_cardinality(left, right, node.kind, list(zip(node.left_keys, node.right_keys)), node.residual)

    def _Sort(self, node: L.Sort) -> Cardinality:
        child = self.of(node.input)
        return _limited(child, node.limit)

    def _Limit(self, node: L.Limit) -> Cardinality:
        return _limited(self.of(node.input), node.limit)

    def _Union(self, node: L.Union) -> Cardinality:
        return Cardinality(sum(self.of(part).rows for part in node.parts))


def _limited(child: Cardinality, limit: int | None) -> Cardinality:
    return child if limit is None else Cardinality(min(child.rows, float(limit)), child.columns)


def _column_from_stats(stats: TableStats | None, source: str, data_type: pa.DataType, rows: float) -> ColumnEstimate:
    if stats is None:
        return ColumnEstimate()
    distinct = stats.column_distinct.get(source)
    low = high = None
    value_range = stats.column_ranges.get(source)
    if value_range is not None:
        low, high = as_number(value_range[0]), as_number(value_range[1])
        if low is not None and high is not None and (T.is_integer(data_type) or pa.types.is_date(data_type)):
            span = high - low + 1
            distinct = span if distinct is None else min(distinct, span)
    if distinct is None:
        return ColumnEstimate(None, low, high)
    distinct = min(distinct, rows)
    return ColumnEstimate(distinct, low, high, rows if distinct >= KEY_DISTINCT_FRACTION * rows else None)


def as_number(value: Any) -> float | None:
    """A statistics or literal value on the number line of its column (dates as day ordinals)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, decimal.Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime.datetime):
        return value.timestamp() / 86400.0
    if isinstance(value, datetime.date):
        return float(value.toordinal() - datetime.date(1970, 1, 1).toordinal())
    return None


# ---------------------------------------------------------------------------------------- predicates


def filtered(child: Cardinality, predicate: E.Expr) -> Cardinality:
    """The child after a filter: rows scaled by the predicate's selectivity, ranges narrowed by its
    range conjuncts, distinct counts capped by the rows."""
    parts = E.conjuncts(predicate)
    selectivity = 1.0
    narrowed: dict[str, tuple[float | None, float | None]] = {}
    for part in parts:
        bound = _range_bound(part)
        if bound is not None and child.column(bound[0]) is not None:
            name = _uncast(bound[0]).name
            low, high = narrowed.get(name, (None, None))
            kind, value = bound[1], bound[2]
            if kind == "low":
                low = value if low is None else max(low, value)
            else:
                high = value if high is None else min(high, value)
            narrowed[name] = (low, high)
            continue
        selectivity *= predicate_selectivity(child, part)
    columns = dict(child.columns)
    for name, (low, high) in narrowed.items():
        known = columns[name]
        fraction = _range_fraction(known, low, high)
        selectivity *= fraction
        new_low = known.low if low is None else (low if known.low is None else max(known.low, low))
        new_high = known.high if high is None else (high if known.high is None else min(known.high, high))
        distinct = None if known.distinct is None else max(1.0, known.distinct * fraction)
        columns[name] = ColumnEstimate(distinct, new_low, new_high, known.key_of)
    rows = max(child.rows * selectivity, 1.0 if child.rows >= 1 else child.rows)
    for part in parts:
        equal = _equality_column(part)
        if equal is not None and equal in columns:
            columns[equal] = replace(columns[equal], distinct=1.0)
    return Cardinality(rows, {name: column.capped(rows) for name, column in columns.items()})


def predicate_selectivity(child: Cardinality, expr: E.Expr) -> float:
    """The fraction of the child's rows for which the predicate holds."""
    if isinstance(expr, E.Literal):
        return 1.0 if expr.value is True else 0.0
    if not isinstance(expr, E.Call):
        return DEFAULT_SELECTIVITY
    fn, args = expr.fn, expr.args
    if fn == "and":
        return math.prod(predicate_selectivity(child, arg) for arg in args)
    if fn == "or":
        return 1.0 - math.prod(1.0 - predicate_selectivity(child, arg) for arg in args)
    if fn == "not":
        return 1.0 - predicate_selectivity(child, args[0])
    if fn in ("eq", "ne") and _is_column_constant(args):
        column = args[0] if not isinstance(args[0], E.Literal) else args[1]
        distinct = child.distinct(column)
        equal = 1.0 / distinct if distinct else DEFAULT_SELECTIVITY / 3
        return equal if fn == "eq" else 1.0 - equal
    if fn == "in_list":
        distinct = child.distinct(args[0])
        count = len(expr.option("values", ()))
        inside = min(1.0, count / distinct) if distinct else min(1.0, count * DEFAULT_SELECTIVITY / 3)
        return 1.0 - inside if expr.option("negated") else inside
    if fn in ("lt", "le", "gt", "ge"):
        bound = _range_bound(expr)
        known = child.column(bound[0]) if bound is not None else None
        if known is not None:
            return _range_fraction(known, *((bound[2], None) if bound[1] == "low" else (None, bound[2])))
        return DEFAULT_SELECTIVITY
    if fn == "like":
        return 1.0 - PATTERN_SELECTIVITY if expr.option("negated") else PATTERN_SELECTIVITY
    if fn in ("starts_with", "ends_with", "contains"):
        return PATTERN_SELECTIVITY
    if fn == "is_null":
        return NULL_FRACTION
    if fn == "is_not_null":
        return 1.0 - NULL_FRACTION
    return DEFAULT_SELECTIVITY


def _uncast(expr: E.Expr) -> E.Expr:
    while isinstance(expr, E.Call) and expr.fn == "cast":
        expr = expr.args[0]
    return expr


def _is_column_constant(args: tuple[E.Expr, ...]) -> bool:
    kinds = {type(_uncast(arg)) for arg in args}
    return len(args) == 2 and kinds == {E.Column, E.Literal}


def _equality_column(expr: E.Expr) -> str | None:
    if isinstance(expr, E.Call) and expr.fn == "eq" and _is_column_constant(expr.args):
        column = next(_uncast(arg) for arg in expr.args if isinstance(_uncast(arg), E.Column))
        return column.name
    return None


_FLIPPED = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def _range_bound(expr: E.Expr) -> tuple[E.Expr, str, float] | None:
    """(column, "low" | "high", value) for `column <op> constant` (either operand order)."""
    if not (isinstance(expr, E.Call) and expr.fn in _FLIPPED and _is_column_constant(expr.args)):
        return None
    fn = expr.fn
    column, constant = expr.args
    if isinstance(_uncast(column), E.Literal):
        column, constant, fn = constant, column, _FLIPPED[fn]
    value = as_number(_uncast(constant).value)
    if value is None:
        return None
    return column, ("low" if fn in ("gt", "ge") else "high"), value


def _range_fraction(column: ColumnEstimate, low: float | None, high: float | None) -> float:
    if column.low is None or column.high is None:
        return DEFAULT_SELECTIVITY if (low is None) != (high is None) else DEFAULT_SELECTIVITY**2
    width = column.high - column.low
    start = column.low if low is None else max(low, column.low)
    stop = column.high if high is None else min(high, column.high)
    if stop < start:
        return 1.0 / max(column.distinct or 1.0, 1.0)
    if width <= 0:
        return 1.0
    unit = 1.0 / column.distinct if column.distinct else 0.0
    return min(1.0, max((stop - start) / width, unit))


# ---------------------------------------------------------------------------------------- joins


def join_cardinality(left: Cardinality, right: Cardinality, kind: str, key_pairs: list[tuple[E.Expr, E.Expr]],
                     residual: E.Expr | None = None) -> Cardinality:  # fmt: skip
    if kind == "single":
        return Cardinality(left.rows, {**left.columns, **right.columns})
    left_key, right_key = _key_of(left, [a for a, _ in key_pairs]), _key_of(right, [b for _, b in key_pairs])
    if kind in ("semi", "anti", "anti_null_aware"):
        matched = min(1.0, right.rows / right_key if right_key else _key_coverage(left, right, key_pairs))
        if residual is not None:
            matched *= DEFAULT_SELECTIVITY
        fraction = matched if kind == "semi" else max(1.0 - matched, DEFAULT_SELECTIVITY / 3)
        return Cardinality(max(left.rows * fraction, 1.0), left.columns)
    if kind == "cross" or not key_pairs:
        inner_rows = left.rows * right.rows
        columns = {**_unkeyed(left.columns), **_unkeyed(right.columns)}
    elif right_key and (not left_key or right_key <= left_key):
        # each left row meets at most one right row: a foreign key into the right side's table
        inner_rows = left.rows * min(1.0, right.rows / right_key)
        columns = {**left.columns, **_unkeyed(right.columns)}
    elif left_key:
        inner_rows = right.rows * min(1.0, left.rows / left_key)
        columns = {**_unkeyed(left.columns), **right.columns}
    else:
        inner_rows = left.rows * right.rows / _key_divisor(left, right, key_pairs)
        columns = {**_unkeyed(left.columns), **_unkeyed(right.columns)}
    if residual is not None:
        inner_rows *= predicate_selectivity(Cardinality(inner_rows, columns), residual)
    rows = inner_rows
    if kind in ("left", "full"):
        rows = max(rows, left.rows)
    if kind in ("right", "full"):
        rows = max(rows, right.rows)
    rows = max(rows, 1.0)
    return Cardinality(rows, {name: column.capped(rows) for name, column in columns.items()})


def _key_of(side: Cardinality, keys: list[E.Expr]) -> float | None:
    """The rows of the table one of the join keys is a key of (the smallest such), if any."""
    found = [column.key_of for column in (side.column(key) for key in keys) if column is not None and column.key_of]
    return min(found) if found else None


def _unkeyed(columns: dict[str, ColumnEstimate]) -> dict[str, ColumnEstimate]:
    """Columns of a side whose rows a join may repeat: no longer keys."""
    return {name: replace(column, key_of=None) if column.key_of else column for name, column in columns.items()}


def _key_divisor(left: Cardinality, right: Cardinality, key_pairs: list[tuple[E.Expr, E.Expr]]) -> float:
    if not key_pairs:
        return 1.0
    return max(_keys_distinct(left, [a for a, _ in key_pairs]), _keys_distinct(right, [b for _, b in key_pairs]))


def _keys_distinct(side: Cardinality, keys: list[E.Expr]) -> float:
    """Distinct combinations of the keys on one side, at most its rows; an unknown count is taken as
    the side's rows (keys of unknown distinct counts are assumed unique)."""
    product = math.prod(count if count is not None else side.rows for count in (side.distinct(key) for key in keys))
    return max(1.0, min(product, side.rows))


def _key_coverage(left: Cardinality, right: Cardinality, key_pairs: list[tuple[E.Expr, E.Expr]]) -> float:
    """The fraction of left key values the right side holds (a semi join's survivors)."""
    if not key_pairs:
        return 1.0 if right.rows >= 1 else 0.0
    return _keys_distinct(right, [b for _, b in key_pairs]) / _keys_distinct(left, [a for a, _ in key_pairs])
