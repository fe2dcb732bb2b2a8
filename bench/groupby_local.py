"""Local group-by against pyarrow.Table.group_by at the same thread count (pa.set_cpu_count). Goal ratio >= 1.0.

Cases:
- 10M rows (int64 key, float64 value) -> sum, count and mean of the value; 1M and 100 distinct keys.
- TPC-H Q1 shape: 6M rows, keys two 1-character string columns (l_returnflag, l_linestatus: 4 groups
  with Q1's skew), sum and mean of three decimal128(15, 2) columns (l_quantity, l_extendedprice,
  l_discount) and count(*).
Each at 1 and 2 threads, the two engines timed in turns. duckdb (if installed, the `bench` extra) is
printed alongside with pyarrow as its reference and no goal.
"""
import argparse

import numpy as np
import pyarrow as pa

import sabot_native as sn
from benchlib import interleaved_median_seconds, median_seconds, report

SIMPLE_AGGREGATIONS = [("value", "sum", "value_sum"), ("value", "count", "value_count"),
                       ("value", "mean", "value_mean")]
Q1_KEYS = ["l_returnflag", "l_linestatus"]
Q1_VALUES = ["l_quantity", "l_extendedprice", "l_discount"]
Q1_AGGREGATIONS = ([(c, "sum", f"sum_{c}") for c in Q1_VALUES] + [(c, "mean", f"avg_{c}") for c in Q1_VALUES]
                   + [("", "count_all", "count_order")])


def make_simple_table(rows, keys, seed=5):
    rng = np.random.default_rng(seed)
    return pa.table({"key": rng.integers(0, keys, rows), "value": rng.random(rows)})


def decimal_15_2(unscaled):
    """decimal128(15, 2) from int64 unscaled values (value = unscaled / 100), built from its 128-bit storage."""
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(15, 2), len(unscaled), [None, pa.py_buffer(words)])


def make_q1_table(rows, seed=7):
    """lineitem's Q1 columns: (returnflag, linestatus) groups A-F, N-F, N-O, R-F in Q1's proportions."""
    rng = np.random.default_rng(seed)
    group = rng.choice(4, size=rows, p=[0.25, 0.01, 0.49, 0.25])
    return pa.table({
        "l_returnflag": pa.array(np.array(["A", "N", "N", "R"])[group]),
        "l_linestatus": pa.array(np.array(["F", "F", "O", "F"])[group]),
        "l_quantity": decimal_15_2(rng.integers(1, 51, rows) * 100),
        "l_extendedprice": decimal_15_2(rng.integers(90_000, 10_495_000, rows)),
        "l_discount": decimal_15_2(rng.integers(0, 11, rows)),
    })


def pyarrow_simple(table):
    return table.group_by("key").aggregate([("value", "sum"), ("value", "count"), ("value", "mean")])


def pyarrow_q1(table):
    return table.group_by(Q1_KEYS).aggregate(
        [(c, "sum") for c in Q1_VALUES] + [(c, "mean") for c in Q1_VALUES] + [([], "count_all")])


def check_simple(table, executor):
    ours = sn.aggregate(table, ["key"], SIMPLE_AGGREGATIONS, executor=executor).sort_by("key")
    theirs = pyarrow_simple(table).sort_by("key")
    assert ours.column("key").equals(theirs.column("key"))
    assert ours.column("value_count").equals(theirs.column("value_count"))
    assert np.allclose(ours.column("value_sum").to_numpy(), theirs.column("value_sum").to_numpy())


def check_q1(table, executor):
    ours = sn.aggregate(table, Q1_KEYS, Q1_AGGREGATIONS, executor=executor).sort_by([(k, "ascending") for k in Q1_KEYS])
    theirs = pyarrow_q1(table).sort_by([(k, "ascending") for k in Q1_KEYS])
    counts = ours.column("count_order").to_pylist()
    assert counts == theirs.column("count_all").to_pylist()
    for column in Q1_VALUES:  # exact decimal sums (pyarrow's are decimal128(38, 2) too)
        sums = ours.column(f"sum_{column}").to_pylist()
        assert sums == theirs.column(f"{column}_sum").to_pylist(), column
        # our mean is float64; pyarrow's is decimal128(15, 2), rounded to the input's scale
        means = ours.column(f"avg_{column}").to_pylist()
        assert all(abs(m - float(s / n)) <= 1e-12 * abs(float(s / n)) for m, s, n in zip(means, sums, counts))
        assert all(abs(m - float(p)) <= 0.005 for m, p in zip(means, theirs.column(f"{column}_mean").to_pylist()))


def run_case(case, table, keys, aggregations, pyarrow_fn, check, duckdb_query, repeats, duckdb):
    million_rows = table.num_rows / 1e6
    for threads in (1, 2):
        pa.set_cpu_count(threads)
        with sn.MorselExecutor(threads=threads) as executor:
            check(table, executor)
            ours, theirs = interleaved_median_seconds(
                [lambda: sn.aggregate(table, keys, aggregations, executor=executor), lambda: pyarrow_fn(table)],
                repeats)
        name = f"{case}_{threads}_threads"
        report("groupby_local", f"{name}_vs_pyarrow", million_rows / ours, "M rows/s", million_rows / theirs, 1.0)
        if duckdb is not None:
            connection = duckdb.connect()
            connection.execute(f"SET threads TO {threads}")
            connection.register("data", table)
            connection.execute("CREATE TABLE native AS SELECT * FROM data")
            seconds = median_seconds(lambda: connection.sql(duckdb_query).to_arrow_table(), repeats)
            report("groupby_local", f"{name}_duckdb_vs_pyarrow", million_rows / seconds, "M rows/s",
                   million_rows / theirs, None)
            connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--q1-rows", type=int, default=6_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="1M_keys,100_keys,q1", help="comma-separated subset of the cases")
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        duckdb = None
    cases = args.cases.split(",")
    simple_query = "SELECT key, sum(value), count(value), avg(value) FROM native GROUP BY key"
    for keys, label in ((1_000_000, "1M_keys"), (100, "100_keys")):
        if label in cases:
            run_case(f"{args.rows // 1_000_000}M_rows_{label}", make_simple_table(args.rows, keys), ["key"],
                     SIMPLE_AGGREGATIONS, pyarrow_simple, check_simple, simple_query, args.repeats, duckdb)
    if "q1" in cases:
        q1_query = ("SELECT l_returnflag, l_linestatus, " + ", ".join(f"sum({c})" for c in Q1_VALUES) + ", "
                    + ", ".join(f"avg({c})" for c in Q1_VALUES) + ", count(*) FROM native GROUP BY ALL")
        run_case(f"tpch_q1_{args.q1_rows // 1_000_000}M_rows", make_q1_table(args.q1_rows), Q1_KEYS,
                 Q1_AGGREGATIONS, pyarrow_q1, check_q1, q1_query, args.repeats, duckdb)


if __name__ == "__main__":
    main()
