"""TPC-H: each of the 22 queries with Sabot (2 agents), duckdb (2 threads) and DataFusion (2 target
partitions) on the same Parquet files written by tpchgen-cli, in one run.

    python bench/tpch.py [--scale 1] [--agents 2] [--repeats 3] [--queries 1,6,21] [--data DIR]

Timing. duckdb and DataFusion: the median of --repeats runs of the query (after one warm-up run),
read straight from the files. Sabot: `sabot run` of the query as a SabotJob; the time is the slowest
agent's job time (planning, connecting, every stage, writing the result) and excludes starting the
agent processes (Python and library imports, ~1 s here), as a benchmark of Spark or Ballista runs
against running executors; the JSON line also carries the whole `sabot run` wall time. Every Sabot
result is checked against duckdb's (the run fails on a difference).

Output: one JSON line per query {"bench", "case", "value" (Sabot seconds), "unit", "reference"
(duckdb seconds), "ratio" (value / reference), "datafusion", "datafusion_ratio", "wall"}, then a line
"geomean" with the geometric mean of the ratios. Goals: geometric mean <= 3, no query above 10.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from engine_support import TPCH_TABLES, assert_same_rows, result_rows, sabot_run, tpch_query, write_tpch  # noqa: E402

GOAL_GEOMEAN = 3.0
GOAL_WORST = 10.0


def tpch_data(scale: float, directory: Path | None) -> Path:
    """tpchgen-cli's files for the scale factor, generated once into the cache."""
    directory = directory or Path(os.environ.get("SABOT_CACHE", Path.home() / ".cache" / "sabot")) / "tpch" / f"sf{scale:g}"
    if not all((directory / f"{table}.parquet").exists() for table in TPCH_TABLES):
        directory.mkdir(parents=True, exist_ok=True)
        write_tpch(directory, scale)
    return directory


def duckdb_seconds(sql: str, data: Path, repeats: int) -> tuple[float, list[tuple]]:
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET threads = 2")
    for table in TPCH_TABLES:
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data / (table + '.parquet')}')")
    rows = connection.execute(sql).fetchall()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        connection.execute(sql).fetchall()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def datafusion_seconds(sql: str, data: Path, repeats: int) -> float:
    import datafusion

    config = datafusion.SessionConfig().with_target_partitions(2)
    context = datafusion.SessionContext(config)
    for table in TPCH_TABLES:
        context.register_parquet(table, str(data / f"{table}.parquet"))
    context.sql(sql).collect()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        context.sql(sql).collect()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def sabot_seconds(number: int, sql: str, data: Path, agents: int, repeats: int, workdir: Path) -> tuple[float, float, list[tuple]]:
    inputs = {table: {"format": "parquet", "path": str(data / f"{table}.parquet")} for table in TPCH_TABLES}
    job_times, walls, rows = [], [], []
    for run in range(repeats):
        job = {"apiVersion": "sabot.io/v1alpha1", "kind": "SabotJob", "metadata": {"name": f"tpch-q{number:02d}"},
               "spec": {"agents": agents, "slotsPerAgent": 1,
                        "pipeline": {"inputs": inputs, "sql": sql, "output": {"format": "parquet", "path": str(workdir / f"q{number}-{run}")}}}}  # fmt: skip
        started = time.perf_counter()
        completed, summary = sabot_run(job, workdir)
        walls.append(time.perf_counter() - started)
        if completed.returncode != 0:
            raise RuntimeError(f"q{number:02d}: sabot run failed: {completed.stderr.strip().splitlines()[-1:]}")
        job_times.append(max(agent["seconds"] for agent in summary["agents"]))
        rows = result_rows(summary)
    return statistics.median(job_times), statistics.median(walls), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if "-" in args.queries:
        first, last = args.queries.split("-")
        numbers = list(range(int(first), int(last) + 1))
    else:
        numbers = [int(n) for n in args.queries.split(",")]
    data = tpch_data(args.scale, args.data)
    ratios = []
    with tempfile.TemporaryDirectory() as workdir:
        for number in numbers:
            sql = tpch_query(number)
            reference, expected = duckdb_seconds(sql, data, args.repeats)
            fusion = datafusion_seconds(sql, data, args.repeats)
            value, wall, rows = sabot_seconds(number, sql, data, args.agents, args.repeats, Path(workdir))
            assert_same_rows(rows, expected, ordered="order by" in sql.lower())
            ratio = value / reference
            ratios.append(ratio)
            print(json.dumps({"bench": "tpch", "case": f"q{number:02d}", "value": round(value, 4), "unit": "s", "reference": round(reference, 4),
                              "ratio": round(ratio, 3), "datafusion": round(fusion, 4), "datafusion_ratio": round(value / fusion, 3),
                              "wall": round(wall, 3), "scale": args.scale, "agents": args.agents}), flush=True)  # fmt: skip
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(json.dumps({"bench": "tpch", "case": "geomean", "value": round(geomean, 3), "unit": "ratio", "worst": round(max(ratios), 3),
                      "goal": f"geomean <= {GOAL_GEOMEAN}, worst <= {GOAL_WORST}"}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
