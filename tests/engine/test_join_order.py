"""The planner's estimates and its join order: reordered inner-join regions give duckdb's rows (and
columns, in their order) for chains, stars, cycles, residual conditions spanning three tables, cross
joins, computed and nullable keys; semi/anti joins moved below inner joins and aggregates restricted
to the groups a small side keeps give duckdb's rows too; estimates come near the true sizes on TPC-H
data; selective joins run first."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine_support import TPCH_TABLES, assert_same_rows, duckdb_rows, job_document, tpch_query

QUERIES = {
    "chain_with_filters": """
        SELECT f.id, d1.label, d2.label AS other, f.amount FROM facts f
        JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON d1.parent = d2.id
        WHERE d2.label IN ('b', 'c') AND f.amount > 10""",
    "star_select_star": """
        SELECT * FROM facts f, dim1 d1, dim2 d2, dim3 d3
        WHERE f.d1 = d1.id AND f.d2 = d2.id AND f.d3 = d3.id AND d3.flag""",
    "cycle": """
        SELECT f.id, d1.id AS a, d2.id AS b FROM facts f
        JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON f.d2 = d2.id AND d1.parent = d2.id""",
    "residual_over_three_tables": """
        SELECT f.id, d1.label, d2.label AS l2, d3.label AS l3 FROM facts f
        JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON f.d2 = d2.id JOIN dim3 d3 ON f.d3 = d3.id
        WHERE (d1.label = 'x' AND d2.label = 'b') OR (d3.label = 'q' AND f.amount < 50)""",
    "cross_join_and_filter": """
        SELECT d2.id, d3.id AS other, count(*) AS n FROM dim2 d2, dim3 d3, facts f
        WHERE f.d3 = d3.id AND d2.id < 3 GROUP BY d2.id, d3.id""",
    "computed_and_nullable_keys": """
        SELECT f.id, d1.label FROM facts f JOIN dim1 d1 ON f.d1 + 1 = d1.id + 1
        JOIN dim2 d2 ON coalesce(f.d2, -1) = d2.id JOIN dim3 d3 ON f.d3 = d3.id""",
    "inner_under_outer": """
        SELECT d3.id, count(x.id) AS n FROM dim3 d3 LEFT JOIN
          (SELECT f.id, f.d3 FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON d2.id = f.d2 WHERE d2.label <> 'a') x
          ON x.d3 = d3.id GROUP BY d3.id""",
    "in_subquery_under_joins": """
        SELECT f.id, d1.label, d2.label AS l2 FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON f.d2 = d2.id
        WHERE f.d3 IN (SELECT id FROM dim3 WHERE flag)""",
    "not_in_under_joins_with_null_keys": """
        SELECT f.id, d1.parent FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim3 d3 ON f.d3 = d3.id
        WHERE f.d2 NOT IN (SELECT id FROM dim2 WHERE label = 'a')""",
    "not_in_a_subquery_holding_null": """
        SELECT f.id FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim3 d3 ON f.d3 = d3.id
        WHERE d1.parent NOT IN (SELECT d2 FROM facts WHERE amount > 97)""",
    "not_exists_under_joins": """
        SELECT f.id, d2.label FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON d1.parent = d2.id
        WHERE NOT EXISTS (SELECT 1 FROM dim3 WHERE dim3.id = f.d3 AND dim3.flag)""",
    "in_subquery_over_keys_of_two_tables": """
        SELECT f.id FROM facts f JOIN dim1 d1 ON f.d1 = d1.id JOIN dim2 d2 ON f.d2 = d2.id
        WHERE f.d3 + d2.id IN (SELECT parent FROM dim1 WHERE label = 'x')""",
    # join inputs restricted to the keys a small filtered side holds (plan.key_filters): aggregates,
    # and the filtering side of IN / EXISTS / NOT EXISTS; never that of NOT IN (its NULLs decide)
    "exists_with_residual_over_a_small_side": """
        SELECT d.id FROM dim1 d WHERE d.label = 'z' AND EXISTS (SELECT 1 FROM facts f WHERE f.d1 = d.id AND f.amount > d.parent * 4)""",
    "not_exists_with_residual_over_a_small_side": """
        SELECT d.id FROM dim1 d WHERE d.label = 'z' AND d.parent < 12
        AND NOT EXISTS (SELECT 1 FROM facts f WHERE f.d1 = d.id AND f.amount > 90 + d.parent)""",
    "in_over_a_small_side": "SELECT d.id, d.parent FROM dim1 d WHERE d.label = 'y' AND d.id IN (SELECT d1 FROM facts WHERE amount > 40)",
    "not_in_over_a_small_side_null_in_subquery": """
        SELECT d.id FROM dim1 d WHERE d.label = 'x' AND d.id NOT IN (SELECT d1 FROM facts WHERE amount > 98)""",
    "not_in_over_a_small_side": """
        SELECT d.id FROM dim1 d WHERE d.label = 'x' AND d.id NOT IN (SELECT d1 FROM facts WHERE amount > 98 AND d1 IS NOT NULL)""",
    "correlated_avg_over_a_small_side": """
        SELECT f.id, f.amount FROM facts f JOIN dim1 dd ON f.d1 = dd.id
        WHERE dd.label = 'x' AND dd.parent < 6 AND f.amount > (SELECT avg(f2.amount) FROM facts f2 WHERE f2.d1 = dd.id)""",
    "grouped_subquery_joined_with_a_small_side": """
        SELECT d.id, s.total, s.kinds FROM (SELECT d1 AS k, sum(amount) AS total, count(DISTINCT d3) AS kinds FROM facts GROUP BY d1) s
        JOIN dim1 d ON s.k = d.id WHERE d.label = 'y' AND d.parent < 5""",
    "in_grouped_subquery_with_having": """
        SELECT d.id, d.label FROM dim1 d WHERE d.parent < 4 AND d.label IS NOT NULL
        AND d.id IN (SELECT d1 FROM facts GROUP BY d1 HAVING count(*) > 95)""",
    "same_table_twice": """
        SELECT a.id, b.id AS other FROM dim1 a JOIN dim1 b ON a.parent = b.parent JOIN dim2 d ON d.id = a.parent WHERE a.id < b.id""",
}


def _tables() -> dict[str, pa.Table]:
    rng = np.random.default_rng(11)
    rows = 20_000

    def keys(count: int, nulls: int) -> pa.Array:
        return pa.array([None if i % nulls == 0 else int(v) for i, v in enumerate(rng.integers(0, count + 3, rows))], pa.int64())

    facts = pa.table({"id": pa.array(np.arange(rows)), "d1": keys(200, 37), "d2": keys(20, 41), "d3": keys(6, 43),
                      "amount": pa.array(rng.integers(0, 100, rows))})  # fmt: skip
    dim1 = pa.table({"id": pa.array(np.arange(200)), "parent": pa.array([i % 20 for i in range(200)]),
                     "label": pa.array(["x", "y", "z", None][i % 4] for i in range(200))})  # fmt: skip
    dim2 = pa.table({"id": pa.array(np.arange(20)), "label": pa.array(["a", "b", "c", "d"][i % 4] for i in range(20))})
    dim3 = pa.table({"id": pa.array(np.arange(6)), "label": pa.array(list("pqrstu")), "flag": pa.array([True, False, None, True, True, False])})
    return {"facts": facts, "dim1": dim1, "dim2": dim2, "dim3": dim3}


@pytest.fixture(scope="module")
def star_tables(engine):
    return {name: engine.write(f"star_{name}", table, row_group_size=4096) for name, table in _tables().items()}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_reordered_joins_equal_duckdb(name, engine, star_tables):
    sql = QUERIES[name]
    result, ordered = engine.query(sql, star_tables)
    assert result.column_names == _duckdb_columns(sql, star_tables)
    assert_same_rows([tuple(row.values()) for row in result.to_pylist()], duckdb_rows(sql, star_tables), ordered)


def _duckdb_columns(sql: str, tables) -> list[str]:
    """The result's column names as duckdb stores them (a repeated name gets a suffix: id, id_1)."""
    import duckdb

    connection = duckdb.connect()
    for table, path in tables.items():
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    connection.execute(f"CREATE TABLE result AS {sql}")
    return [column[0] for column in connection.execute("SELECT * FROM result").description]


