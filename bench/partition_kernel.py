"""Hash partitioning: 10M rows x 4 columns (int64, int64, float64, float64) -> 64 partitions by one
int64 key.

Cases:
- 1 thread (executor=None) vs numpy: the same hash in numpy -> partition id -> stable argsort -> take
  of every column -> split. Goal ratio >= 2.5.
- 2 threads (MorselExecutor(threads=2)) vs polars DataFrame.partition_by (polars' own thread pool),
  if polars is installed (the `bench` extra). Goal ratio >= 1.5.
Measure numpy without the numpy-slowing variables: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE.
"""
import argparse

import numpy as np
import pyarrow as pa

import sabot_native as sn
from benchlib import median_seconds, report

PARTITIONS = 64
MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def make_batch(rows, seed=11):
    rng = np.random.default_rng(seed)
    return pa.record_batch({
        "key": rng.integers(-(1 << 62), 1 << 62, rows),
        "count": rng.integers(0, 1000, rows),
        "price": rng.random(rows),
        "weight": rng.random(rows),
    })


def numpy_partition_ids(keys):
    """The documented hash (native/README.md) of an int64 column, vectorized, and its partition id."""
    with np.errstate(over="ignore"):
        z = keys.view(np.uint64) + np.uint64(sn.DEFAULT_HASH_SEED) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    # (h * 64) >> 64 is the top 6 bits for a power-of-two partition count.
    return (z >> np.uint64(64 - PARTITIONS.bit_length() + 1)).astype(np.int64)


def numpy_partition(columns):
    partition_ids = numpy_partition_ids(columns[0])
    order = np.argsort(partition_ids, kind="stable")
    bounds = np.cumsum(np.bincount(partition_ids, minlength=PARTITIONS))[:-1]
    return [np.split(np.take(column, order), bounds) for column in columns]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batch = make_batch(args.rows)
    columns = [column.to_numpy() for column in batch.columns]
    million_rows = args.rows / 1e6

    # The numpy reference must agree with the kernel, or the comparison means nothing.
    reference_parts = numpy_partition(columns)
    native_parts = sn.partition_batch(batch, ["key"], PARTITIONS)
    assert [len(p) for p in reference_parts[0]] == [p.num_rows for p in native_parts]
    assert np.array_equal(reference_parts[0][5], native_parts[5].column("key").to_numpy())

    native_1 = median_seconds(lambda: sn.partition_batch(batch, ["key"], PARTITIONS), args.repeats)
    numpy_1 = median_seconds(lambda: numpy_partition(columns), args.repeats)
    report("partition_kernel", "10M_rows_64_partitions_1_thread_vs_numpy", million_rows / native_1,
           "M rows/s", million_rows / numpy_1, 2.5)

    try:
        import polars as pl
    except ImportError:
        return
    with sn.MorselExecutor(threads=2) as executor:
        native_2 = median_seconds(
            lambda: sn.partition_batch(batch, ["key"], PARTITIONS, executor=executor), args.repeats)
    frame = pl.from_arrow(batch)
    # polars gets the partition id as a column: it partitions by a precomputed id, as we do by hash.
    frame = frame.with_columns(pl.Series("partition", numpy_partition_ids(columns[0])))
    polars_2 = median_seconds(lambda: frame.partition_by("partition", maintain_order=False), args.repeats)
    report("partition_kernel", "10M_rows_64_partitions_2_threads_vs_polars", million_rows / native_2,
           "M rows/s", million_rows / polars_2, 1.5)


if __name__ == "__main__":
    main()
