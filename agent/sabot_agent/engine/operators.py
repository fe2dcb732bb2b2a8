"""Physical operators over Arrow tables: one task of a stage evaluates its operator tree bottom-up.

Filters and projections use the expression evaluator; hash aggregation uses the native kernels
(partial before an exchange, final after it); hash joins use the native hash join (which replaced
Acero's: one thread of it is faster than Acero on two, and it never starts threads of its own), with
the engine's own handling of residual conditions, NOT IN and scalar subqueries; sorts use Arrow's stable sort with
per-key null placement. Every operator's output is brought to the exact schema the plan declares,
so all tasks and agents produce identical schemas for an exchange.

SQL semantics shared with the group-by kernels: NULL keys never match in a join; join keys compare
floats with -0.0 = 0.0 and NaN = NaN, as grouping does; in ORDER BY, NaN sorts above every number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sabot_native

from sabot_agent.engine.evaluate import EvaluationError, evaluate, evaluate_predicate
from sabot_agent.plan import expressions as E
from sabot_agent.plan import logical as L
from sabot_agent.plan import physical as P
from sabot_agent.plan import types as T
from sabot_agent.tables import cast_table, concat_tables, decode_dictionaries, rows_only, slice_rows, take

ROW_ID = "__row_id"
CROSS_CHUNK_ROWS = 1 << 20


class OperatorError(RuntimeError):
    """A task failed on its data (a scalar subquery with two rows, an overflow, ...)."""


@dataclass
class TaskInputs:
    """Where a task's leaves get their rows: the scan's units and the exchange partitions of this task."""

    scan: Callable[[P.ScanOp], pa.Table]
    exchange: Callable[[P.ExchangeRead], pa.Table]
    aggregate: Callable[..., pa.Table]  # the native kernels: aggregate(table, keys, specs, mode)
    replicated: Callable[[P.ReplicatedOp], pa.Table] | None = None  # a subtree's rows shared by the stage's tasks


def execute(op: P.Op, inputs: TaskInputs) -> pa.Table:
    try:
        return _execute(op, inputs)
    except EvaluationError as exc:
        raise OperatorError(str(exc)) from None


def _execute(op: P.Op, inputs: TaskInputs) -> pa.Table:
    if isinstance(op, P.ScanOp):
        return _scan(op, inputs)
    if isinstance(op, P.ValuesOp):
        schema = pa.schema([pa.field(f.name, f.type if not T.is_null(f.type) else pa.null()) for f in op.fields])
        return pa.Table.from_pylist([dict(zip(schema.names, row)) for row in op.rows], schema=schema) if op.fields else rows_only(len(op.rows))
    if isinstance(op, P.ExchangeRead):
        return inputs.exchange(op)
    if isinstance(op, P.ReplicatedOp):
        return inputs.replicated(op)
    if isinstance(op, P.FilterOp):
        return evaluate_predicate(op.predicate, _execute(op.input, inputs))
    if isinstance(op, P.ProjectOp):
        return project(_projected_input(op, inputs), op.exprs)
    if isinstance(op, P.AggregateOp):
        return aggregate(op, _execute(op.input, inputs), inputs)
    if isinstance(op, P.JoinOp):
        return join(op, _execute(op.left, inputs), _execute(op.right, inputs))
    if isinstance(op, P.SortOp):
        return sort(_execute(op.input, inputs), op.keys, op.limit, op.offset)
    if isinstance(op, P.LimitOp):
        table = _execute(op.input, inputs)
        return slice_rows(table, op.offset, op.limit)
    if isinstance(op, P.UnionOp):
        parts = [_execute(part, inputs) for part in op.parts]
        return concat_tables([cast_table(part, parts[0].schema) for part in parts])
    raise OperatorError(f"operator {type(op).__name__} cannot run")


# ---------------------------------------------------------------------------------------- project


def _scan(op: P.ScanOp, inputs: TaskInputs, keep: list[str] | None = None) -> pa.Table:
    """A scan's rows that pass its predicate, of the columns `keep` names (all when None). String
    columns of small Parquet dictionaries arrive dictionary-encoded: the predicate compares their
    dictionaries, and only the rows and columns kept are decoded (q19 compares ship modes of 7 values
    instead of 6 M strings)."""
    table = inputs.scan(op)
    if op.predicate is not None:
        table = evaluate_predicate(op.predicate, table, keep)
    elif keep is not None:
        table = table.select(keep)
    return decode_dictionaries(table)


def _projected_input(op: P.ProjectOp, inputs: TaskInputs) -> pa.Table:
    """The input of a projection; a scan right below it keeps only the columns the projection reads
    (TPC-H q19's ship modes and q13's comments are read only by the predicate: filtering them cost
    more than reading them)."""
    scan = op.input
    if not isinstance(scan, P.ScanOp):
        return _execute(scan, inputs)
    read = {name for _, expr in op.exprs for name in expr.columns()}
    return _scan(scan, inputs, keep=[name for name, _ in scan.columns if name in read])


def conform(array, data_type: pa.DataType):
    return array if array.type.equals(data_type) else pc.cast(array, data_type)


def project(table: pa.Table, exprs: list[tuple[str, E.Expr]]) -> pa.Table:
    columns = [conform(evaluate(expr, table), expr.type if not T.is_null(expr.type) else pa.null()) for _, expr in exprs]
    if not exprs:
        return rows_only(table.num_rows)
    return pa.Table.from_arrays(columns, names=[name for name, _ in exprs])


# ---------------------------------------------------------------------------------------- aggregate

# a constant key gives aggregates without GROUP BY the kernels' grouped form
GLOBAL_KEY = "__global"


def _specs(aggregates: list[tuple[str, L.AggregateCall]]) -> tuple[list[tuple[str, str, str]], dict[E.Expr, str]]:
    """The kernels' (column, function, output) specs, and the column each distinct argument gets.
    Partial and final stages derive them alike, so the final stage names the partial's states."""
    arguments: dict[E.Expr, str] = {}
    specs = []
    for name, call in aggregates:
        if call.argument is None:
            specs.append(("", "count_all", name))
            continue
        column = arguments.setdefault(call.argument, f"__arg{len(arguments)}")
        specs.append((column, call.function, name))
    return specs, arguments


