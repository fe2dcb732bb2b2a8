"""The short `join` and `aggregate` forms with what SQL users would write by hand: key columns named
differently on the two sides (`leftOn`/`rightOn`), a right column whose name the left side has (suffix
`_right`), and a `where` condition — each equal to duckdb's answer to the equivalent SQL on the same
Parquet files, with NULL keys that never match."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine_support import assert_same_rows, duckdb_rows, job_document, result_table, sabot_run

DUCKDB_JOIN = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    directory = tmp_path_factory.mktemp("short-forms")
    orders = pa.table({
        "o_id": pa.array(range(3000), pa.int64()),
        "o_custkey": pa.array([None if i % 97 == 0 else i % 130 for i in range(3000)], pa.int64()),
        "v": pa.array([i * 0.5 for i in range(3000)]),
        "status": pa.array(["open", "closed", "returned"] * 1000),
    })  # fmt: skip
    customers = pa.table({
        "c_custkey": pa.array([None] + list(range(5, 120)), pa.int64()),
        "v": pa.array([float(i) for i in range(116)]),
        "c_name": pa.array([f"cüstomer-{i}" for i in range(116)]),
    })  # fmt: skip
    paths = {"orders": directory / "orders.parquet", "customers": directory / "customers.parquet"}
    pq.write_table(orders, paths["orders"], row_group_size=700)
    pq.write_table(customers, paths["customers"])
    return paths


def inputs_of(paths) -> dict:
    return {name: {"format": "parquet", "path": str(path)} for name, path in paths.items()}


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
def test_join_on_differently_named_keys_with_where(tables, tmp_path, how):
    join = {"left": "orders", "right": "customers", "leftOn": ["o_custkey"], "rightOn": ["c_custkey"], "how": how,
            "where": "status <> 'returned' OR status IS NULL"}  # fmt: skip
    completed, summary = sabot_run(job_document(f"join-{how}", inputs_of(tables), tmp_path / "out", agents=2, join=join), tmp_path)
    assert completed.returncode == 0, completed.stderr
    result = result_table(summary)
    assert result.column_names == ["o_id", "o_custkey", "v", "status", "c_custkey", "v_right", "c_name"]
    expected = duckdb_rows(
        f"SELECT o.o_id, o.o_custkey, o.v, o.status, c.c_custkey, c.v AS v_right, c.c_name FROM orders o {DUCKDB_JOIN[how]} customers c "
        "ON o.o_custkey = c.c_custkey WHERE o.status <> 'returned' OR o.status IS NULL", tables)  # fmt: skip
    assert_same_rows([tuple(row.values()) for row in result.to_pylist()], expected, ordered=False)


def test_aggregate_with_where(tables, tmp_path):
    aggregate = {"input": "orders", "groupBy": ["o_custkey"], "where": "v >= 100 AND status IN ('open', 'closed')",
                 "aggregations": [{"column": "v", "function": "sum"}, {"column": "o_id", "function": "count", "as": "n"}]}  # fmt: skip
    completed, summary = sabot_run(job_document("aggregate-where", inputs_of(tables), tmp_path / "out", agents=2, aggregate=aggregate), tmp_path)
    assert completed.returncode == 0, completed.stderr
    result = result_table(summary)
    expected = duckdb_rows("SELECT o_custkey, sum(v), count(o_id) FROM orders WHERE v >= 100 AND status IN ('open', 'closed') GROUP BY o_custkey",
                           tables)  # fmt: skip
    assert result.column_names[0] == "o_custkey" and result.column_names[2] == "n"
    assert_same_rows([tuple(row.values()) for row in result.to_pylist()], expected, ordered=False)
