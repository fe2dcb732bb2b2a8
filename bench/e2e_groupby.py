"""End-to-end group-by: `sabot run` with 2 agents on 10 M generated rows vs duckdb in one process.

Both sides start from the same data and produce the same artifact, so the ratio compares like with like:
  input   the job's generator (sabot_agent.inputs, seed 5) produces the 10 M rows once, before anything is
          timed, and the bench writes them as INPUT_FILES Arrow IPC files (page-cached after writing). The
          sabot job reads them as an `ipc` input (each agent reads its share of the files); the duckdb
          reference reads the same files with pyarrow (memory-mapped) and scans them as an Arrow table.
          Generation itself is not timed on either side (it would be an identical cost for both and is
          not part of the engine under test; the agents' generation phase is measured by `sabot run`
          on a generated input and appears in examples/, not here).
  output  both write the grouped result (k, sum, count, mean) as Parquet: the agents their part files
          (temp + rename), duckdb one file with COPY ... TO ... (FORMAT parquet).
Cases (one JSON line each: bench, case, value, unit, reference, ratio, goal, phases):
  keys_1m, keys_100   job wall time excluding process start: each agent's clock starts once its servers
                      are up and every peer answered (the `connect` phase is subtracted) and ends after its
                      part file is renamed into place; the slowest agent counts. The median of --repeats
                      runs; `phases` are that run's per-phase seconds of the slowest agent.
reference: duckdb (threads = cores), read the IPC files + group-by + write Parquet, median of --repeats.
ratio = value / reference; goal: ratio <= 1.3. duckdb is a bench extra (`pip install duckdb`); without it
the script says so and exits 2.

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

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import job_phases  # noqa: E402
from sabot_agent.inputs import generate_table  # noqa: E402
from sabot_agent.jobspec import validate_job  # noqa: E402

AGENTS = 2
# files of the input; agent i of N reads every file whose position is i modulo N
INPUT_FILES = 4
# record batches per file are the generator's size (1 M rows)
INPUT_BATCH_ROWS = 1 << 20


def generated_doc(rows: int, keys: int, output: str) -> dict:
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


def write_input(rows: int, keys: int, directory: str) -> None:
    """Generate the rows once (the job generator, seed 5) and write them as INPUT_FILES IPC files."""
    table = generate_table(validate_job(generated_doc(rows, keys, directory)).inputs["data"])
    os.makedirs(directory, exist_ok=True)
    step = -(-table.num_rows // INPUT_FILES)
    for index in range(INPUT_FILES):
        piece = table.slice(index * step, step)
        with pa.OSFile(os.path.join(directory, f"part-{index:03d}.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(piece, max_chunksize=INPUT_BATCH_ROWS)


def job_doc(rows: int, keys: int, input_dir: str, output: str) -> dict:
    """The benchmark job: the generated rows, read from the IPC files written by write_input."""
    doc = generated_doc(rows, keys, output)
    doc["spec"]["pipeline"]["inputs"]["data"] = {"format": "ipc", "path": input_dir}
    return doc


def sabot_run(path: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(REPO, "agent"), os.path.join(REPO, "native"), env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", "run", path, "--json"], capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"sabot run failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def duckdb_seconds(input_dir: str, output: str, repeats: int) -> tuple[float, int]:
    """Median seconds of: read the same IPC files (pyarrow, memory-mapped), group by in duckdb, write Parquet."""
    import duckdb

    connection = duckdb.connect()
    connection.execute(f"SET threads = {len(os.sched_getaffinity(0))}")
    query = "SELECT k, sum(v) AS total, count(v) AS n, avg(v) AS average FROM source GROUP BY k"
    timings = []
    for run in range(repeats):
        path = f"{output}-{run}.parquet"
        started = time.perf_counter()
        # the same reader as the agents' (memory-mapped IPC, see sabot_agent.inputs.open_dataset)
        source = ds.dataset(input_dir, format="ipc", filesystem=pafs.LocalFileSystem(use_mmap=True)).to_table()  # noqa: F841
        connection.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet)")
        timings.append(time.perf_counter() - started)
        del source
    rows = pq.read_metadata(f"{output}-0.parquet").num_rows
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
            input_dir = os.path.join(workdir, "input")
            write_input(args.rows, keys, input_dir)
            doc = job_doc(args.rows, keys, input_dir, os.path.join(workdir, "out"))
            path = os.path.join(workdir, "job.yaml")
            with open(path, "w") as handle:
                yaml.safe_dump(doc, handle)
            runs = [sabot_run(path) for _ in range(args.repeats)]
            reference, reference_rows = duckdb_seconds(input_dir, os.path.join(workdir, "duckdb"), args.repeats)
        if any(run["rows_out"] != reference_rows for run in runs):
            raise RuntimeError(f"{label}: sabot produced {[run['rows_out'] for run in runs]} groups, duckdb {reference_rows}")
        measured = sorted((job_phases(run) for run in runs), key=lambda item: item[0])
        job, phases = measured[len(measured) // 2]
        line = {"bench": "e2e_groupby", "case": label, "value": round(job, 4), "unit": "s", "reference": round(reference, 4),
                "ratio": round(job / reference, 3), "goal": 1.3, "phases": {name: round(s, 4) for name, s in phases.items()}}  # fmt: skip
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
