"""Jobs on a real S3 server (SeaweedFS): Parquet, CSV and Arrow IPC inputs read from it, results
written to it, equal to the same job on local files; bad credentials, an unknown bucket and an
unreachable endpoint refused before any agent starts, in one line that holds no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from engine_support import assert_same_rows, duckdb_rows
from helpers import agent_processes, child_env, require_native

SQL = "SELECT g, count(*) AS n, sum(v) AS total, min(s) AS first FROM t WHERE v > 2 GROUP BY g"


def _table(rows: int = 6000) -> pa.Table:
    return pa.table({"g": pa.array([i % 13 for i in range(rows)], pa.int64()), "v": pa.array([i % 11 for i in range(rows)], pa.int64()),
                     "s": pa.array([f"s{i % 101}" for i in range(rows)])})  # fmt: skip


def _write(filesystem, directory: str, file_format: str, table: pa.Table) -> None:
    filesystem.create_dir(directory, recursive=True)
    for index in range(3):
        piece = table.slice(index * table.num_rows // 3, table.num_rows // 3)
        with filesystem.open_output_stream(f"{directory}/part-{index}.{file_format}") as sink:
            if file_format == "parquet":
                pq.write_table(piece, sink, row_group_size=500)
            elif file_format == "csv":
                pa_csv.write_csv(piece, sink)
            else:
                with pa.ipc.new_file(sink, piece.schema) as writer:
                    writer.write_table(piece, max_chunksize=700)


def _job(tmp_path, name: str, source: str, file_format: str, output: str, endpoint: str | None) -> str:
    spec = {"agents": 2, "pipeline": {"inputs": {"t": {"format": file_format, "path": source}}, "sql": SQL,
                                      "output": {"format": "parquet", "path": output}}}  # fmt: skip
    if endpoint:
        spec["storage"] = {"s3": {"endpoint": endpoint, "region": "us-east-1"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "sabot.io/v1alpha1", "kind": "SabotJob", "metadata": {"name": name}, "spec": spec}))
    return str(path)


def _sabot(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sabot_agent.cli", *args], capture_output=True, text=True, env={**child_env(), **env},
                          timeout=300)  # fmt: skip


def _credentials(s3_server) -> dict:
    """Only the keys: the endpoint comes from the job's spec.storage.s3, not from the environment."""
    return {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.mark.parametrize("file_format", ["parquet", "csv", "ipc"])
def test_a_job_reads_from_and_writes_to_s3_like_on_local_files(file_format, s3_server, s3_fs, s3_bucket, tmp_path):
    require_native()
    table = _table()
    _write(s3_fs, f"{s3_bucket}/in", file_format, table)
    local = tmp_path / "in"
    _write(__import__("pyarrow.fs", fromlist=["LocalFileSystem"]).LocalFileSystem(), str(local), file_format, table)
    env = _credentials(s3_server)
    on_s3 = _sabot(env, "run", _job(tmp_path, f"s3-{file_format}", f"s3://{s3_bucket}/in/", file_format, f"s3://{s3_bucket}/out/", s3_server.url),
                   "--json")  # fmt: skip
    assert on_s3.returncode == 0, on_s3.stderr[-2000:]
    locally = _sabot({}, "run", _job(tmp_path, f"local-{file_format}", str(local), file_format, str(tmp_path / "out"), None), "--json")
    assert locally.returncode == 0, locally.stderr[-2000:]
    manifest = json.loads(s3_fs.open_input_stream(f"{s3_bucket}/out/_SUCCESS").read())
    s3_rows = []
    for part in manifest["parts"]:
        with s3_fs.open_input_file(f"{s3_bucket}/out/{part['name']}") as handle:
            s3_rows += [tuple(row.values()) for row in pq.read_table(handle).to_pylist()]
    local_rows = [tuple(row.values()) for name in sorted(os.listdir(tmp_path / "out")) if name.startswith("part-")
                  for row in pq.read_table(tmp_path / "out" / name).to_pylist()]  # fmt: skip
    assert_same_rows(s3_rows, local_rows, ordered=False)
    if file_format == "parquet":
        assert_same_rows(s3_rows, duckdb_rows(SQL.replace("FROM t", "FROM t"), {"t": local}), ordered=False)
    # the result is read back from S3 by `sabot results`
    shown = _sabot(env, "results", _job(tmp_path, f"s3-{file_format}", f"s3://{s3_bucket}/in/", file_format, f"s3://{s3_bucket}/out/", s3_server.url))
    assert shown.returncode == 0 and f"{manifest['rows']:,} rows in 2 parts" in shown.stdout


@pytest.mark.parametrize("problem", ["wrong key", "unknown bucket", "unreachable endpoint"])
def test_s3_problems_are_one_line_before_any_agent_starts(problem, s3_server, s3_fs, s3_bucket, tmp_path):
    require_native()
    _write(s3_fs, f"{s3_bucket}/in", "parquet", _table(300))
    env, endpoint, bucket = _credentials(s3_server), s3_server.url, s3_bucket
    if problem == "wrong key":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-" + s3_server.secret_key[:4]
    elif problem == "unknown bucket":
        bucket = "no-such-bucket-here"
    else:
        endpoint = "http://127.0.0.1:9"
    path = _job(tmp_path, f"bad-{problem.split()[0]}", f"s3://{bucket}/in/", "parquet", f"s3://{bucket}/out/", endpoint)
    completed = _sabot(env, "run", path)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sabot: invalid SabotJob: spec.pipeline.inputs.t.path:"), lines
    for secret in (s3_server.secret_key, env["AWS_SECRET_ACCESS_KEY"], s3_server.access_key):
        assert secret not in completed.stderr
    assert not agent_processes(path)
