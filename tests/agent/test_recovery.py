"""Agent-level recovery in `sabot run`: one agent killed (SIGKILL) or hung (SIGSTOP) at each point of a
multi-stage job (a hash join feeding an aggregation) is replaced by a new process of the same index;
the job succeeds on the same attempt with the result duckdb computes from the same files, nothing is
counted twice, and no process is left. Failures are injected with failpoints (sabot_agent.failpoints):
the agent stops itself exactly at the named point, which a timed kill from outside could not hit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine_support import assert_same_rows, duckdb_rows, job_document
from helpers import agent_processes, child_env, require_native
from sabot_agent.failpoints import FAILPOINT_ENV, _parse
from sabot_agent.jobspec import OutputSpec
from sabot_agent.output import ResultLocation
from sabot_agent.supervisor import lost_reason

RUN_TIMEOUT = 180
QUERY = """
SELECT d.grp, count(*) AS n, sum(f.amount) AS total, count(DISTINCT f.cust) AS customers
FROM facts f JOIN dims d ON f.key = d.key
WHERE f.amount > 10
GROUP BY d.grp
ORDER BY d.grp
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Facts (600k rows in 6 files) and a dimension too big to replicate (a real hash exchange on both sides)."""
    root = tmp_path_factory.mktemp("recovery-data")
    rng = np.random.default_rng(7)
    (root / "facts").mkdir()
    for index in range(6):
        rows = 100_000
        pq.write_table(pa.table({
            "key": rng.integers(0, 400_000, rows), "cust": rng.integers(0, 5_000, rows),
            "amount": np.round(rng.random(rows) * 100, 2),
        }), root / "facts" / f"part-{index}.parquet", row_group_size=25_000)  # fmt: skip
    keys = np.arange(400_000)
    pq.write_table(pa.table({"key": keys, "grp": keys % 37, "pad": keys * 3}), root / "dims.parquet", row_group_size=100_000)
    return root


def assert_exact(tmp_path, data) -> dict:
    """The published result equals duckdb's on the same files (counts exact: nothing counted twice)."""
    manifest, table = ResultLocation(OutputSpec("parquet", str(tmp_path / "out")), "recover").read()
    want = duckdb_rows(QUERY, {"facts": data / "facts", "dims": data / "dims.parquet"})
    assert_same_rows([tuple(row.values()) for row in table.to_pylist()], want, ordered=True)
    return manifest


def run_job(tmp_path, data, failpoints: list[str], recovery: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    doc = job_document("recover", {"facts": {"format": "parquet", "path": str(data / "facts")},
                                   "dims": {"format": "parquet", "path": str(data / "dims.parquet")}},
                       tmp_path / "out", agents=3, slots=2, sql=QUERY)  # fmt: skip
    doc["spec"]["recovery"] = recovery or {}
    path = tmp_path / "recover.yaml"
    path.write_text(yaml.safe_dump(doc))
    markers = ";".join(f"{point}:{tmp_path / f'fired-{index}'}" for index, point in enumerate(failpoints))
    completed = subprocess.run(
        [sys.executable, "-m", "sabot_agent.cli", "run", str(path), "--json", "--threads", "1"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=dict(child_env(), **{FAILPOINT_ENV: markers}), cwd=tmp_path,
    )  # fmt: skip
    assert not agent_processes(path), "sabot run left agent processes behind"
    for index in range(len(failpoints)):
        assert (tmp_path / f"fired-{index}").exists(), f"failpoint {failpoints[index]} was never reached"
    return completed, json.loads(completed.stdout.strip().splitlines()[-1])


CASES = [
    ("1:task:0:kill", "reading and mapping its input share"),
    ("2:sealed:0:kill", "after sealing its first stage output"),
    ("1:serving:kill", "while serving a partition to a peer"),
    ("2:task:1:kill", "while joining (stage 1)"),
    ("0:task:2:kill", "agent 0 while reducing the aggregation"),
    ("1:written:kill", "after staging its result part"),
    ("2:done:kill", "while waiting for the job to end"),
    ("0:done:kill", "agent 0 after publishing the result"),
    ("1:task:1:stop", "hung (SIGSTOP) in the middle of a stage"),
]


@pytest.mark.parametrize("failpoint", [case[0] for case in CASES], ids=[case[1] for case in CASES])
def test_a_lost_agent_is_replaced_and_the_result_is_exact(tmp_path, data, failpoint):
    require_native()
    # a stopped agent is declared hung after 8 s; killed ones are noticed at once (the default 30 s is not reached)
    completed, summary = run_job(tmp_path, data, [failpoint], recovery={"hungAfterSeconds": 8} if failpoint.endswith(":stop") else None)
    assert completed.returncode == 0, completed.stderr
    assert summary["status"] == "Succeeded"
    agent, action = int(failpoint.split(":")[0]), failpoint.rsplit(":", 1)[-1]
    [replacement] = summary["replacements"]
    assert replacement["agent"] == agent
    assert ("killed by signal SIGKILL" if action == "kill" else "(hung)") in replacement["reason"]
    assert f"agent {agent}: " in completed.stderr and "replacing it (1 of 3)" in completed.stderr
    manifest = assert_exact(tmp_path, data)
    assert manifest["attempt"] == 0  # the same attempt: only the lost agent's work was redone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS"] + [p["name"] for p in manifest["parts"]]


def test_two_agents_lost_at_once_are_both_replaced(tmp_path, data):
    require_native()
    completed, summary = run_job(tmp_path, data, ["1:task:1:kill", "2:task:1:kill"])
    assert completed.returncode == 0, completed.stderr
    assert sorted(r["agent"] for r in summary["replacements"]) == [1, 2]
    assert_exact(tmp_path, data)


def test_losses_beyond_the_bound_fail_the_job_and_publish_nothing(tmp_path, data):
    require_native()
    completed, summary = run_job(tmp_path, data, ["1:task:0:kill", "2:task:1:kill"], recovery={"maxAgentReplacements": 1})
    assert completed.returncode == 1
    assert summary["status"] == "Failed"
    assert summary["reason"].startswith("agent 2: killed by signal SIGKILL") and "1 agent replacement already used" in summary["reason"]
    assert [r["agent"] for r in summary["replacements"]] == [1]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_lost_reason_tells_a_loss_from_an_exit():
    assert lost_reason(1, -9, 0.0, 30) == "agent 1: killed by signal SIGKILL"
    assert lost_reason(2, None, 31.0, 30) == "agent 2: did not answer on its HTTP port for 31s (hung)"
    assert lost_reason(2, None, 29.0, 30) is None
    assert lost_reason(0, 1, 99.0, 30) is None  # it exited with an error: a failure of the job, not a loss
    assert lost_reason(0, 0, 0.0, 30) is None


def test_failpoint_syntax():
    assert _parse("1:task:2:kill:/tmp/a; 0:done:stop:/tmp/b") == {(1, "task:2"): ("kill", "/tmp/a"), (0, "done"): ("stop", "/tmp/b")}
    with pytest.raises(ValueError, match="unknown action 'boom'"):
        _parse("1:written:boom:/tmp/c")