# ---------------------------------------------------------------------------------------- TPC-H


def _plan(tpch_sf001, number: int, agents: int = 2):
    from sabot_agent.jobspec import validate_job
    from sabot_agent.plan.job import plan_job_inputs

    inputs = {table: {"format": "parquet", "path": str(tpch_sf001 / f"{table}.parquet")} for table in TPCH_TABLES}
    job = validate_job(job_document(f"q{number}", inputs, tpch_sf001 / "out", agents=agents, sql=tpch_query(number)))
    plan, infos = plan_job_inputs(job, agents, 1)
    return plan, infos


def _joins_over(op, table: str) -> list:
    """The joins on the path from a stage's root down to its scan of `table`, lowest first."""
    from sabot_agent.plan import physical as P

    if isinstance(op, P.ScanOp):
        return [] if op.input == table else None
    for child in op.children:
        below = _joins_over(child, table)
        if below is not None:
            return below + ([op] if isinstance(op, P.JoinOp) else [])
    return None


def test_q7_joins_lineitem_with_the_two_nations_before_the_rest(tpch_sf001):
    """In the order the query names them lineitem meets orders first (all of its rows); the planner
    joins it first with whatever is already cut down to the two nations."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 7)
    stage = next(stage for stage in plan.stages if any(scan.input == "lineitem" for scan in P.scans(stage.root)))
    joins = _joins_over(stage.root, "lineitem")
    assert joins, "lineitem's stage joins nothing"
    assert "nation" in {scan.input for scan in _all_scans(plan, joins[0].right)}


def test_q18_keeps_the_orders_of_its_in_subquery_before_joining_lineitem(tpch_sf001):
    """The IN subquery's semi join sits on the orders scan, below the joins with customer and lineitem
    (written above them, it would first join all of lineitem with all of orders)."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 18)
    semis = [op for stage in plan.stages for op in _operators(stage.root) if isinstance(op, P.JoinOp) and op.kind == "semi"]
    assert len(semis) == 1
    assert [scan.input for scan in _all_scans(plan, semis[0].left)] == ["orders"]


