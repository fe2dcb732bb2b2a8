"""SQL whose meaning DataFusion's plan does not carry as duckdb has it, and constructs that had no test
of their own, against duckdb on the same Parquet files: every query with one agent in this process,
those where two agents split the work through `sabot run` too. ORDER BY puts NULLs last by default in
both directions and NaN above every number (NULLs apart); the column of RIGHT/FULL JOIN ... USING is
COALESCE of both keys; INTERSECT/EXCEPT and IS NOT DISTINCT FROM take NULLs as equal; RIGHT and CROSS
joins, CAST and IS NULL; count(*) over tables of no columns; floats against decimal literals; REPLACE, GREATEST, LEAST and date_trunc;
expressions of a dictionary-encoded column over its NULL rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine_support import assert_same_rows, duckdb_rows, job_document, result_rows, sabot_run, write_split

QUERIES = {
    "full_join_using": "SELECT a, x FROM t FULL JOIN u USING (a)",
    "right_join_using_star": "SELECT * FROM t RIGHT JOIN u USING (a)",
    "natural_full_join": "SELECT * FROM t NATURAL FULL JOIN u",
    "full_join_using_filter_group": """
        SELECT a, count(*) AS n, count(x) AS xs FROM (SELECT a, x FROM t FULL JOIN u USING (a)) s
        WHERE a > 2 GROUP BY a""",
    "right_join_using_order": "SELECT a, b, x FROM t RIGHT JOIN u USING (a) ORDER BY a DESC, x LIMIT 5",
    "right_join_on": "SELECT t.id, t.a, u.a AS ua, u.x FROM t RIGHT JOIN u ON t.a = u.a AND u.x <> 'x1'",
    "cross_join": "SELECT t.id, u.x FROM t CROSS JOIN u WHERE t.id < 5",
    "cross_join_count": "SELECT count(*) AS n, count(t.a) AS ta, count(u.a) AS ua FROM t CROSS JOIN u",
    "cast_and_is_null": """
        SELECT id, CAST(a AS VARCHAR) AS s, CAST(a AS DOUBLE) AS d, CAST(b AS INTEGER) AS i,
               a IS NULL AS an, b IS NOT NULL AS bn, CAST(a AS DECIMAL(10, 2)) / 4 AS dec, CAST(v AS VARCHAR) IS NULL AS vn
        FROM t""",
    "where_is_null": "SELECT id FROM t WHERE a IS NULL OR (b IS NOT NULL AND v IS NULL)",
    "order_desc_default_nulls": "SELECT id, a FROM t ORDER BY a DESC, id",
    "order_asc_default_nulls": "SELECT id, a FROM t ORDER BY a, id DESC",
    "order_desc_limit": "SELECT a FROM t ORDER BY a DESC LIMIT 4",
    "order_explicit_nulls": "SELECT id, a FROM t ORDER BY a DESC NULLS FIRST, id LIMIT 6",
    "order_nan_asc_nulls_first": "SELECT id, v FROM t ORDER BY v ASC NULLS FIRST, id",
    "order_nan_desc": "SELECT id, v FROM t ORDER BY v DESC, id",
    "order_nan_desc_nulls_first_limit": "SELECT id, v FROM t ORDER BY v DESC NULLS FIRST, id LIMIT 7",
    "order_nan_asc_limit": "SELECT id, v FROM t ORDER BY v, id LIMIT 30 OFFSET 20",
    "intersect": "SELECT a, b FROM t INTERSECT SELECT a, CAST(y AS BIGINT) FROM u",
    "except": "SELECT a FROM t EXCEPT SELECT a FROM u",
    "except_intersect_floats": "SELECT v FROM t EXCEPT SELECT w FROM u INTERSECT SELECT v FROM t WHERE id > 10",
    "is_not_distinct_from_join": "SELECT t.id, u.x FROM t JOIN u ON t.a IS NOT DISTINCT FROM u.a",
    # count(*) reads no column: tables of N rows and no columns through scans, unions, limits and joins
    "count_star": "SELECT count(*) AS n FROM t",
    "count_star_having": "SELECT count(*) AS n FROM t HAVING count(*) > 3",
    "count_union_all": "SELECT count(*) AS n FROM (SELECT a FROM t UNION ALL SELECT a FROM u) s",
    "count_cross_only": "SELECT count(*) AS n FROM t CROSS JOIN u",
    "count_limit_offset": "SELECT count(*) AS n FROM (SELECT id FROM t LIMIT 10 OFFSET 55) s",
    # a filtered scan keeps only the columns above it read: none, or not those only its predicate reads
    "count_star_where": "SELECT count(*) AS n FROM t WHERE a > 2 OR v IS NULL",
    "predicate_only_columns": "SELECT id * 2 AS twice FROM t WHERE (a IS NULL OR b > 1) AND NOT (v > 0.5)",
    # expressions of one dictionary-encoded column, NULL rows included (evaluated per dictionary value)
    "dictionary_null_handling": """
        SELECT id, s IS NULL AS n, coalesce(s, 'none') AS c, upper(s) AS up FROM t
        WHERE s IS NULL OR s LIKE '%b%' OR coalesce(s, '') = 'zz2'""",
    "dictionary_case_and_not_in": """
        SELECT id, CASE WHEN s = 'ab' THEN 1 WHEN s IS NULL THEN 2 ELSE 3 END AS k FROM t
        WHERE NOT (s IN ('b', 'ca')) OR s IS NULL""",
    "dictionary_group_by": "SELECT s, count(*) AS n, min(id) AS first FROM t WHERE s <> 'zz1' AND a > 1 GROUP BY s",
    # decimal arithmetic is exact up to 38 digits (native 128-bit kernels), also for Q1's chained products
    "decimal_products_near_38_digits": """
        SELECT id, CAST(id AS DECIMAL(38, 0)) * CAST('100000000000000000000000000000000000' AS DECIMAL(38, 0)) AS big,
               (CAST(v AS DECIMAL(15, 2)) * (1 - CAST(b AS DECIMAL(15, 2)))) * (1 + CAST(a AS DECIMAL(15, 2))) AS chained,
               CAST(a AS DECIMAL(12, 4)) - CAST(b AS DECIMAL(7, 1)) + 0.5 AS mixed
        FROM t WHERE id < 99 AND v BETWEEN -100 AND 100""",
    # a float compared with or combined with a decimal literal is a float (inf, NaN, no rounding)
    "float_vs_decimal_literal": "SELECT id, v FROM t WHERE v = 1.5 OR v IN (0.5, -2) OR v > 3.25 OR v BETWEEN -1.5 AND -0.5",
    "replace_greatest_least": """
        SELECT id, greatest(a, b) AS g, least(a, b) AS l, greatest(v, 0.5) AS gv, least(v, 0.5) AS lv,
               replace(CAST(a AS VARCHAR), '1', 'one') AS r, replace(CAST(b AS VARCHAR), '', 'z') AS e FROM t""",
    "date_trunc": """
        SELECT x, date_trunc('month', seen) AS m, date_trunc('hour', seen) AS h, date_trunc('week', seen) AS w,
               date_trunc('quarter', CAST(seen AS DATE)) AS q FROM u""",
    "float_with_decimal_literal": "SELECT id, v * 1.5 AS w, coalesce(v, 2.5) AS c, CASE WHEN v > 0.5 THEN 1 END AS k FROM t",
}


def _tables() -> dict[str, pa.Table]:
    rows = 60
    specials = {3: float("nan"), 4: None, 5: -0.0, 6: float("inf"), 7: float("-inf")}
    t = pa.table({
        "id": pa.array(range(rows), pa.int64()),
        "a": pa.array([None if i % 7 == 0 else i % 11 for i in range(rows)], pa.int64()),
        "b": pa.array([None if i % 5 == 0 else i % 3 for i in range(rows)], pa.int32()),
        "v": pa.array([specials.get(i % 9, (i % 13) * 0.5 - 2) for i in range(rows)], pa.float64()),
        # few distinct values: read as dictionaries (each file's own), compared as dictionaries by scans
        "s": pa.array([None if i % 8 == 0 else ["ab", "b", "ca", "12", f"zz{i // 20}"][i % 5] for i in range(rows)]),
    })  # fmt: skip
    u = pa.table({
        "a": pa.array([None if i % 6 == 0 else i % 15 for i in range(30)], pa.int32()),
        "x": pa.array([f"x{i % 4}" for i in range(30)]),
        "y": pa.array([None if i % 4 == 0 else i % 3 for i in range(30)], pa.int16()),
        "w": pa.array([specials.get(i % 9, (i % 5) * 0.5 - 2) for i in range(30)], pa.float64()),
        "seen": pa.array([None if i % 8 == 0 else 1_700_000_000_000_000 + i * 37_000_000_000 for i in range(30)], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    return {"t": t, "u": u}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("sqlsemantics"), _tables())


# where two agents split the work: joins of split sides, the per-agent top-k and its merge, set operations
TWO_AGENTS = ["full_join_using", "right_join_using_star", "full_join_using_filter_group", "right_join_using_order", "cross_join_count",
              "order_desc_limit", "order_nan_desc_nulls_first_limit", "order_nan_asc_limit", "intersect", "except", "count_star",
              "count_star_having", "count_union_all", "float_vs_decimal_literal", "dictionary_null_handling", "dictionary_group_by"]  # fmt: skip


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_sql_semantics_equal_duckdb(name, dataset, engine):
    sql = QUERIES[name]
    result, ordered = engine.query(sql, {table: path for table, path in dataset.items()})
    assert ordered == ("order by" in sql.lower())
    assert_same_rows([tuple(row.values()) for row in result.to_pylist()], duckdb_rows(sql, dataset), ordered=ordered)


@pytest.mark.parametrize("name", TWO_AGENTS)
def test_sql_semantics_with_two_agents_equal_duckdb(name, dataset, tmp_path):
    sql = QUERIES[name]
    inputs = {table: {"format": "parquet", "path": str(path)} for table, path in dataset.items()}
    job = job_document(name.replace("_", "-"), inputs, tmp_path / "out", agents=2, sql=sql)
    completed, summary = sabot_run(job, tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert_same_rows(result_rows(summary), duckdb_rows(sql, dataset), ordered="order by" in sql.lower())


def test_a_decimal_result_beyond_38_digits_is_an_error(dataset, engine):
    """No wrapped or rounded value: the query fails naming the overflow (duckdb fails too)."""
    import duckdb

    sql = "SELECT CAST(id AS DECIMAL(38, 0)) * CAST('10000000000000000000000000000000000000' AS DECIMAL(38, 0)) AS x FROM t WHERE id > 20"
    with pytest.raises(Exception, match="overflow"):
        engine.query(sql, {table: path for table, path in dataset.items()})
    with pytest.raises(duckdb.Error):
        duckdb_rows(sql, dataset)
