"""Morsel dispatch overhead and thread scaling of a native kernel (hash partitioning).

Cases:
- 10M rows, 2 threads vs 1 thread: goal ratio >= 1.8.
- 10M rows and 50K rows, executor with 1 thread vs the same kernel called once on the whole batch
  (no executor): goal ratio >= 0.9, i.e. dispatch overhead <= 10%.
"""
import argparse

import numpy as np
import pyarrow as pa

import sabot_native as sn
from benchlib import median_seconds, report

PARTITIONS = 64


def make_batch(rows, seed=7):
    rng = np.random.default_rng(seed)
    return pa.record_batch({
        "k1": rng.integers(0, 1 << 40, rows),
        "k2": rng.integers(0, 1000, rows),
        "v1": rng.random(rows),
        "v2": rng.random(rows),
    })


def partition_seconds(batch, executor, repeats):
    return median_seconds(lambda: sn.partition_batch(batch, ["k1"], PARTITIONS, executor=executor), repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--morsel-bytes", type=int, default=sn.DEFAULT_MORSEL_BYTES)
    args = parser.parse_args()

    for rows, repeats in ((args.rows, 5), (50_000, 200)):
        batch = make_batch(rows)
        unsplit = partition_seconds(batch, None, repeats)
        with sn.MorselExecutor(threads=1, morsel_bytes=args.morsel_bytes) as one:
            one_thread = partition_seconds(batch, one, repeats)
        report("morsel_scaling", f"{rows}_rows_1_thread_vs_unsplit", rows / one_thread / 1e6, "M rows/s",
               rows / unsplit / 1e6, ">= 0.9")
        if rows == args.rows:
            with sn.MorselExecutor(threads=2, morsel_bytes=args.morsel_bytes) as two:
                two_threads = partition_seconds(batch, two, repeats)
            report("morsel_scaling", f"{rows}_rows_2_threads_vs_1_thread", rows / two_threads / 1e6, "M rows/s",
                   rows / one_thread / 1e6, ">= 1.8")


if __name__ == "__main__":
    main()
