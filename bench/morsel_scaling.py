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
from benchlib import interleaved_median_seconds, report

PARTITIONS = 64


def make_batch(rows, seed=7):
    rng = np.random.default_rng(seed)
    return pa.record_batch({
        "k1": rng.integers(0, 1 << 40, rows),
        "k2": rng.integers(0, 1000, rows),
        "v1": rng.random(rows),
        "v2": rng.random(rows),
    })


def partition_call(batch, executor):
    return lambda: sn.partition_batch(batch, ["k1"], PARTITIONS, executor=executor)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--morsel-bytes", type=int, default=sn.DEFAULT_MORSEL_BYTES)
    args = parser.parse_args()

    for rows, repeats in ((args.rows, 7), (50_000, 301)):
        batch = make_batch(rows)
        with sn.MorselExecutor(threads=1, morsel_bytes=args.morsel_bytes) as one, \
                sn.MorselExecutor(threads=2, morsel_bytes=args.morsel_bytes) as two:
            unsplit, one_thread, two_threads = interleaved_median_seconds(
                [partition_call(batch, None), partition_call(batch, one), partition_call(batch, two)], repeats)
        report("morsel_scaling", f"{rows}_rows_1_thread_vs_unsplit", rows / one_thread / 1e6, "M rows/s",
               rows / unsplit / 1e6, ">= 0.9")
        if rows == args.rows:
            report("morsel_scaling", f"{rows}_rows_2_threads_vs_1_thread", rows / two_threads / 1e6, "M rows/s",
                   rows / one_thread / 1e6, ">= 1.8")


if __name__ == "__main__":
    main()
