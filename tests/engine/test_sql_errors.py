"""Bad SQL is refused before anything starts: `sabot validate` and `sabot explain` exit 2 with one
line naming the problem (and where it is), and `sabot run` starts no agent."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine_support import child_env, job_document

CASES = {
    "syntax": ("SELECT a, b\nFROM t\nWHERE a >\n  GROUP BY a", "spec.pipeline.sql: syntax error at line 4, column 9: Expected: end of statement, found: BY"),
    "unknown table": ("SELECT a FROM missing", "spec.pipeline.sql: unknown table 'missing' (tables: t, u)"),
    "unknown column": ("SELECT a, nope FROM t", "spec.pipeline.sql: unknown column nope (columns: t.a, t.b"),
    "window": ("SELECT a, sum(a) OVER (PARTITION BY b) FROM t", "spec.pipeline.sql: window functions are not supported yet"),
    "grouping sets": ("SELECT a, b, count(*) FROM t GROUP BY ROLLUP (a, b)", "spec.pipeline.sql: GROUPING SETS, ROLLUP and CUBE are not supported yet"),
    "not a select": ("DROP TABLE t", "spec.pipeline.sql:"),
    "bad type": ("SELECT a + b FROM t", "spec.pipeline.sql:"),
    "syntax at the end": ("SELECT a\nFROM t WHERE\n  ", "spec.pipeline.sql: syntax error at line 2, column 13: Expected: an expression, found: EOF"),
    "unknown schema": ("SELECT a FROM other.t", "spec.pipeline.sql: unknown table 'other.t' (tables: t, u)"),
    "near miss": ("SELECT aa FROM t", "spec.pipeline.sql: unknown column aa, did you mean t.a? (columns: t.a, t.b)"),
    "intersect all": ("SELECT a FROM t INTERSECT ALL SELECT a FROM t", "spec.pipeline.sql: INTERSECT ALL and EXCEPT ALL are not supported yet"),
    "qualified using column": ("SELECT t.a FROM t FULL JOIN t AS v USING (a)",
                               "spec.pipeline.sql: t.a in a query with FULL JOIN ... USING (a) is not supported yet"),
}


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sqlerrors")
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), directory / "t.parquet")
    pq.write_table(pa.table({"c": [1.5]}), directory / "u.parquet")
    return directory


def _job(directory, sql: str):
    inputs = {"t": {"format": "parquet", "path": str(directory / "t.parquet")}, "u": {"format": "parquet", "path": str(directory / "u.parquet")}}
    path = directory / "job.yaml"
    path.write_text(yaml.safe_dump(job_document("bad-sql", inputs, directory / "out", agents=2, sql=sql)))
    return path


@pytest.mark.parametrize("command", ["validate", "explain", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_sql_is_one_line_before_anything_starts(case, command, job_dir):
    sql, expected = CASES[case]
    path = _job(job_dir, sql)
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", command, str(path)], capture_output=True, text=True,
                               env=child_env(), timeout=60)  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in completed.stderr and not (job_dir / "out").exists()
