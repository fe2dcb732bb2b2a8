"""Sabot's native executor: morsel-parallel C++ kernels over Arrow record batches, without the GIL.

The API is described in docs/native-api.md; the C++ lives in native/src.
"""
from sabot_native._executor import (
    DEFAULT_MORSEL_BYTES,
    MorselExecutor,
    Slot,
    TaskSlotManager,
    default_thread_count,
)
from sabot_native._kernels import (
    DEFAULT_HASH_SEED,
    aggregate,
    aggregate_final,
    aggregate_partial,
    batch_checksum,
    decimal_arithmetic,
    hash_join,
    hash_rows,
    partition_batch,
)

__all__ = [
    "DEFAULT_HASH_SEED",
    "DEFAULT_MORSEL_BYTES",
    "MorselExecutor",
    "Slot",
    "TaskSlotManager",
    "aggregate",
    "aggregate_final",
    "aggregate_partial",
    "batch_checksum",
    "decimal_arithmetic",
    "default_thread_count",
    "hash_join",
    "hash_rows",
    "partition_batch",
]
