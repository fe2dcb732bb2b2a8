"""Multi-stage plans through `sabot run` with 1, 2 and 3 agents, on data with nulls, skew, unicode
strings, decimals, dates and timestamps, against duckdb on the same Parquet files."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pyarrow as pa
import pytest

from engine_support import assert_same_rows, duckdb_rows, job_document, result_rows, sabot_run, write_split

QUERIES = {
    "join_then_aggregate": """
        SELECT c.region, count(*) AS orders, sum(o.amount) AS total, avg(o.amount) AS mean, max(o.placed) AS latest
        FROM orders o JOIN customers c ON o.customer = c.id
        GROUP BY c.region""",
    "aggregate_then_join": """
        SELECT c.name, t.total, t.n FROM
          (SELECT customer, sum(amount) AS total, count(*) AS n FROM orders GROUP BY customer) t
          JOIN customers c ON c.id = t.customer
        WHERE t.n > 2""",
    "two_joins": """
        SELECT r.label, c.tier, sum(o.amount) AS total, count(DISTINCT o.customer) AS buyers
        FROM orders o JOIN customers c ON o.customer = c.id JOIN regions r ON r.code = c.region
        GROUP BY r.label, c.tier""",
    "semi_and_anti": """
        SELECT id, name FROM customers c
        WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id AND o.amount > 500)
          AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id AND o.status = 'returned')""",
    "in_and_not_in_with_nulls": """
        SELECT id FROM customers
        WHERE region IN (SELECT code FROM regions WHERE label LIKE '%o%')
          AND tier NOT IN (SELECT tier FROM customers WHERE name LIKE 'Z%')""",
    "broadcast_join_left": """
        SELECT o.id, o.amount, r.label FROM orders o
        LEFT JOIN regions r ON r.code = o.region AND r.code <> 'n0'""",
    "full_join": """
        SELECT c.id AS customer, t.n FROM customers c
        FULL JOIN (SELECT customer, count(*) AS n FROM orders WHERE status = 'open' GROUP BY customer) t ON t.customer = c.id""",
    "order_by_limit": """
        SELECT customer, placed, amount FROM orders
        WHERE amount IS NOT NULL ORDER BY amount DESC, placed ASC, customer NULLS FIRST LIMIT 25""",
    "union_distinct": """
        SELECT region AS code FROM customers UNION SELECT code FROM regions
        UNION ALL SELECT DISTINCT status FROM orders""",
    "scalar_subquery_and_case": """
        SELECT status, count(*) AS n, sum(above) AS above FROM
          (SELECT status, CASE WHEN amount > (SELECT avg(amount) FROM orders) THEN 1 ELSE 0 END AS above FROM orders) t
        GROUP BY status ORDER BY status NULLS LAST""",
}


def _tables(rows: int = 4000, seed: int = 3) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    customers = 300
    names = ["Ålesund", "Zoë", "Ünal", "mañana", "東京", "Zed", "plain", "O'Brien"]
    region_codes = [f"n{i}" for i in range(12)]
    skewed = np.where(rng.random(rows) < 0.4, 7, rng.integers(0, customers + 20, rows))  # customer 7 is hot; some match nobody
    amount = pa.array([None if i % 97 == 0 else decimal.Decimal(int(v)).scaleb(-2) for i, v in enumerate(rng.integers(-5000, 100000, rows))],
                      pa.decimal128(12, 2))  # fmt: skip
    base = datetime.datetime(2020, 1, 1)
    orders = pa.table({
        "id": pa.array(np.arange(rows), pa.int64()),
        "customer": pa.array([None if i % 53 == 0 else int(v) for i, v in enumerate(skewed)], pa.int32()),
        "amount": amount,
        "status": pa.array([None if i % 41 == 0 else ["open", "shipped", "returned", "open"][int(v)] for i, v in enumerate(rng.integers(0, 4, rows))]),
        "placed": pa.array([base + datetime.timedelta(minutes=int(v)) for v in rng.integers(0, 10**6, rows)], pa.timestamp("us")),
        "region": pa.array([region_codes[int(v)] for v in rng.integers(0, len(region_codes), rows)]),
    })  # fmt: skip
    customers_table = pa.table({
        "id": pa.array(np.arange(customers), pa.int64()),
        "name": pa.array([f"{names[i % len(names)]}-{i}" for i in range(customers)]),
        "region": pa.array([None if i % 29 == 0 else region_codes[i % 10] for i in range(customers)]),
        "tier": pa.array([None if i % 31 == 0 else i % 4 for i in range(customers)], pa.int16()),
        "joined": pa.array([datetime.date(2019, 1, 1) + datetime.timedelta(days=i) for i in range(customers)], pa.date32()),
    })  # fmt: skip
    regions = pa.table({"code": pa.array(region_codes[:10] + [None]), "label": pa.array([f"label-{i}-ö" for i in range(10)] + ["none"])})
    return {"orders": orders, "customers": customers_table, "regions": regions}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # several files and row groups, so every agent gets a share
    return write_split(tmp_path_factory.mktemp("multistage"), _tables(), row_group_size=500)


@pytest.mark.parametrize("agents", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_multistage_query_equals_duckdb(name, agents, dataset, tmp_path):
    sql = QUERIES[name]
    inputs = {table: {"format": "parquet", "path": str(path)} for table, path in dataset.items()}
    job = job_document(name.replace("_", "-"), inputs, tmp_path / "out", agents=agents, slots=2, sql=sql)
    completed, summary = sabot_run(job, tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert_same_rows(result_rows(summary), duckdb_rows(sql, dataset), ordered="order by" in sql.lower())
