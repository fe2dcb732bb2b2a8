# cython: language_level=3
"""Thin wrappers over the native kernels (native/src): hashing, hash partitioning, aggregation, hash joins and decimal arithmetic.

Arrow memory crosses into C++ through the Arrow C Data Interface (PyCapsules from
``__arrow_c_array__``) and comes back through ``_import_from_c``: no copies at the boundary. A Table
goes in chunk by chunk (never combined into one batch first). Every native call runs without the
GIL. The contract is docs/native-api.md.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libcpp.string cimport string
from libcpp.utility cimport move
from libcpp.vector cimport vector

from sabot_native cimport aggregate as native_aggregate
from sabot_native cimport checksum as native_checksum
from sabot_native.decimal cimport DecimalOp, DecimalOperand, decimal_arithmetic as native_decimal_arithmetic
from sabot_native cimport join as native_join
from sabot_native.hash cimport hash_rows as native_hash_rows, kDefaultHashSeed
from sabot_native cimport partition as native_partition
from sabot_native.arrow_data cimport (ArrowArray, ArrowSchema, BatchView, OutputArray, TableView, export_array,
                                      import_batch, make_table)
from sabot_native.executor cimport MorselExecutor as NativeExecutor
from sabot_native._executor cimport MorselExecutor

import decimal

import pyarrow as pa

from sabot_native._executor import DEFAULT_MORSEL_BYTES

DEFAULT_HASH_SEED = kDefaultHashSeed

_FUNCTIONS = ("count", "count_all", "sum", "min", "max", "mean")


cdef BatchView _import(batch) except *:
    """Moves a RecordBatch's Arrow C data into a native view (zero-copy)."""
    schema_capsule, array_capsule = batch.__arrow_c_array__()
    cdef ArrowSchema* schema = <ArrowSchema*>PyCapsule_GetPointer(schema_capsule, "arrow_schema")
    cdef ArrowArray* array = <ArrowArray*>PyCapsule_GetPointer(array_capsule, "arrow_array")
    cdef BatchView view
    with nogil:
        view = import_batch(schema, array)
    return view


cdef TableView _import_table(batches) except *:
    """A native view of batches with one schema, rows numbered across them (zero-copy)."""
    cdef vector[BatchView] views
    for batch in batches:
        views.push_back(_import(batch))
    cdef TableView table
    with nogil:
        table = make_table(move(views))
    return table


cdef object _export_batch(const OutputArray& array, schema):
    cdef ArrowArray exported
    with nogil:
        export_array(array, &exported)
    # _import_from_c takes ownership, and releases the struct even when it fails.
    return pa.RecordBatch._import_from_c(<uintptr_t>&exported, schema)


def _same_dictionary(a, b):
    """Chunks of one table usually share their dictionary's buffers: compare addresses before values."""
    if a.offset == b.offset and len(a) == len(b) and all(
            (x is None and y is None) or (x is not None and y is not None and x.address == y.address)
            for x, y in zip(a.buffers(), b.buffers())):
        return True
    return a.equals(b)


def _needs_unified_dictionaries(table):
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            chunks = [chunk for chunk in table.column(index).chunks if len(chunk)]
            if any(not _same_dictionary(chunk.dictionary, chunks[0].dictionary) for chunk in chunks[1:]):
                return True
    return False


def _batches_of(data, str argument, bint one_dictionary=False):
    """The non-empty batches of a RecordBatch or Table (zero-copy), or one empty batch carrying the schema.

    With one_dictionary, the chunks of each dictionary column are given one dictionary (the kernels
    that carry dictionaries into their output need it; only the indices are rewritten)."""
    if isinstance(data, pa.RecordBatch):
        return [data]
    if isinstance(data, pa.Table):
        if one_dictionary and _needs_unified_dictionaries(data):
            data = data.unify_dictionaries()
        batches = [batch for batch in data.to_batches() if batch.num_rows]
        return batches or [pa.RecordBatch.from_pylist([], schema=data.schema)]
    raise TypeError(f"{argument} must be a pyarrow.RecordBatch or pyarrow.Table, got {type(data).__name__}")


cdef vector[string] _key_names(keys) except *:
    if isinstance(keys, str):
        keys = [keys]
    cdef vector[string] names
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys must be column names (str), got {key!r}")
        names.push_back(key.encode("utf-8"))
    return names