def _aggregate_inputs(table: pa.Table, keys: list[tuple[str, E.Expr]], aggregates: list[tuple[str, L.AggregateCall]]):
    """The table the kernels read (key columns, one column per argument), its key names and the specs."""
    specs, arguments = _specs(aggregates)
    columns = [conform(evaluate(expr, table), expr.type) for _, expr in keys]
    names = [name for name, _ in keys]
    if not keys:
        columns.append(pa.repeat(pa.scalar(0, pa.int8()), table.num_rows))
        names.append(GLOBAL_KEY)
    for argument, column in arguments.items():
        columns.append(conform(evaluate(argument, table), argument.type))
        names.append(column)
    return pa.Table.from_arrays(columns, names=names), names[: max(1, len(keys))], specs


def aggregate(op: P.AggregateOp, table: pa.Table, inputs: TaskInputs) -> pa.Table:
    if op.mode == "distinct":
        return _aggregate_distinct(op, table, inputs)
    if op.mode == "final":
        specs, _ = _specs(op.aggregates)
        result = inputs.aggregate(table, [name for name, _ in op.keys] or [GLOBAL_KEY], specs, "final")
        return _finish_aggregate(op, result)
    kernel_input, keys, specs = _aggregate_inputs(table, op.keys, op.aggregates)
    result = inputs.aggregate(kernel_input, keys, specs, op.mode)
    return result if op.mode == "partial" else _finish_aggregate(op, result)


def _finish_aggregate(op: P.AggregateOp, result: pa.Table) -> pa.Table:
    """Declared names and types; an aggregate without GROUP BY has exactly one row, also for no input."""
    if not op.keys:
        result = result.drop_columns([GLOBAL_KEY])
        if result.num_rows == 0:
            values = {name: pa.array([0 if call.function in ("count", "count_all") else None], type=call.type) for name, call in op.aggregates}
            return pa.table(values) if values else rows_only(1)
    columns = [conform(result.column(name), expr.type) for name, expr in op.keys]
    columns += [conform(result.column(name), call.type) for name, call in op.aggregates]
    names = [name for name, _ in op.keys] + [name for name, _ in op.aggregates]
    if not names:
        return rows_only(result.num_rows)
    return pa.Table.from_arrays(columns, names=names)


