"""Input readers: each agent reads its deterministic share of every input.

File inputs (parquet/csv/ipc, a local path or any pyarrow.fs URI) are split into units — Parquet row
groups, otherwise whole files — sorted by path, and agent i of N takes every unit whose position is
i modulo N. Generated inputs give every row a value that depends only on (seed, column, row number),
so agent i of N generates rows [rows*i/N, rows*(i+1)/N) and the union over agents is the same table
whatever N is.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from sabot_agent.jobspec import GeneratedColumn, InputSpec, generated_schema
from sabot_agent.tickets import fnv1a_64

GENERATE_BATCH_ROWS = 1 << 20


class InputError(RuntimeError):
    """An input that cannot be read."""


def open_dataset(spec: InputSpec) -> ds.Dataset:
    try:
        if spec.format == "ipc" and "://" not in spec.path:
            # local Arrow IPC files are memory-mapped: their record batches are read without a copy
            return ds.dataset(spec.path, format=spec.format, filesystem=pafs.LocalFileSystem(use_mmap=True))
        return ds.dataset(spec.path, format=spec.format)
    except (OSError, pa.ArrowInvalid, ValueError) as exc:
        raise InputError(f"input {spec.name!r}: cannot open {spec.format} dataset at {spec.path!r}: {exc}") from exc


def resolve_schema(spec: InputSpec) -> pa.Schema:
    """The schema of an input (file inputs are opened, generated ones described)."""
    if spec.generated:
        return generated_schema(spec)
    dataset = open_dataset(spec)
    if not dataset.files:
        raise InputError(f"no {spec.format} files under {spec.path!r}")
    return dataset.schema


def read_share(spec: InputSpec, agent_index: int, agent_count: int) -> Iterator[pa.RecordBatch]:
    """This agent's share of one input, as record batches with the input's schema."""
    if not 0 <= agent_index < agent_count:
        raise ValueError(f"agent index {agent_index} is outside [0, {agent_count})")
    if spec.generated:
        first = spec.rows * agent_index // agent_count
        last = spec.rows * (agent_index + 1) // agent_count
        for start in range(first, last, GENERATE_BATCH_ROWS):
            yield generate_rows(spec, start, min(last, start + GENERATE_BATCH_ROWS))
        return
    dataset = open_dataset(spec)
    for fragment in _units(dataset)[agent_index::agent_count]:
        # batches as large as the generator's: fewer, larger morsels for the map kernels
        yield from fragment.to_batches(schema=dataset.schema, batch_size=GENERATE_BATCH_ROWS)


def _units(dataset: ds.Dataset) -> list[ds.Fragment]:
    fragments = sorted(dataset.get_fragments(), key=lambda fragment: fragment.path)
    if not isinstance(dataset.format, ds.ParquetFileFormat):
        return fragments
    units = []
    for fragment in fragments:
        units.extend(sorted(fragment.split_by_row_group(), key=lambda unit: unit.row_groups[0].id if unit.row_groups else -1))
    return units


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a well-mixed 64-bit value per input, wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _column_salt(seed: int, column: str, purpose: str) -> np.uint64:
    return np.uint64((fnv1a_64(f"{seed}/{column}/{purpose}") + (1 << 64)) % (1 << 64))


def generate_column(column: GeneratedColumn, seed: int, start: int, stop: int) -> pa.Array:
    """Rows [start, stop) of one generated column: value k in [0, distinct) per row, nulls by fraction."""
    rows = np.arange(start, stop, dtype=np.uint64)
    keys = _splitmix64(rows ^ _column_salt(seed, column.name, "value")) % np.uint64(column.distinct)
    mask = None
    if column.null_fraction > 0:
        uniform = (_splitmix64(rows ^ _column_salt(seed, column.name, "null")) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        mask = uniform < column.null_fraction
    if column.type == "int64":
        return pa.array(keys.astype(np.int64), type=pa.int64(), mask=mask)
    if column.type == "float64":
        # quarters are exact in binary floating point, so sums do not depend on the order of addition
        return pa.array(keys.astype(np.float64) * 0.25, type=pa.float64(), mask=mask)
    numbers = pc.cast(pa.array(keys.astype(np.int64), mask=mask), pa.string())
    return pc.binary_join_element_wise(f"{column.name}-", numbers, "")


def generate_rows(spec: InputSpec, start: int, stop: int) -> pa.RecordBatch:
    columns = [generate_column(column, spec.seed, start, stop) for column in spec.columns]
    return pa.RecordBatch.from_arrays(columns, schema=generated_schema(spec))


def generate_table(spec: InputSpec) -> pa.Table:
    """The whole generated input in one process (tests compare the distributed result against it)."""
    return pa.Table.from_batches(list(read_share(spec, 0, 1)), schema=generated_schema(spec))