def test_q17_averages_only_the_lineitems_of_the_parts_it_keeps(tpch_sf001):
    """The correlated average is computed over lineitems semi-joined with the filtered parts, not over
    every part's lineitems."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 17)
    aggregates = [stage.root for stage in plan.stages if isinstance(stage.root, P.AggregateOp) and stage.root.keys
                  and [scan.input for scan in P.scans(stage.root)] == ["lineitem"]]  # fmt: skip
    assert len(aggregates) == 1
    restricted = aggregates[0].input
    assert isinstance(restricted, P.JoinOp) and restricted.kind == "semi"
    assert [scan.input for scan in _all_scans(plan, restricted.right)] == ["part"]


def test_q4_shuffles_only_the_lineitems_of_the_orders_it_counts(tpch_sf001):
    """EXISTS over lineitem: its late lines are semi-joined with the keys of the quarter's orders
    before anything is shuffled."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 4)
    restricting = [op for stage in plan.stages for op in _operators(stage.root) if isinstance(op, P.JoinOp) and op.kind == "semi"
                   and [scan.input for scan in _all_scans(plan, op.left)] == ["lineitem"]]  # fmt: skip
    assert len(restricting) == 1
    assert [scan.input for scan in _all_scans(plan, restricting[0].right)] == ["orders"]


def test_q15_computes_its_view_once(tpch_sf001):
    """The view revenue0 is read twice (joined with supplier, and for its maximum): one stage scans
    lineitem and both readers read its exchange."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 15)
    scanning = [stage.id for stage in plan.stages if [scan.input for scan in P.scans(stage.root)] == ["lineitem"]]
    assert len(scanning) == 1
    assert len([read for stage in plan.stages for read in P.reads(stage.root) if read.stage == scanning[0]]) == 2


def test_small_broadcast_sides_are_read_by_every_agent_without_a_stage(tpch_sf001):
    """q7's nation, supplier and customer sides are replicated subtrees: no stage scans them."""
    from sabot_agent.plan import physical as P

    plan, _ = _plan(tpch_sf001, 7)
    assert not {"nation", "supplier", "customer"} & {scan.input for stage in plan.stages for scan in P.scans(stage.root)}
    assert {"nation", "supplier", "customer"} <= {scan.input for stage in plan.stages for scan in _all_scans(plan, stage.root)}


def _operators(op):
    """Every operator of a tree, replicated subtrees included."""
    yield op
    for child in op.children:
        yield from _operators(child)


def _all_scans(plan, op) -> list:
    """Scans of an operator tree, replicated ones included, and of every stage it reads."""
    from sabot_agent.plan import physical as P

    found = list(P.scans(op, into_replicated=True))
    for read in P.reads(op):
        found += _all_scans(plan, plan.stage(read.stage).root)
    return found


def test_estimates_come_near_the_true_sizes(tpch_sf001):
    """Selectivity of a date range, a join along a foreign key and a grouping on integer keys, against
    what duckdb counts on the same files (within a factor of 3)."""
    import duckdb

    from sabot_agent.plan import sql as S
    from sabot_agent.plan import logical as L
    from sabot_agent.plan.estimates import Estimator
    from sabot_agent.inputs import describe_input
    from sabot_agent.jobspec import InputSpec

    cases = {
        "SELECT l_orderkey FROM lineitem WHERE l_shipdate BETWEEN DATE '1995-01-01' AND DATE '1995-12-31'": None,
        "SELECT * FROM lineitem JOIN orders ON l_orderkey = o_orderkey WHERE o_orderdate < DATE '1994-01-01'": None,
        "SELECT c_nationkey, c_mktsegment, count(*) FROM customer WHERE c_nationkey < 10 GROUP BY c_nationkey, c_mktsegment": None,
        "SELECT s_suppkey FROM supplier JOIN nation ON s_nationkey = n_nationkey WHERE n_nationkey = 3": None,
    }
    paths = {table: tpch_sf001 / f"{table}.parquet" for table in TPCH_TABLES}
    infos = {table: describe_input(InputSpec(name=table, format="parquet", path=str(path))) for table, path in paths.items()}
    connection = duckdb.connect()
    for table, path in paths.items():
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    for sql in cases:
        query = S.plan_sql(sql, {table: info.schema for table, info in infos.items()})
        estimator = Estimator({table: info.stats for table, info in infos.items()})
        node = query.root
        while isinstance(node, L.Project):
            node = node.input
        estimated = estimator.of(node).rows
        actual = connection.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        assert actual / 3 <= estimated <= actual * 3, f"{sql}: estimated {estimated:.0f} rows, {actual} in fact"