def _aggregate_distinct(op: P.AggregateOp, table: pa.Table, inputs: TaskInputs) -> pa.Table:
    """Aggregates with DISTINCT calls over all rows of their groups (they arrive in one partition).

    Each DISTINCT call is computed over the distinct (keys, argument) rows, the other calls over all
    rows. Every result has one row per group, so once each is sorted by the keys the rows line up."""
    kernel_input, keys, specs = _aggregate_inputs(table, op.keys, op.aggregates)
    plain = [spec for spec, (_, call) in zip(specs, op.aggregates) if not call.distinct]
    parts = [inputs.aggregate(kernel_input, keys, plain, "complete")] if plain or not op.aggregates else []
    for spec, (_, call) in zip(specs, op.aggregates):
        if call.distinct:
            column = spec[0]
            pairs = inputs.aggregate(kernel_input.select(keys + [column]), keys + [column], [], "complete")
            parts.append(inputs.aggregate(pairs, keys, [spec], "complete"))
    parts = [_sorted_by(part, keys) for part in parts]
    combined = parts[0]
    for part in parts[1:]:
        for name in part.column_names:
            if name not in keys:
                combined = combined.append_column(name, part.column(name))
    return _finish_aggregate(op, combined)


def _sorted_by(table: pa.Table, keys: list[str]) -> pa.Table:
    return take(table, pc.sort_indices(table, sort_keys=[(key, "ascending", "at_end") for key in keys]))


# ---------------------------------------------------------------------------------------- join


def _hash_join(left: pa.Table, right: pa.Table, kind: str, left_keys: list[str], right_keys: list[str]) -> pa.Table:
    """The native hash join (sabot_native.hash_join: NULL keys never match, float keys compare as
    grouping does). Its hash table goes on the smaller side; a broadcast build side would be rebuilt
    by every task anyway, so a task's small probe side is the better build."""
    return sabot_native.hash_join(left, right, left_keys, right_keys, kind, build_right=right.num_rows <= left.num_rows)


def join(op: P.JoinOp, left: pa.Table, right: pa.Table) -> pa.Table:
    if op.kind == "single":
        return _join_single(left, right)
    if op.kind == "cross":
        return _join_cross(left, right, op.residual)
    if op.kind == "anti_null_aware":
        if op.residual is not None:
            raise OperatorError("NOT IN with a correlated condition is not supported yet")
        return _anti_null_aware(left, right, op.left_keys, op.right_keys)
    if op.residual is None:
        return _hash_join(left, right, op.kind, op.left_keys, op.right_keys)
    return _join_with_residual(op, left, right, op.left_keys, op.right_keys)


def _join_with_residual(op: P.JoinOp, left: pa.Table, right: pa.Table, left_keys: list[str], right_keys: list[str]) -> pa.Table:
    """Equi-join candidates first, then the residual condition decides which pairs match; left rows
    (and right rows, for full joins) without a surviving match are added as the kind requires."""
    left_ids = left.append_column(ROW_ID, pa.array(np.arange(left.num_rows, dtype=np.int64)))
    right_ids = right.append_column(ROW_ID + "_r", pa.array(np.arange(right.num_rows, dtype=np.int64)))
    pairs = _hash_join(left_ids, right_ids, "inner", left_keys, right_keys)
    pairs = evaluate_predicate(op.residual, pairs)
    if op.kind == "inner":
        return pairs
    matched_left = pc.unique(pairs.column(ROW_ID))
    if op.kind == "semi":
        return take(left, matched_left.take(pc.sort_indices(matched_left)))
    left_unmatched = left.filter(pc.invert(pc.is_in(left_ids.column(ROW_ID), value_set=matched_left)))
    if op.kind == "anti":
        return left_unmatched
    padded = _pad_right(left_unmatched, right.schema)
    parts = [pairs.select(left.column_names + right.column_names), padded]
    if op.kind == "full":
        matched_right = pc.unique(pairs.column(ROW_ID + "_r"))
        right_unmatched = right.filter(pc.invert(pc.is_in(right_ids.column(ROW_ID + "_r"), value_set=matched_right)))
        parts.append(_pad_left(right_unmatched, left.schema).select(left.column_names + right.column_names))
    return concat_tables(parts)


def _pad_right(left: pa.Table, right_schema: pa.Schema) -> pa.Table:
    for f in right_schema:
        left = left.append_column(f, pa.nulls(left.num_rows, type=f.type))
    return left