cdef NativeExecutor* _executor_of(executor) except? NULL:
    if executor is None:
        return NULL
    if not isinstance(executor, MorselExecutor):
        raise TypeError(f"executor must be a sabot_native.MorselExecutor or None, got {type(executor).__name__}")
    cdef MorselExecutor typed = <MorselExecutor>executor
    if typed.impl == NULL:
        raise RuntimeError("the executor was shut down")
    return typed.impl


def _morsel_bytes_of(executor):
    return DEFAULT_MORSEL_BYTES if executor is None else (<MorselExecutor>executor).morsel_bytes


def hash_rows(data, keys, uint64_t seed=DEFAULT_HASH_SEED):
    """The documented 64-bit hash (native/README.md) of each row's key columns, as a UInt64Array."""
    batches = _batches_of(data, "batch")
    cdef vector[string] names = _key_names(keys)
    cdef TableView table = _import_table(batches)
    cdef OutputArray hashes
    with nogil:
        hashes = native_hash_rows(table, names, seed)
    cdef ArrowArray exported
    with nogil:
        export_array(hashes, &exported)
    return pa.Array._import_from_c(<uintptr_t>&exported, pa.uint64())


def partition_batch(data, keys, int64_t num_partitions, *, uint64_t seed=DEFAULT_HASH_SEED, executor=None):
    """Splits data into exactly num_partitions parts by the hash of keys (row order kept within each).

    A RecordBatch gives RecordBatches; a Table gives Tables (one chunk each, unless a string column with
    32-bit offsets of a part would exceed 2 GiB in one array)."""
    batches = _batches_of(data, "batch", one_dictionary=True)
    cdef vector[string] names = _key_names(keys)
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    cdef TableView table = _import_table(batches)
    cdef vector[vector[OutputArray]] runs
    with nogil:
        runs = native_partition.partition_table(table, names, num_partitions, seed, native_executor, morsel_bytes)
    schema = data.schema
    cdef size_t run, p
    if isinstance(data, pa.RecordBatch):
        return [_export_batch(runs[0][p], schema) for p in range(runs[0].size())]
    parts = [[] for _ in range(num_partitions)]
    for run in range(runs.size()):
        for p in range(runs[run].size()):
            if runs.size() == 1 or runs[run][p].length > 0:
                parts[p].append(_export_batch(runs[run][p], schema))
    return [pa.Table.from_batches(batches, schema=schema) for batches in parts]


def batch_checksum(data, executor=None):
    """Order-independent 64-bit checksum of all rows: the wrapping sum of the row hashes over all columns.

    Morsel-parallel on `executor` when one is given; the value does not depend on it, nor on how a
    Table is chunked."""
    batches = _batches_of(data, "batch")
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    cdef TableView table = _import_table(batches)
    cdef uint64_t seed = DEFAULT_HASH_SEED
    cdef uint64_t checksum
    with nogil:
        checksum = native_checksum.batch_checksum(table, seed, native_executor, morsel_bytes)
    return checksum


cdef vector[native_aggregate.AggregateSpec] _aggregation_specs(aggregations) except *:
    cdef vector[native_aggregate.AggregateSpec] specs
    cdef native_aggregate.AggregateSpec spec
    if isinstance(aggregations, (str, bytes)) or not hasattr(aggregations, "__iter__"):
        raise TypeError("aggregations must be a list of (column, function, output_name) tuples")
    for item in aggregations:
        if not isinstance(item, (tuple, list)) or len(item) != 3 or not all(isinstance(x, str) for x in item):
            raise ValueError(f"aggregation {item!r} must be a (column, function, output_name) tuple of str")
        column, function, output_name = item
        if function not in _FUNCTIONS:
            raise ValueError(f"unknown aggregate function {function!r} for output {output_name!r} "
                             f"(expected one of {', '.join(_FUNCTIONS)})")
        spec.column = column.encode("utf-8")
        spec.function = function.encode("utf-8")
        spec.output_name = output_name.encode("utf-8")
        specs.push_back(spec)
    if specs.empty():
        raise ValueError("aggregations must hold at least one (column, function, output_name) tuple")
    return specs


def _needed_columns(table, keys, aggregations):
    """Only the columns the aggregation reads, so others (of any type) are never exported."""
    names = [keys] if isinstance(keys, str) else list(keys)
    names.extend(column for column, function, _ in aggregations if not (function == "count_all" and column == ""))
    unique = list(dict.fromkeys(names))
    if all(name in table.schema.names for name in unique):
        return table.select(unique)
    return table  # let the native layer name the unknown column


