"""TPC-H on real pods (T2): queries of examples/tpch/queries as `spec.pipeline.sql` of a SabotJob, applied
with kubectl, run by 2 or 3 agent pods, equal to duckdb's answers on the same files.

The data is TPC-H at scale factor 0.01 written by tpchgen-cli, three files per table (so every agent
reads a share of the larger tables), uploaded to the tier's S3 server and read by the agents from there;
the result goes to S3 too and is read back by its `_SUCCESS` manifest. Compared as tests/engine/test_tpch.py
compares (engine_support.assert_same_rows): exact for integers, decimals, dates and strings, floats within
1e-9 relative, in order where the query orders. The three queries cover a correlated subquery (Q2: the
minimum supply cost per part, over a four-way join inside a five-way one), a six-way join (Q9) and
ORDER BY ... LIMIT (Q3, over a three-way join); each has a non-empty answer at this scale (Q17's, the
usual correlated example, is one NULL here). All 22 run locally in tests/engine/test_tpch.py. See
conftest.py for the fixtures and what makes the tier skip.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from engine_support import TPCH_TABLES, assert_same_rows, duckdb_rows, job_document, tpch_query, write_tpch
from test_realpods import on_real_pods, run_job

# (query, agents, the result's columns)
QUERIES = [
    pytest.param(2, 3, ["s_acctbal", "s_name", "n_name", "p_partkey", "p_mfgr", "s_address", "s_phone", "s_comment"],
                 id="q02-correlated-subquery"),
    pytest.param(9, 2, ["nation", "o_year", "sum_profit"], id="q09-six-way-join"),
    pytest.param(3, 3, ["l_orderkey", "revenue", "o_orderdate", "o_shippriority"], id="q03-order-by-limit"),
]


@pytest.fixture(scope="module")
def tpch_tables(tmp_path_factory) -> dict[str, Path]:
    """TPC-H SF 0.01, a directory of up to three Parquet files per table (on_real_pods uploads directories)."""
    root = write_tpch(tmp_path_factory.mktemp("tpch-sf001"), 0.01, parts=3)
    return {name: root / name for name in TPCH_TABLES}


@pytest.mark.parametrize("number, agents, columns", QUERIES)
def test_tpch_query_on_real_pods_equals_duckdb(realpods_cluster, operator, pod_s3, namespace, tpch_tables, number, agents, columns):
    sql = tpch_query(number)
    inputs = {name: {"format": "parquet", "path": str(path)} for name, path in tpch_tables.items()}
    job = job_document(f"tpch-q{number:02d}", inputs, Path("on-s3"), agents=agents, sql=sql)
    rewired, output = on_real_pods(realpods_cluster, pod_s3, namespace, job, inputs_on="s3")
    assert all(source["path"].startswith("s3://") for source in rewired["spec"]["pipeline"]["inputs"].values())
    started = time.monotonic()
    status, _ = run_job(realpods_cluster, namespace, rewired)
    elapsed = time.monotonic() - started

    assert status["attempt"] == 1 and sorted(a["index"] for a in status["agents"]) == list(range(agents))
    assert all(a["result"]["rowsIn"] > 0 for a in status["agents"]), status["agents"]  # every agent did a share
    manifest, table = pod_s3.read(output)
    assert status["output"] == {"uri": output, "rows": table.num_rows, "parts": len(manifest["parts"])}
    ordered = "order by" in sql.lower()
    if ordered:  # an ordered result is one file, written by agent 0
        assert [p["name"] for p in manifest["parts"]] == ["part-00000.parquet"], manifest
    assert table.column_names == columns
    expected = duckdb_rows(sql, tpch_tables)
    assert any(value is not None for row in expected for value in row), f"duckdb's answer proves nothing: {expected}"
    assert_same_rows([tuple(row.values()) for row in table.to_pylist()], expected, ordered)
    print(f"\n[realpods] TPC-H Q{number}: Succeeded in {elapsed:.1f}s on {agents} real pods, {table.num_rows} rows",
          file=sys.stderr)
