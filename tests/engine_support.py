"""Shared pieces of the engine tests and benchmarks: TPC-H data written by tpchgen-cli, a duckdb
reference over the same files, result comparison, and two ways to run a job: `sabot run` (real agent
processes over real Flight) and the engine in this process with one agent (for many small queries).
Import it as `from engine_support import ...` (tests/ is on sys.path; tests/engine/conftest.py holds
the fixtures)."""

from __future__ import annotations

import decimal
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from helpers import REPO, child_env

TPCH_TABLES = ("lineitem", "orders", "customer", "nation", "part", "partsupp", "supplier", "region")
TPCH_QUERIES = REPO / "examples" / "tpch" / "queries"
FLOAT_TOLERANCE = 1e-9


def write_tpch(directory: Path, scale: float, parts: int | None = None) -> Path:
    """TPC-H at a scale factor as tpchgen-cli writes it (string_view, decimal128, date32, int32): a file
    `<table>.parquet` each, or with `parts` a directory `<table>/` each, of up to that many files."""
    tool = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    split = ["--parts", str(parts)] if parts else []
    subprocess.run([tool, "parquet", "-s", f"{scale:g}", *split, "--output-dir", str(directory)], check=True, capture_output=True)
    return directory


def tpch_query(number: int) -> str:
    return (TPCH_QUERIES / f"q{number:02d}.sql").read_text()


def duckdb_rows(sql: str, tables: dict[str, Path]) -> list[tuple]:
    import duckdb

    connection = duckdb.connect()
    for name, path in tables.items():
        pattern = str(path) if path.is_file() else str(path / "*.parquet")
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}')")
    return connection.execute(sql).fetchall()


def same_value(ours, theirs, rel: float = FLOAT_TOLERANCE, abs_tol: float = 0.0) -> bool:
    """Equal as SQL results compare: exact for integers, decimals and strings; floats within `rel`
    relative (or `abs_tol`), NaN equal to NaN; NULL only equal to NULL."""
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if isinstance(ours, float) or isinstance(theirs, float):
        a, b = float(ours), float(theirs)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)
    if isinstance(ours, decimal.Decimal) or isinstance(theirs, decimal.Decimal):
        return decimal.Decimal(ours) == decimal.Decimal(theirs)
    return ours == theirs


def _sort_key(row: tuple):
    nan = [isinstance(value, float) and math.isnan(value) for value in row]  # NaN after every number (inf too)
    return tuple((value is None, str(type(value)), is_nan, 0.0 if is_nan else value) for value, is_nan in zip(row, nan))


def assert_same_rows(ours: list[tuple], theirs: list[tuple], ordered: bool) -> None:
    """Exact for integers, decimals and strings; floats within 1e-9 relative; order only when `ordered`."""
    if not ordered:
        ours, theirs = sorted(ours, key=_sort_key), sorted(theirs, key=_sort_key)
    assert len(ours) == len(theirs), f"{len(ours)} rows, expected {len(theirs)}: first {ours[:3]} vs {theirs[:3]}"
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b)), f"row {index}: {a} != {b}"


def write_split(directory: Path, tables: dict[str, pa.Table], **options) -> dict[str, Path]:
    """Each table as a folder of three Parquet files (several inputs, so every agent gets a share)."""
    paths = {}
    for name, table in tables.items():
        folder = directory / name
        folder.mkdir()
        step = -(-table.num_rows // 3)
        for index in range(3):
            pq.write_table(table.slice(index * step, step), folder / f"part-{index}.parquet", **options)
        paths[name] = folder
    return paths


def job_document(name: str, inputs: dict, output: Path, agents: int, slots: int = 1, **pipeline) -> dict:
    return {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": name},
        "spec": {"agents": agents, "slotsPerAgent": slots,
                 "pipeline": {"inputs": inputs, **pipeline, "output": {"format": "parquet", "path": str(output)}}},
    }  # fmt: skip


def sabot_run(job: dict, workdir: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    path = workdir / f"{job['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", "run", str(path), "--json", *extra], capture_output=True,
                               text=True, env=child_env(), cwd=workdir, timeout=600)  # fmt: skip
    lines = completed.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else None
    return completed, summary


def result_rows(summary: dict) -> list[tuple]:
    """The job's result, part file by part file (agent 0 writes the only file of an ordered result)."""
    rows = []
    for path in sorted(path for agent in summary["agents"] for path in agent["output_files"]):
        rows += [tuple(row.values()) for row in pq.read_table(path).to_pylist()]
    return rows


def result_table(summary: dict) -> pa.Table:
    tables = [pq.read_table(path) for path in sorted(p for agent in summary["agents"] for p in agent["output_files"])]
    return pa.concat_tables(tables) if tables else pa.table({})


class InProcessEngine:
    """The engine with one agent in this process: the same planner, stages, operators, kernels and
    partition store as an agent, without processes or Flight (one agent never fetches from a peer)."""

    def __init__(self, workdir: Path):
        import sabot_native

        self.workdir = workdir
        self.native = sabot_native
        self.executor = sabot_native.MorselExecutor(threads=1)
        self.slots = sabot_native.TaskSlotManager(slots=1)
        self._runs = 0

    def close(self) -> None:
        self.slots.close()
        self.executor.shutdown()

    def write(self, name: str, table: pa.Table, **options) -> Path:
        path = self.workdir / "tables" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, **options)
        return path

    def query(self, sql: str, tables: dict[str, Path]) -> tuple[pa.Table, bool]:
        """(the result, whether its order is part of the answer)."""
        from sabot_agent.engine.exchange import ExchangeReader
        from sabot_agent.engine.stages import StageRunner
        from sabot_agent.jobspec import validate_job
        from sabot_agent.plan.job import plan_job_inputs
        from sabot_agent.store import PartitionStore

        self._runs += 1
        inputs = {name: {"format": "parquet", "path": str(path)} for name, path in tables.items()}
        job = validate_job(job_document(f"inprocess-{self._runs}", inputs, self.workdir / "out", agents=1, sql=sql))
        plan, infos = plan_job_inputs(job, 1, 1)
        store = PartitionStore(None, str(self.workdir / "spill"), self.native.batch_checksum)
        reader = ExchangeReader(job.name, 0, 0, store, None, self.native.batch_checksum, lambda stage: [0], lambda stage: [], 30.0)
        runner = StageRunner(job=job, plan=plan, infos=infos, agent_index=0, agent_count=1, attempt=0, store=store, reader=reader,
                             slots=self.slots, slot_count=1, native=self.native, executor=self.executor, on_progress=lambda p: None)  # fmt: skip
        tables_out = runner.run()
        return (pa.concat_tables(tables_out) if tables_out else pa.table({})), plan.ordered
