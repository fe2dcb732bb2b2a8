"""Bad input to `sabot run`, `sabot validate` and `sabot-agent`: one line on stderr naming the problem,
no traceback, exit code 2, and nothing started. A full spill disk and an unwritable termination log
are reported with the real reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import child_env, require_native

TIMEOUT = 120


def job_doc(name: str = "bad-input", agents: int = 1, rows: int = 1000) -> dict:
    return {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": name},
        "spec": {"agents": agents, "pipeline": {
            "inputs": {"d": {"generate": {"rows": rows, "columns": {"k": {"type": "int64", "distinct": rows // 2}, "v": {"type": "float64"}}}}},
            "shuffle": {"partitions": 4},
            "aggregate": {"input": "d", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum"}]},
            "output": {"format": "parquet", "path": "out/bad-input/"},
        }},
    }  # fmt: skip


@pytest.fixture
def job_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_doc()))
    return path


def run(tmp_path, module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> ARGS` with its own TMPDIR (where `sabot run` would put its work directory)."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
        env=dict(child_env(), TMPDIR=str(tmp_path / "tmp"), **(env or {})),
    )  # fmt: skip


def one_line_usage_error(completed: subprocess.CompletedProcess, expected: str) -> str:
    assert "Traceback" not in completed.stderr, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], completed.stderr
    assert completed.returncode == 2, completed.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_job_file_that_is_not_utf8_is_named(tmp_path, command):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(job_doc()).replace("bad-input", "caf\u00e9").encode("latin-1"))
    line = one_line_usage_error(run(tmp_path, "sabot_agent.cli", command, str(path)), "not UTF-8 text")
    assert str(path) in line and "byte 0xe9" in line


def test_a_duplicate_key_is_named_with_its_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("apiVersion: sabot.io/v1alpha1\nkind: SabotJob\nmetadata: {name: dup}\nspec:\n  agents: 2\n  agents: 3\n")
    one_line_usage_error(run(tmp_path, "sabot_agent.cli", "validate", str(path)), "line 6, column 3: not valid YAML: duplicate key 'agents'")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--agents", "1000000000"], "argument --agents: must be an integer from 1 to 1024, got '1000000000'"),
        (["--agents", "0"], "argument --agents: must be an integer from 1 to 1024"),
        (["--agents", "two"], "argument --agents: must be an integer"),
        (["--slots", "300"], "argument --slots: must be an integer from 1 to 256, got '300'"),
        (["--threads", "257"], "argument --threads: must be an integer from 1 to 256"),
        (["--memory-budget", "lots"], "argument --memory-budget: not a memory quantity: 'lots'"),
    ],
)
def test_sabot_run_rejects_bad_flags_before_starting_anything(tmp_path, job_file, flags, expected):
    completed = run(tmp_path, "sabot_agent.cli", "run", str(job_file), *flags)
    one_line_usage_error(completed, expected)
    assert not list((tmp_path / "tmp").iterdir()), "a work directory was created: agents were started"


def test_sabot_run_json_reports_a_bad_flag_too(tmp_path, job_file):
    completed = run(tmp_path, "sabot_agent.cli", "run", str(job_file), "--json", "--memory-budget", "lots")
    one_line_usage_error(completed, "not a memory quantity")
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Failed" and "argument --memory-budget: not a memory quantity: 'lots'" in summary["reason"]


@pytest.mark.parametrize(
    "flags, env, expected",
    [
        (["--agent-count", "0"], {}, "argument --agent-count: must be an integer from 1 to 1024"),
        (["--agent-count", "1025"], {}, "argument --agent-count: must be an integer from 1 to 1024"),
        (["--slots", "300"], {}, "argument --slots: must be an integer from 1 to 256"),
        (["--threads", "0"], {}, "argument --threads: must be an integer from 1 to 256"),
        (["--flight-port", "70000"], {}, "argument --flight-port: must be an integer from 0 to 65535"),
        (["--http-port", "-1"], {}, "argument --http-port: must be an integer from 0 to 65535"),
        (["--agent-index", "-1"], {}, "argument --agent-index: must be an integer from 0 to 1023"),
        (["--attempt", "-1"], {}, "argument --attempt: must be an integer from 0 to"),
        (["--memory-budget", "lots"], {}, "argument --memory-budget: not a memory quantity"),
        (["--startup-timeout", "0"], {}, "argument --startup-timeout: must be a number of seconds > 0"),
        ([], {"SABOT_AGENT_INDEX": "abc"}, "argument --agent-index: must be an integer from 0 to 1023, got 'abc'"),
        ([], {"SABOT_SLOTS": "1000"}, "argument --slots: must be an integer from 1 to 256, got '1000'"),
        (["--agent-index", "1"], {}, "--agent-index 1 is outside [0, 1)"),
    ],
)
def test_sabot_agent_rejects_bad_flags_and_variables_in_one_line(tmp_path, job_file, flags, env, expected):
    reason_file = tmp_path / "termination-log"
    completed = run(tmp_path, "sabot_agent", "--job", str(job_file), "--peers", "127.0.0.1:1", "--spill-dir", str(tmp_path / "spill"),
                    "--termination-log", str(reason_file), *flags, env=env)  # fmt: skip
    line = one_line_usage_error(completed, expected)
    assert line == f"sabot-agent: error: {reason_file.read_text().strip()}"


def test_an_unwritable_termination_log_never_hides_the_reason(tmp_path):
    """/dev/full: every write fails with ENOSPC. The reason stays the last line on stderr."""
    path = tmp_path / "dup.yaml"
    path.write_text("a: 1\na: 2\n")
    completed = run(tmp_path, "sabot_agent", "--job", str(path), "--termination-log", "/dev/full")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert lines[0] == "sabot-agent: cannot write termination log /dev/full: No space left on device"
    assert lines[-1].startswith("sabot-agent: error: ") and "duplicate key 'a'" in lines[-1], completed.stderr


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root to mount), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_an_output_on_a_read_only_filesystem_is_refused_before_anything_starts(tmp_path, tiny_tmpfs):
    """A read-only mount holding an old part file of this job (output.mode overwrite would replace it):
    one line naming the mount, exit 2, no agent started, the old file untouched."""
    (tiny_tmpfs / "out").mkdir()
    old_part = tiny_tmpfs / "out" / "part-00000.parquet"
    old_part.write_bytes(b"an earlier result")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    doc = job_doc("read-only")
    doc["spec"]["pipeline"]["output"] = {"format": "parquet", "path": str(tiny_tmpfs / "out" / "new"), "mode": "overwrite"}
    path = tmp_path / "read-only.yaml"
    path.write_text(yaml.safe_dump(doc))
    completed = run(tmp_path, "sabot_agent.cli", "run", str(path))
    one_line_usage_error(completed, f"sabot: spec.pipeline.output.path: output '{tiny_tmpfs / 'out' / 'new'}': {tiny_tmpfs / 'out'} is on a read-only filesystem")
    assert old_part.read_bytes() == b"an earlier result" and not list((tmp_path / "tmp").glob("sabot-*/agent-*"))


def test_a_full_spill_directory_is_the_reported_reason(tmp_path, tiny_tmpfs):
    """The spill directory, the agent's logs and its termination log share a 256 KiB filesystem (as in
    `sabot run`'s work directory) and a 16 KiB budget makes the agent spill far more than fits."""
    require_native()
    path = tmp_path / "spill.yaml"
    doc = job_doc("spill-full", rows=200_000)
    doc["spec"]["pipeline"]["output"]["path"] = str(tmp_path / "out")
    path.write_text(yaml.safe_dump(doc))
    completed = subprocess.run(
        [sys.executable, "-m", "sabot_agent.cli", "run", str(path), "--json", "--memory-budget", "16Ki"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path, env=dict(child_env(), TMPDIR=str(tiny_tmpfs)),
    )  # fmt: skip
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert completed.returncode == 1 and summary["status"] == "Failed", completed.stderr
    assert "spill directory " in summary["reason"] and summary["reason"].endswith(" is full: No space left on device"), summary
    assert str(tiny_tmpfs) in summary["reason"] and "termination log" not in summary["reason"]


@pytest.mark.parametrize("pipeline, expected", [
    ({"sql": "SELECT k, nope FROM d"}, "spec.pipeline.sql: unknown column nope (columns: d.k, d.v)"),
    ({"sql": "SELECT k, sum(v) OVER (PARTITION BY k) FROM d"}, "spec.pipeline.sql: window functions are not supported yet"),
    ({"aggregate": {"input": "d", "groupBy": ["kk"], "aggregations": [{"column": "v", "function": "sum"}]}},
     "spec.pipeline.aggregate.groupBy[0]: unknown column 'kk' in input 'd' (columns: k, v)"),
])  # fmt: skip
def test_sabot_agent_refuses_a_job_its_inputs_schemas_refute_with_exit_3(tmp_path, pipeline, expected):
    """What only the inputs' schemas show (the operator cannot read file inputs): one line, also in the
    termination log, and exit 3, which the operator does not retry."""
    require_native()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"k": [1, 2], "v": [0.5, 1.5]}), tmp_path / "d.parquet")
    doc = job_doc()
    doc["spec"]["pipeline"].pop("aggregate")
    doc["spec"]["pipeline"].update(pipeline, inputs={"d": {"format": "parquet", "path": str(tmp_path / "d.parquet")}})
    doc["spec"]["security"] = {"tls": "disabled"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    reason_file = tmp_path / "termination-log"
    completed = run(tmp_path, "sabot_agent", "--job", str(tmp_path / "job.yaml"), "--peers", "127.0.0.1:1", "--spill-dir", str(tmp_path / "spill"),
                    "--flight-port", "0", "--http-port", "0", "--termination-log", str(reason_file))  # fmt: skip
    assert completed.returncode == 3 and "Traceback" not in completed.stderr, completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == f"sabot-agent: error: {expected}", completed.stderr
    assert reason_file.read_text().strip() == expected


def test_sabot_agent_that_cannot_read_an_input_exits_2(tmp_path):
    """An input that cannot be read may be readable on the next attempt: a usage error (2), not 3."""
    doc = job_doc()
    doc["spec"]["pipeline"].update(inputs={"d": {"format": "parquet", "path": str(tmp_path / "missing.parquet")}})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    completed = run(tmp_path, "sabot_agent", "--job", str(tmp_path / "job.yaml"), "--termination-log", str(tmp_path / "log"))
    one_line_usage_error(completed, "spec.pipeline.inputs.d.path: cannot read parquet input")


def parquet_input_job(tmp_path, data_dir):
    """A job file whose input 'd' is the Parquet directory data_dir (holding one good file)."""
    data_dir.mkdir(exist_ok=True)
    pq.write_table(pa.table({"k": [1, 2], "v": [1.0, 2.0]}), data_dir / "good.parquet")
    doc = job_doc("bad-files")
    doc["spec"]["pipeline"]["inputs"]["d"] = {"format": "parquet", "path": str(data_dir)}
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("entry", ["dangling link", "fifo"])
def test_a_special_entry_in_an_input_directory_is_named(tmp_path, entry):
    """pyarrow's recursive listing leaves dangling links out (they would be skipped silently) and
    reports a FIFO as a file of unknown type; reading a FIFO would block."""
    job_path = parquet_input_job(tmp_path, tmp_path / "data")
    (tmp_path / "data" / "part").mkdir()
    special = tmp_path / "data" / "part" / "b.parquet"
    if entry == "fifo":
        os.mkfifo(special)
    else:
        special.symlink_to(tmp_path / "nowhere.parquet")
    expected = {"fifo": "is not a regular file", "dangling link": "is a link to nothing"}[entry]
    line = one_line_usage_error(run(tmp_path, "sabot_agent.cli", "validate", str(job_path)), f"input 'd': {special} {expected}")
    assert line.startswith("sabot: ")