cdef object _result_type(const native_aggregate.ResultColumn& column, schema):
    if column.type_of_input >= 0:
        value_type = schema.field(column.type_of_input).type
        return value_type.value_type if column.dictionary_value else value_type
    code = column.format.decode("ascii")
    if code == "l":
        return pa.int64()
    if code == "g":
        return pa.float64()
    precision, scale = code[2:].split(",")  # "d:38,S"
    return pa.decimal128(int(precision), int(scale))


cdef tuple _run_aggregate(data, keys, aggregations, native_aggregate.AggregateStage stage, executor):
    cdef vector[string] names = _key_names(keys)
    cdef vector[native_aggregate.AggregateSpec] specs = _aggregation_specs(aggregations)
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    if stage != native_aggregate.AggregateStage.kFinal and isinstance(data, (pa.Table, pa.RecordBatch)):
        data = _needed_columns(data, keys, aggregations)
    batches = _batches_of(data, "table", one_dictionary=True)
    input_schema = batches[0].schema
    cdef TableView table = _import_table(batches)
    cdef native_aggregate.AggregateResult result
    with nogil:
        result = native_aggregate.aggregate(table, names, specs, stage, native_executor, morsel_bytes)
    cdef size_t i
    fields = []
    for i in range(result.columns.size()):
        fields.append(pa.field(result.columns[i].name.decode("utf-8"), _result_type(result.columns[i], input_schema)))
    schema = pa.schema(fields)
    output = pa.Table.from_batches([_export_batch(result.batches[i], schema) for i in range(result.batches.size())],
                                   schema=schema)
    stats = {
        "strategy": result.stats.strategy.decode("ascii"),
        "radix_partitions": result.stats.radix_partitions,
        "radix_partitions_used": result.stats.radix_partitions_used,
        "groups": result.stats.groups,
    }
    return output, stats


def aggregate_partial(table, keys, aggregations, executor=None):
    """Per-group partial state; key columns keep their names (the state columns are internal)."""
    return _run_aggregate(table, keys, aggregations, native_aggregate.AggregateStage.kPartial, executor)[0]


def aggregate_final(partials, keys, aggregations, executor=None):
    """Merges partial tables (e.g. received from every producer after the shuffle) into final values."""
    if isinstance(partials, (pa.Table, pa.RecordBatch)):
        partials = [partials]
    partials = [pa.Table.from_batches([p]) if isinstance(p, pa.RecordBatch) else p for p in partials]
    if not partials:
        raise ValueError("partials must hold at least one partial table")
    for partial in partials:
        if not isinstance(partial, pa.Table):
            raise TypeError(f"partials must be pyarrow Tables, got {type(partial).__name__}")
    combined = partials[0] if len(partials) == 1 else pa.concat_tables(partials)  # zero-copy: chunks are kept
    return _run_aggregate(combined, keys, aggregations, native_aggregate.AggregateStage.kFinal, executor)[0]


def aggregate(table, keys, aggregations, executor=None):
    """Group-by in one go: the same results as aggregate_final([aggregate_partial(table, ...)], ...)."""
    return _run_aggregate(table, keys, aggregations, native_aggregate.AggregateStage.kComplete, executor)[0]


def _aggregate_with_stats(table, keys, aggregations, executor=None, stage="complete"):
    """aggregate (or, with stage="partial" / "final", aggregate_partial / aggregate_final on one table)
    returning (result, stats): the strategy taken, radix partitions made and used, and groups. For tests
    and diagnostics; the numbers never change a result."""
    cdef native_aggregate.AggregateStage native_stage
    if stage == "complete":
        native_stage = native_aggregate.AggregateStage.kComplete
    elif stage == "partial":
        native_stage = native_aggregate.AggregateStage.kPartial
    elif stage == "final":
        native_stage = native_aggregate.AggregateStage.kFinal
    else:
        raise ValueError(f"stage must be complete, partial or final, got {stage!r}")
    return _run_aggregate(table, keys, aggregations, native_stage, executor)


# The JoinKind of each join name, in the order of src/join.h.
_JOIN_KINDS = {"inner": <int>native_join.JoinKind.kInner, "left": <int>native_join.JoinKind.kLeft,
               "right": <int>native_join.JoinKind.kRight, "full": <int>native_join.JoinKind.kFull,
               "semi": <int>native_join.JoinKind.kSemi, "anti": <int>native_join.JoinKind.kAnti}