def _pad_left(right: pa.Table, left_schema: pa.Schema) -> pa.Table:
    columns = [pa.nulls(right.num_rows, type=f.type) for f in left_schema] + list(right.columns)
    return pa.Table.from_arrays(columns, schema=pa.schema(list(left_schema) + list(right.schema)))


def _join_single(left: pa.Table, right: pa.Table) -> pa.Table:
    """Every left row with the one row of a scalar subquery (NULLs when it has none)."""
    if right.num_rows > 1:
        raise OperatorError(f"a scalar subquery returned {right.num_rows} rows; it may return at most one")
    for f in right.schema:
        value = right.column(f.name)[0] if right.num_rows else pa.scalar(None, type=f.type)
        left = left.append_column(f, pa.repeat(value, left.num_rows) if right.num_rows else pa.nulls(left.num_rows, type=f.type))
    return left


def _join_cross(left: pa.Table, right: pa.Table, residual: E.Expr | None) -> pa.Table:
    """Every pair of rows, produced in chunks of pairs so the residual keeps memory bounded."""
    pieces = []
    right_rows = right.num_rows
    if right_rows == 0 or left.num_rows == 0:
        return pa.Table.from_arrays(
            [pa.array([], type=f.type) for f in list(left.schema) + list(right.schema)], schema=pa.schema(list(left.schema) + list(right.schema))
        )
    left_per_chunk = max(1, CROSS_CHUNK_ROWS // right_rows)
    for start in range(0, left.num_rows, left_per_chunk):
        block = slice_rows(left, start, left_per_chunk)
        left_index = np.repeat(np.arange(block.num_rows, dtype=np.int64), right_rows)
        right_index = np.tile(np.arange(right_rows, dtype=np.int64), block.num_rows)
        schema = pa.schema(list(left.schema) + list(right.schema))
        columns = list(block.take(left_index).columns) + list(right.take(right_index).columns)
        combined = pa.Table.from_arrays(columns, schema=schema) if columns else rows_only(len(left_index))
        pieces.append(evaluate_predicate(residual, combined) if residual is not None else combined)
    return concat_tables(pieces)


def _anti_null_aware(left: pa.Table, right: pa.Table, left_keys: list[str], right_keys: list[str]) -> pa.Table:
    """x NOT IN (subquery): TRUE for every row when the subquery is empty; otherwise rows with a NULL
    key, and every row when the subquery holds a NULL, are not TRUE and are dropped."""
    if right.num_rows == 0:
        return left
    if any(right.column(key).null_count for key in right_keys):
        return left.slice(0, 0)
    for key in left_keys:
        left = left.filter(pc.is_valid(left.column(key)))
    return _hash_join(left, right, "anti", left_keys, right_keys)


# ---------------------------------------------------------------------------------------- sort


def sort(table: pa.Table, keys: list[L.SortKey], limit: int | None, offset: int) -> pa.Table:
    if table.num_rows == 0:
        return table
    helper_columns, sort_keys = [], []
    for index, key in enumerate(keys):
        values = evaluate(key.expr, table)
        name = f"__sort{index}"
        order = "ascending" if key.ascending else "descending"
        if T.is_float(key.expr.type):
            # Arrow places NaN next to the nulls; in SQL (duckdb) NaN is above every number and the
            # nulls go where NULLS FIRST/LAST says: a class per row (nulls, numbers, NaN in order) first
            helper_columns.append((f"{name}_class", _float_sort_class(values, key.ascending, key.nulls_first)))
            sort_keys.append((f"{name}_class", "ascending", "at_end"))
        helper_columns.append((name, values))
        sort_keys.append((name, order, "at_start" if key.nulls_first else "at_end"))
    keyed = pa.Table.from_arrays([values for _, values in helper_columns], names=[name for name, _ in helper_columns])
    indices = pc.sort_indices(keyed, sort_keys=sort_keys)
    if limit is not None or offset:
        indices = indices.slice(offset, limit)
    return take(table, indices)


def _float_sort_class(values, ascending: bool, nulls_first: bool) -> pa.Array:
    """0, 1, 2 for nulls, numbers and NaN in the order the sort puts them (NaN above every number)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    nan_rank = pc.cast(pc.is_nan(values) if ascending else pc.invert(pc.is_nan(values)), pa.int8())
    shifted = pc.add(nan_rank, pa.scalar(1 if nulls_first else 0, pa.int8()))
    return pc.fill_null(shifted, pa.scalar(0 if nulls_first else 2, pa.int8()))
