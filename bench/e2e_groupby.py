"""End-to-end group-by: `sabot run` with 2 agents on 10 M generated rows vs duckdb in one process.

Cases (one JSON line each: bench, case, value, unit, reference, ratio, goal, plus phases):
  keys_1m, keys_100             job wall time excluding process start (agents' clocks start once their
                                servers are up and end after the output part file is renamed into place),
                                i.e. it includes generating the input and writing Parquet output
  keys_1m_no_read, keys_100_no_read
                                the same minus the input-generation phase, the part duckdb gets for free
reference: duckdb (threads = cores) on the same rows already loaded in a native table, sum/count/mean
grouped by key, result materialized as Arrow. goal: ratio <= 1.3. duckdb is a bench extra
(`pip install duckdb`); without it the script says so and exits 2.

    python bench/e2e_groupby.py [--rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "agent"))

from sabot_agent.inputs import generate_table  # noqa: E402
from sabot_agent.jobspec import validate_job  # noqa: E402

AGENTS = 2


def job_doc(rows: int, keys: int, output: str) -> dict:
    return {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": f"bench-groupby-{keys}"},
        "spec": {
            "agents": AGENTS,
            "slotsPerAgent": 1,
            "pipeline": {
                "inputs": {
                    "data": {
                        "generate": {
                            "rows": rows,
                            "seed": 5,
                            "columns": {"k": {"type": "int64", "distinct": keys}, "v": {"type": "float64", "distinct": 1000}},
                        }
                    }
                },
                "shuffle": {"partitions": 16},
                "aggregate": {
                    "input": "data",
                    "groupBy": ["k"],
                    "aggregations": [
                        {"column": "v", "function": "sum", "as": "total"},
                        {"column": "v", "function": "count", "as": "n"},
                        {"column": "v", "function": "mean", "as": "average"},
                    ],
                },
                "output": {"format": "parquet", "path": output},
            },
        },
    }


def sabot_run(path: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(REPO, "agent"), os.path.join(REPO, "native"), env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", "run", path, "--json"], capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"sabot run failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def job_phases(summary: dict) -> tuple[float, float, dict]:
    """(job seconds excl. process start, the same without input generation, slowest agent's phase seconds)."""
    job = max(agent["seconds"] - agent["phases"]["connect"] for agent in summary["agents"])
    no_read = max(agent["seconds"] - agent["phases"]["connect"] - agent["phases"]["read"] for agent in summary["agents"])
    phases = {name: max(agent["phases"][name] for agent in summary["agents"]) for name in summary["agents"][0]["phases"]}
    return job, no_read, phases


def duckdb_seconds(doc: dict, repeats: int) -> tuple[float, int]:
    import duckdb

    table = generate_table(validate_job(doc).inputs["data"])
    connection = duckdb.connect()
    connection.execute(f"SET threads = {len(os.sched_getaffinity(0))}")
    connection.register("source", table)
    connection.execute("CREATE TABLE data AS SELECT * FROM source")
    query = "SELECT k, sum(v) AS total, count(v) AS n, avg(v) AS average FROM data GROUP BY k"
    timings, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = connection.execute(query).to_arrow_table().num_rows
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import duckdb  # noqa: F401
    except ImportError:
        print("e2e_groupby: duckdb is not installed (pip install duckdb, the bench extra); it is the reference", file=sys.stderr)
        return 2
    for keys, label in ((1_000_000, "keys_1m"), (100, "keys_100")):
        with tempfile.TemporaryDirectory() as workdir:
            doc = job_doc(args.rows, keys, os.path.join(workdir, "out"))
            path = os.path.join(workdir, "job.yaml")
            with open(path, "w") as handle:
                yaml.safe_dump(doc, handle)
            runs = [sabot_run(path) for _ in range(args.repeats)]
            reference, reference_rows = duckdb_seconds(doc, args.repeats)
        if any(run["rows_out"] != reference_rows for run in runs):
            raise RuntimeError(f"{label}: sabot produced {[run['rows_out'] for run in runs]} groups, duckdb {reference_rows}")
        measured = sorted((job_phases(run) for run in runs), key=lambda item: item[0])
        job, no_read, phases = measured[len(measured) // 2]
        no_read = statistics.median(item[1] for item in measured)
        for case, value in ((label, job), (f"{label}_no_read", no_read)):
            line = {"bench": "e2e_groupby", "case": case, "value": round(value, 4), "unit": "s", "reference": round(reference, 4),
                    "ratio": round(value / reference, 3), "goal": 1.3, "phases": {name: round(s, 4) for name, s in phases.items()}}  # fmt: skip
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
