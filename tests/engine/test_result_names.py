"""Result column names as a SQL user reads them: an alias, a column's bare name, or the expression as
written without table qualifiers and with literals as written (not the planner's `Int64(1)`,
`Utf8("x")` or `Decimal128(...)`); tables named with the default schema (`public.t`) are the inputs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sabot_agent.plan.sql import plan_sql

TABLES = {"sales": pa.schema([("region", pa.string()), ("amount", pa.int64()), ("price", pa.decimal128(10, 2))]),
          "regions": pa.schema([("region", pa.string()), ("label", pa.string())])}  # fmt: skip

NAMES = [
    ("SELECT region, amount + 1, sum(amount) FROM sales GROUP BY region, amount + 1", ["region", "amount + 1", "sum(amount)"]),
    ("SELECT count(*), max(amount) * 2, 'x', 'it''s', price * 0.05, true, -1.5, 1.5e3 FROM sales GROUP BY price",
     ["count(*)", "max(amount) * 2", "'x'", "'it''s'", "price * 0.05", "true", "-1.5", "1500"]),
    ("SELECT s.amount * 2 AS doubled, s.region FROM sales s", ["doubled", "region"]),
    ('SELECT region, sum(amount) AS "sales.total" FROM sales GROUP BY region', ["region", "sales.total"]),
    ("SELECT s.region, r.region FROM sales s JOIN regions r ON s.region = r.region", ["region", "region_1"]),
    ("WITH t AS (SELECT region, amount * 2 AS a2 FROM sales) SELECT region, a2 + 1 FROM t", ["region", "a2 + 1"]),
    ("SELECT region FROM public.sales", ["region"]),
    ("SELECT amount FROM datafusion.public.sales WHERE amount > 3", ["amount"]),
]  # fmt: skip


@pytest.mark.parametrize("sql, names", NAMES)
def test_result_columns_are_named_as_written(sql, names):
    assert list(plan_sql(sql, TABLES).output_names) == names
