"""The result is published all at once, never leaves a partial result behind and never touches files
it did not write: `sabot run` with real agent processes on local directories."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import agent_processes, child_env, require_native

ROWS = 3000


def write_input(directory, rows: int = ROWS, zero_at: int | None = None) -> None:
    """Three Parquet files of (k, v) rows; v is 0 only at row `zero_at` (a `k % v` fails there)."""
    directory.mkdir(parents=True, exist_ok=True)
    values = [1 + i % 7 for i in range(rows)]
    if zero_at is not None:
        values[zero_at] = 0
    table = pa.table({"k": pa.array(range(rows), pa.int64()), "v": pa.array(values, pa.int64())})
    for index in range(3):
        pq.write_table(table.slice(index * rows // 3, rows // 3), directory / f"part-{index}.parquet", row_group_size=250)


def job(tmp_path, name: str, output, sql: str = "SELECT k, v FROM t", agents: int = 2, mode: str | None = None, source=None) -> str:
    out = {"format": "parquet", "path": str(output), **({"mode": mode} if mode else {})}
    doc = {"apiVersion": "sabot.io/v1alpha1", "kind": "SabotJob", "metadata": {"name": name},
           "spec": {"agents": agents, "pipeline": {"inputs": {"t": {"format": "parquet", "path": str(source or tmp_path / "in")}},
                                                   "sql": sql, "output": out}}}  # fmt: skip
    path = tmp_path / f"{name}-{agents}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def sabot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sabot_agent.cli", *args], capture_output=True, text=True, env=child_env(), timeout=300)


def listing(directory) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_a_result_is_published_with_its_manifest_and_a_second_run_is_refused(tmp_path):
    require_native()
    write_input(tmp_path / "in")
    path = job(tmp_path, "publish", tmp_path / "out")
    assert sabot("run", path).returncode == 0
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert manifest["job"] == "publish" and manifest["rows"] == ROWS and [p["name"] for p in manifest["parts"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]
    before = listing(tmp_path / "out")
    again = sabot("run", path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already holds a result of job 'publish' (output.mode: overwrite replaces it)" in again.stderr
    assert listing(tmp_path / "out") == before and not agent_processes(path)
    shown = sabot("results", path, "--limit", "4")
    assert shown.returncode == 0 and f"{ROWS:,} rows in 2 parts" in shown.stdout and len(shown.stdout.strip().splitlines()) == 6


def test_overwrite_replaces_only_the_jobs_own_parts(tmp_path):
    require_native()
    write_input(tmp_path / "in")
    assert sabot("run", job(tmp_path, "again", tmp_path / "out", agents=3, mode="overwrite")).returncode == 0
    assert (tmp_path / "out" / "part-00002.parquet").exists()
    rerun = sabot("run", job(tmp_path, "again", tmp_path / "out", sql="SELECT k FROM t WHERE v = 1", agents=2, mode="overwrite"))
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"]
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    expected = sum(1 for i in range(ROWS) if 1 + i % 7 == 1)
    assert manifest["rows"] == expected == sum(pq.read_metadata(tmp_path / "out" / p["name"]).num_rows for p in manifest["parts"])


@pytest.mark.parametrize("mode", [None, "overwrite"])
def test_files_the_job_did_not_write_are_never_touched(tmp_path, mode):
    require_native()
    write_input(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    (tmp_path / "out" / "part-00001.parquet").write_bytes(b"another tool's file")
    completed = sabot("run", job(tmp_path, "foreign", tmp_path / "out", mode=mode))
    assert completed.returncode == 2 and "notes.txt, part-00001.parquet" in completed.stderr
    assert listing(tmp_path / "out") == {"notes.txt": b"mine", "part-00001.parquet": b"another tool's file"}


def test_an_output_that_is_the_jobs_own_input_is_refused(tmp_path):
    require_native()
    write_input(tmp_path / "in")
    before = listing(tmp_path / "in")
    for mode in (None, "overwrite"):
        completed = sabot("run", job(tmp_path, "self", tmp_path / "in", mode=mode))
        assert completed.returncode == 2 and "part-0.parquet, part-1.parquet, part-2.parquet" in completed.stderr
    assert listing(tmp_path / "in") == before


def test_a_failed_run_leaves_nothing_that_looks_like_a_result(tmp_path):
    """Agent 0's share holds the one row where `k % v` divides by zero; agent 1 finishes and stages
    its part; the run fails and the output location holds nothing (no manifest, parts or staging)."""
    require_native()
    write_input(tmp_path / "in", zero_at=ROWS // 3)
    path = job(tmp_path, "fails", tmp_path / "out", sql="SELECT k, k % v AS r FROM t")
    completed = sabot("run", path, "--json")
    assert completed.returncode == 1
    assert "division by zero" in json.loads(completed.stdout.strip().splitlines()[-1])["reason"]
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == {}
    assert not agent_processes(path)
    # and a later run of the job writes its result there (the failed one left nothing in the way)
    write_input(tmp_path / "in")
    assert sabot("run", path).returncode == 0 and (tmp_path / "out" / "_SUCCESS").exists()