cdef native_join.JoinKind _join_kind(str kind) except *:
    if kind not in _JOIN_KINDS:
        raise ValueError(f"unknown join kind {kind!r} (expected one of {', '.join(_JOIN_KINDS)})")
    return <native_join.JoinKind><int>_JOIN_KINDS[kind]


def hash_join(left, right, left_keys, right_keys, str kind="inner", *, bint build_right=True):
    """Equi-join of two Tables (src/join.h): NULL keys never match, floats compare -0.0 = 0.0 and
    NaN = NaN. kind: inner, left, right, full (left columns, then right columns; the padded side's
    columns are nullable) or semi, anti (left columns only). The hash table is built on the right
    input if build_right, else on the left; that changes only the order of the rows."""
    cdef native_join.JoinKind native_kind = _join_kind(kind)
    left_batches = _batches_of(left, "left", one_dictionary=True)
    right_batches = _batches_of(right, "right", one_dictionary=True)
    cdef vector[string] left_names = _key_names(left_keys)
    cdef vector[string] right_names = _key_names(right_keys)
    cdef TableView left_table = _import_table(left_batches)
    cdef TableView right_table = _import_table(right_batches)
    cdef vector[OutputArray] batches
    with nogil:
        batches = native_join.hash_join(left_table, left_names, right_table, right_names, native_kind, build_right)
    fields = [f.with_nullable(True) if kind in ("right", "full") else f for f in left.schema]
    if kind not in ("semi", "anti"):
        fields += [f.with_nullable(True) if kind in ("left", "full") else f for f in right.schema]
    schema = pa.schema(fields)
    cdef size_t i
    return pa.Table.from_batches([_export_batch(batches[i], schema) for i in range(batches.size())], schema=schema)


_DECIMAL_OPS = {"add": DecimalOp.kAdd, "subtract": DecimalOp.kSubtract, "multiply": DecimalOp.kMultiply}
_EXACT = decimal.Context(prec=80)  # a 38-digit constant scaled without rounding


def decimal_arithmetic(str op, a, b, int precision, int scale):
    """a + b, a - b or a * b (`op`: add, subtract, multiply) of decimal128 values, exact, as a
    decimal128(precision, scale) Array. Each operand is a decimal128 Array or Scalar (at least one an
    Array; Arrays of one length). The scale must be the exact one (the larger operand scale for + and
    -, their sum for *). NULL in, NULL out; OverflowError when a result does not fit."""
    if op not in _DECIMAL_OPS:
        raise ValueError(f"decimal_arithmetic: unknown op {op!r}")
    arrays = [value for value in (a, b) if isinstance(value, pa.Array)]
    if not arrays:
        raise TypeError("decimal_arithmetic: at least one operand must be a pyarrow.Array")
    cdef int64_t length = len(arrays[0])
    cdef BatchView a_batch, b_batch
    cdef DecimalOperand a_operand, b_operand
    _decimal_operand(a, &a_operand, &a_batch)
    _decimal_operand(b, &b_operand, &b_batch)
    cdef DecimalOp native_op = _DECIMAL_OPS[op]
    cdef OutputArray result
    with nogil:
        result = native_decimal_arithmetic(native_op, a_operand, b_operand, length, precision, scale)
    cdef ArrowArray exported
    with nogil:
        export_array(result, &exported)
    return pa.Array._import_from_c(<uintptr_t>&exported, pa.decimal128(precision, scale))


cdef _decimal_operand(value, DecimalOperand* operand, BatchView* batch):
    """Fills `operand` from an Array (imported into `batch`, which must outlive the call) or a Scalar."""
    if not pa.types.is_decimal128(value.type):
        raise TypeError(f"decimal_arithmetic: operands must be decimal128, got {value.type}")
    operand.scale = value.type.scale
    if isinstance(value, pa.Array):
        batch[0] = _import(pa.RecordBatch.from_arrays([value], ["operand"]))
        operand.column = &batch[0].columns[0]
        return
    if not isinstance(value, pa.Scalar):
        raise TypeError(f"decimal_arithmetic: operands must be pyarrow Arrays or Scalars, got {type(value).__name__}")
    operand.column = NULL
    if not value.is_valid:
        operand.constant_null = True
        return
    unscaled = int(value.as_py().scaleb(value.type.scale, _EXACT))
    operand.constant_low = unscaled & 0xFFFFFFFFFFFFFFFF
    operand.constant_high = unscaled >> 64
