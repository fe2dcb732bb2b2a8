"""Local group-by: 10M rows (int64 key, float64 value) -> sum, count and mean of the value.

Cases: 1M distinct keys and 100 distinct keys, each at 1 and 2 threads, against
pyarrow.Table.group_by at the same thread count (pa.set_cpu_count). Goal ratio >= 1.0.
duckdb (if installed, the `bench` extra) is printed alongside with pyarrow as its reference and no goal.
"""
import argparse

import numpy as np
import pyarrow as pa

import sabot_native as sn
from benchlib import median_seconds, report

AGGREGATIONS = [("value", "sum", "value_sum"), ("value", "count", "value_count"), ("value", "mean", "value_mean")]


def make_table(rows, keys, seed=5):
    rng = np.random.default_rng(seed)
    return pa.table({"key": rng.integers(0, keys, rows), "value": rng.random(rows)})


def pyarrow_group_by(table):
    return table.group_by("key").aggregate([("value", "sum"), ("value", "count"), ("value", "mean")])


def check_same_result(table, executor):
    ours = sn.aggregate(table, ["key"], AGGREGATIONS, executor=executor).sort_by("key")
    theirs = pyarrow_group_by(table).sort_by("key")
    assert ours.column("key").equals(theirs.column("key"))
    assert ours.column("value_count").equals(theirs.column("value_count"))
    assert np.allclose(ours.column("value_sum").to_numpy(), theirs.column("value_sum").to_numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        duckdb = None
    million_rows = args.rows / 1e6

    for keys, label in ((1_000_000, "1M_keys"), (100, "100_keys")):
        table = make_table(args.rows, keys)
        for threads in (1, 2):
            pa.set_cpu_count(threads)
            with sn.MorselExecutor(threads=threads) as executor:
                check_same_result(table, executor)
                ours = median_seconds(
                    lambda: sn.aggregate(table, ["key"], AGGREGATIONS, executor=executor), args.repeats)
            theirs = median_seconds(lambda: pyarrow_group_by(table), args.repeats)
            case = f"10M_rows_{label}_{threads}_threads"
            report("groupby_local", f"{case}_vs_pyarrow", million_rows / ours, "M rows/s",
                   million_rows / theirs, 1.0)
            if duckdb is not None:
                connection = duckdb.connect()
                connection.execute(f"SET threads TO {threads}")
                connection.register("data", table)
                connection.execute("CREATE TABLE native AS SELECT * FROM data")
                query = "SELECT key, sum(value), count(value), avg(value) FROM native GROUP BY key"
                seconds = median_seconds(lambda: connection.sql(query).to_arrow_table(), args.repeats)
                report("groupby_local", f"{case}_duckdb_vs_pyarrow", million_rows / seconds, "M rows/s",
                       million_rows / theirs, None)
                connection.close()


if __name__ == "__main__":
    main()
