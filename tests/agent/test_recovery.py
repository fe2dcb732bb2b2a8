"""Agent-level recovery in `sabot run`: one agent killed (SIGKILL) or hung (SIGSTOP) at each point of a
multi-stage job (a hash join feeding an aggregation) is replaced by a new process of the same index;
the job succeeds on the same attempt with the result duckdb computes from the same files, nothing is
counted twice, and no process is left. Failures are injected with failpoints (sabot_agent.failpoints):
the agent stops itself exactly at the named point, which a timed kill from outside could not hit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from engine_support import assert_same_rows, job_document
from helpers import agent_processes, child_env, require_native
from recovery_support import CASES, QUERY, TWO_AT_ONCE, recovery_inputs, reference_rows, write_recovery_data
from sabot_agent import failpoints
from sabot_agent.failpoints import FAILPOINT_ENV
from sabot_agent.jobspec import OutputSpec
from sabot_agent.output import ResultLocation
from sabot_agent.settings import JOB_REFUSED, TERMINATED, USAGE_ERROR, killing_signal
from sabot_agent.supervisor import lost_reason

RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_recovery_data(tmp_path_factory.mktemp("recovery-data"))


def assert_exact(tmp_path, data) -> dict:
    """The published result equals duckdb's on the same files (counts exact: nothing counted twice)."""
    manifest, table = ResultLocation(OutputSpec("parquet", str(tmp_path / "out")), "recover").read()
    assert_same_rows([tuple(row.values()) for row in table.to_pylist()], reference_rows(data), ordered=True)
    return manifest


def run_job(tmp_path, data, failpoints: list[str], recovery: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    doc = job_document("recover", recovery_inputs(data), tmp_path / "out", agents=3, slots=2, sql=QUERY)
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
    assert {"kill": "killed by signal SIGKILL", "stop": "(hung)", "term": "stopped by SIGTERM"}[action] in replacement["reason"]
    assert f"agent {agent}: " in completed.stderr and "replacing it (1 of 3)" in completed.stderr
    manifest = assert_exact(tmp_path, data)
    assert manifest["attempt"] == 0  # the same attempt: only the lost agent's work was redone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS"] + [p["name"] for p in manifest["parts"]]


def test_two_agents_lost_at_once_are_both_replaced(tmp_path, data):
    require_native()
    completed, summary = run_job(tmp_path, data, TWO_AT_ONCE)
    assert completed.returncode == 0, completed.stderr
    assert sorted(r["agent"] for r in summary["replacements"]) == [1, 2]
    assert_exact(tmp_path, data)


def test_losses_beyond_the_bound_fail_the_job_and_publish_nothing(tmp_path, data):
    require_native()
    # agent 2 is lost once its join output is sealed, which needs agent 1's replacement's first stage: always second
    completed, summary = run_job(tmp_path, data, ["1:task:0:kill", "2:sealed:2:kill"], recovery={"maxAgentReplacements": 1})
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
    # SIGTERM from outside: the agent exits 128 + 15 itself, a loss as on a cluster (the operator's rule too)
    assert lost_reason(1, TERMINATED, 0.0, 30) == "agent 1: killed by signal SIGTERM"
    assert lost_reason(1, JOB_REFUSED, 0.0, 30) is None and lost_reason(1, USAGE_ERROR, 0.0, 30) is None


def test_one_rule_tells_a_signal_from_an_exit_code():
    assert killing_signal(-9) == "SIGKILL" and killing_signal(137) == "SIGKILL" and killing_signal(TERMINATED) == "SIGTERM"
    assert killing_signal(128 + 99) == "signal 99"
    assert [killing_signal(code) for code in (None, 0, 1, 2, 3, 127, 128)] == [None] * 7


def test_failpoint_syntax():
    assert failpoints.parse("1:task:2:kill:/tmp/a; 0:done:stop:/tmp/b; 2:sealed:1:kill") == {
        (1, "task:2"): ("kill", "/tmp/a"), (0, "done"): ("stop", "/tmp/b"), (2, "sealed:1"): ("kill", "")}
    with pytest.raises(ValueError, match="unknown action 'boom'"):
        failpoints.parse("1:written:boom:/tmp/c")
    for malformed in ("x:done:kill", "1:reading:2:kill", "1:done", "1:task:2:kill:/a:/b"):
        with pytest.raises(ValueError, match="is not <agent>:<point>:<action>"):
            failpoints.parse(malformed)


def test_a_failpoint_without_marker_fires_only_in_the_first_instance():
    failpoints.arm("1:done:kill; 1:written:kill:/tmp/marker", replacement=1)
    assert failpoints._armed == {(1, "written"): ("kill", "/tmp/marker")}
    failpoints.arm("1:done:kill", replacement=0)
    assert failpoints._armed == {(1, "done"): ("kill", "")}
    failpoints.arm("", replacement=0)


def test_a_malformed_failpoint_is_one_line_before_the_agent_starts(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "sabot_agent", "--serve", "--flight-port", "0", "--http-port", "0", "--termination-log", str(tmp_path / "reason")],
        capture_output=True, text=True, timeout=60, env=dict(child_env(), **{FAILPOINT_ENV: "1:reading:kill"}),
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == ["sabot-agent: error: SABOT_FAILPOINT: '1:reading:kill' is not <agent>:<point>:<action>[:<marker file>]"]
    assert "Traceback" not in completed.stderr
