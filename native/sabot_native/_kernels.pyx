# cython: language_level=3
"""Thin wrappers over the native kernels (native/src): hashing, hash partitioning and aggregation.

Arrow memory crosses into C++ through the Arrow C Data Interface (PyCapsules from
``__arrow_c_array__``) and comes back through ``_import_from_c``: no copies at the boundary. Every
native call runs without the GIL. The contract is docs/native-api.md.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native cimport aggregate as native_aggregate
from sabot_native cimport partition as native_partition
from sabot_native.arrow_data cimport ArrowArray, ArrowSchema, BatchView, OutputArray, export_array, import_batch
from sabot_native.executor cimport MorselExecutor as NativeExecutor
from sabot_native.hash cimport kDefaultHashSeed
from sabot_native._executor cimport MorselExecutor

import pyarrow as pa

from sabot_native._executor import DEFAULT_MORSEL_BYTES

DEFAULT_HASH_SEED = kDefaultHashSeed

_FUNCTIONS = ("count", "sum", "min", "max", "mean")
_STATE_SUFFIXES = {"count": ("count",), "sum": ("sum",), "min": ("min",), "max": ("max",),
                   "mean": ("sum", "count")}
_PRIMITIVE_TYPES = {b"l": pa.int64(), b"g": pa.float64()}


cdef BatchView _import(batch) except *:
    """Moves a RecordBatch's Arrow C data into a native view (zero-copy)."""
    schema_capsule, array_capsule = batch.__arrow_c_array__()
    cdef ArrowSchema* schema = <ArrowSchema*>PyCapsule_GetPointer(schema_capsule, "arrow_schema")
    cdef ArrowArray* array = <ArrowArray*>PyCapsule_GetPointer(array_capsule, "arrow_array")
    cdef BatchView view
    with nogil:
        view = import_batch(schema, array)
    return view


cdef object _export_batch(const OutputArray& array, schema):
    cdef ArrowArray exported
    with nogil:
        export_array(array, &exported)
    # _import_from_c takes ownership, and releases the struct even when it fails.
    return pa.RecordBatch._import_from_c(<uintptr_t>&exported, schema)


def _as_batch(data, str argument):
    """A RecordBatch view of a RecordBatch or Table (one copy only if the table has several chunks)."""
    if isinstance(data, pa.RecordBatch):
        return data
    if isinstance(data, pa.Table):
        batches = data.combine_chunks().to_batches()
        if len(batches) == 1:
            return batches[0]
        return pa.RecordBatch.from_pylist([], schema=data.schema)
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


def hash_rows(batch, keys, uint64_t seed=DEFAULT_HASH_SEED):
    """The documented 64-bit hash (native/README.md) of each row's key columns, as a UInt64Array."""
    batch = _as_batch(batch, "batch")
    cdef vector[string] names = _key_names(keys)
    cdef BatchView view = _import(batch)
    cdef OutputArray hashes
    with nogil:
        hashes = native_partition.hash_rows(view, names, seed)
    cdef ArrowArray exported
    with nogil:
        export_array(hashes, &exported)
    return pa.Array._import_from_c(<uintptr_t>&exported, pa.uint64())


def partition_batch(batch, keys, int64_t num_partitions, *, uint64_t seed=DEFAULT_HASH_SEED, executor=None):
    """Splits batch into exactly num_partitions batches by the hash of keys (row order kept within each)."""
    batch = _as_batch(batch, "batch")
    cdef vector[string] names = _key_names(keys)
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    cdef BatchView view = _import(batch)
    cdef vector[OutputArray] parts
    with nogil:
        parts = native_partition.partition_batch(view, names, num_partitions, seed, native_executor, morsel_bytes)
    schema = batch.schema
    return [_export_batch(parts[i], schema) for i in range(parts.size())]


def batch_checksum(batch, executor=None):
    """Order-independent 64-bit checksum of all rows: the wrapping sum of the row hashes over all columns.

    Morsel-parallel on `executor` when one is given; the value does not depend on it."""
    batch = _as_batch(batch, "batch")
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    cdef BatchView view = _import(batch)
    cdef uint64_t seed = DEFAULT_HASH_SEED
    cdef uint64_t checksum
    with nogil:
        checksum = native_partition.batch_checksum(view, seed, native_executor, morsel_bytes)
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


def _needed_columns(table, keys, aggregations, bint final):
    """Only the columns the aggregation reads, so others (of any type) are never exported."""
    names = [keys] if isinstance(keys, str) else list(keys)
    for column, function, output_name in aggregations:
        if final:
            names.extend(f"{output_name}__{suffix}" for suffix in _STATE_SUFFIXES[function])
        else:
            names.append(column)
    unique = list(dict.fromkeys(names))
    if all(name in table.schema.names for name in unique):
        return table.select(unique)
    return table  # let the native layer name the unknown column


cdef object _run_aggregate(table, keys, aggregations, native_aggregate.AggregateStage stage, executor):
    cdef vector[string] names = _key_names(keys)
    cdef vector[native_aggregate.AggregateSpec] specs = _aggregation_specs(aggregations)
    cdef NativeExecutor* native_executor = _executor_of(executor)
    cdef int64_t morsel_bytes = _morsel_bytes_of(executor)
    if isinstance(table, pa.Table) or isinstance(table, pa.RecordBatch):
        table = _needed_columns(table, keys, aggregations, stage == native_aggregate.AggregateStage.kFinal)
    batch = _as_batch(table, "table")
    cdef BatchView view = _import(batch)
    cdef native_aggregate.AggregateResult result
    with nogil:
        result = native_aggregate.aggregate(view, names, specs, stage, native_executor, morsel_bytes)
    fields = []
    for column in result.columns:
        name = column.name.decode("utf-8")
        if column.type_of_input >= 0:
            fields.append(pa.field(name, batch.schema.field(column.type_of_input).type))
        else:
            fields.append(pa.field(name, _PRIMITIVE_TYPES[column.format]))
    return pa.Table.from_batches([_export_batch(result.batch, pa.schema(fields))])


def aggregate_partial(table, keys, aggregations, executor=None):
    """Per-group partial state (<as>__count, <as>__sum, <as>__min, <as>__max); key columns keep their names."""
    return _run_aggregate(table, keys, aggregations, native_aggregate.AggregateStage.kPartial, executor)


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
    combined = partials[0] if len(partials) == 1 else pa.concat_tables(partials)
    return _run_aggregate(combined, keys, aggregations, native_aggregate.AggregateStage.kFinal, executor)


def aggregate(table, keys, aggregations, executor=None):
    """Group-by in one go: the same results as aggregate_final([aggregate_partial(table, ...)], ...)."""
    return _run_aggregate(table, keys, aggregations, native_aggregate.AggregateStage.kComplete, executor)
