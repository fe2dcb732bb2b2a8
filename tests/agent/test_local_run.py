"""`sabot run` end to end: 3 real agent processes, results equal to pyarrow in one process, failures
reported with the failing agent's reason, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import yaml

from helpers import agent_http_port, agent_processes, child_env, process_alive, require_native, start_sabot_run, stop_process
from sabot_agent.inputs import generate_table
from sabot_agent.jobspec import validate_job

RUN_TIMEOUT = 120


def job_doc(name: str, output, pipeline: dict, agents: int = 3) -> dict:
    pipeline = dict(pipeline, output={"format": "parquet", "path": str(output)})
    return {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": name},
        "spec": {"agents": agents, "slotsPerAgent": 2, "pipeline": pipeline},
    }


def sabot_run(tmp_path, doc: dict, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    completed = subprocess.run(
        [sys.executable, "-m", "sabot_agent.cli", "run", str(path), "--json", *args],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert not agent_processes(path), "sabot run left agent processes behind"
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return completed, summary


def read_output(path) -> pa.Table:
    return ds.dataset(str(path), format="parquet").to_table()


SALES = {
    "generate": {
        "rows": 30_000,
        "seed": 11,
        "columns": {
            "region": {"type": "string", "distinct": 40, "nullFraction": 0.05},
            "store_id": {"type": "int64", "distinct": 25, "nullFraction": 0.05},
            "amount": {"type": "float64", "distinct": 5000, "nullFraction": 0.1},
        },
    }
}



def test_groupby_of_multi_chunk_ipc_input_with_few_keys_equals_pyarrow(tmp_path):
    """An Arrow IPC input (memory-mapped) of several record batches per agent and few keys: each chunk
    is pre-aggregated on its own (the per-chunk path of the map), and duplicate partial states (sum and
    mean share a sum, count and mean a count) are shuffled once; the result must not change."""
    require_native()
    import numpy as np

    rng = np.random.default_rng(7)
    rows = 600_000
    source = pa.table({"k": pa.array(rng.integers(0, 50, rows)), "v": pa.array(rng.integers(0, 1000, rows) * 0.5, mask=rng.random(rows) < 0.05)})
    (tmp_path / "in").mkdir()
    for index in range(3):
        with pa.OSFile(str(tmp_path / "in" / f"part-{index}.arrow"), "wb") as sink, pa.ipc.new_file(sink, source.schema) as writer:
            writer.write_table(source.slice(index * 200_000, 200_000), max_chunksize=50_000)
    pipeline = {
        "inputs": {"data": {"format": "ipc", "path": str(tmp_path / "in")}},
        "shuffle": {"partitions": 8},
        "aggregate": {"input": "data", "groupBy": ["k"], "aggregations": [
            {"column": "v", "function": "sum", "as": "total"}, {"column": "v", "function": "count", "as": "n"},
            {"column": "v", "function": "mean", "as": "average"}]},
    }  # fmt: skip
    completed, summary = sabot_run(tmp_path, job_doc("few-keys-ipc", tmp_path / "out", pipeline, agents=2))
    assert completed.returncode == 0, completed.stderr
    assert summary["rows_in"] == rows and summary["rows_out"] == 50
    expected = source.group_by("k").aggregate([("v", "sum"), ("v", "count"), ("v", "mean")]).sort_by("k")
    actual = read_output(tmp_path / "out").sort_by("k")
    assert actual.column("k").to_pylist() == expected.column("k").to_pylist()
    assert actual.column("total").to_pylist() == expected.column("v_sum").to_pylist()
    assert actual.column("n").to_pylist() == expected.column("v_count").to_pylist()
    assert pc.all(pc.less(pc.abs(pc.subtract(actual["average"], expected["v_mean"])), 1e-9)).as_py()

def test_group_by_with_three_agents_equals_pyarrow(tmp_path):
    require_native()
    pipeline = {
        "inputs": {"sales": SALES},
        "shuffle": {"partitions": 7},
        "aggregate": {
            "input": "sales",
            "groupBy": ["region", "store_id"],
            "aggregations": [
                {"column": "amount", "function": "sum", "as": "total"},
                {"column": "amount", "function": "count", "as": "n"},
                {"column": "amount", "function": "min", "as": "low"},
                {"column": "amount", "function": "max", "as": "high"},
                {"column": "amount", "function": "mean", "as": "average"},
            ],
        },
    }
    doc = job_doc("groupby-three", tmp_path / "out", pipeline)
    # a budget far below the shuffled bytes: the reduce reads partitions back from spill files
    completed, summary = sabot_run(tmp_path, doc, "--memory-budget", "32Ki")
    assert completed.returncode == 0, completed.stderr
    assert summary["status"] == "Succeeded" and summary["rows_in"] == 30_000 and len(summary["agents"]) == 3
    assert all(agent["bytes_shuffled"] > 0 and agent["spilled_bytes"] > 0 for agent in summary["agents"])

    sales = generate_table(validate_job(doc).inputs["sales"])
    expected = sales.group_by(["region", "store_id"]).aggregate(
        [("amount", "sum"), ("amount", "count"), ("amount", "min"), ("amount", "max"), ("amount", "mean")]
    )
    expected = pa.table(
        {
            "region": expected["region"],
            "store_id": expected["store_id"],
            "total": expected["amount_sum"],
            "n": expected["amount_count"],
            "low": expected["amount_min"],
            "high": expected["amount_max"],
            "average": expected["amount_mean"],
        }
    )
    actual = read_output(tmp_path / "out")
    assert summary["rows_out"] == actual.num_rows == expected.num_rows
    assert actual.column("region").null_count > 0 and actual.column("store_id").null_count > 0  # null keys form groups
    order = [("region", "ascending"), ("store_id", "ascending")]
    actual, expected = actual.sort_by(order), expected.sort_by(order)
    for column in ("region", "store_id", "total", "n", "low", "high"):
        assert actual.column(column).to_pylist() == expected.column(column).to_pylist(), column
    assert pc.all(pc.less(pc.abs(pc.subtract(actual["average"], expected["average"])), 1e-9)).as_py()


@pytest.mark.parametrize("how, pyarrow_how", [("inner", "inner"), ("full", "full outer")])
def test_join_with_three_agents_equals_pyarrow(tmp_path, how, pyarrow_how):
    require_native()
    pipeline = {
        "inputs": {
            "orders": {"generate": {"rows": 20_000, "seed": 3, "columns": {
                "customer": {"type": "string", "distinct": 500, "nullFraction": 0.05}, "amount": {"type": "float64", "distinct": 1000}}}},
            "customers": {"generate": {"rows": 400, "seed": 4, "columns": {
                "customer": {"type": "string", "distinct": 450, "nullFraction": 0.02}, "tier": {"type": "int64", "distinct": 3}}}},
        },
        "shuffle": {"partitions": 5},
        "join": {"left": "orders", "right": "customers", "on": ["customer"], "how": how},
    }  # fmt: skip
    doc = job_doc("join-three", tmp_path / "out", pipeline)
    completed, summary = sabot_run(tmp_path, doc)
    assert completed.returncode == 0, completed.stderr
    job = validate_job(doc)
    orders, customers = generate_table(job.inputs["orders"]), generate_table(job.inputs["customers"])
    expected = orders.join(customers, keys=["customer"], join_type=pyarrow_how, right_suffix="_right")
    actual = read_output(tmp_path / "out")
    assert summary["rows_out"] == actual.num_rows == expected.num_rows > 1000
    order = [(name, "ascending") for name in expected.column_names]
    assert actual.select(expected.column_names).sort_by(order).equals(expected.sort_by(order))
    if how == "full":  # unmatched rows of both sides, null keys included, appear exactly once
        assert actual.column("tier").null_count > 0 and actual.column("amount").null_count > 0


def _argument(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def long_running_pipeline(partitions: int) -> dict:
    """A group-by big enough (2 M rows, 100 K keys) that agents are still busy when the test strikes."""
    return {
        "inputs": {"sales": {"generate": {"rows": 2_000_000, "seed": 1, "columns": {
            "k": {"type": "int64", "distinct": 100_000}, "v": {"type": "float64"}}}}},
        "shuffle": {"partitions": partitions},
        "aggregate": {"input": "sales", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum"}]},
    }  # fmt: skip


def test_agent_killed_mid_job_without_replacements_fails_the_run_and_leaves_no_process(tmp_path):
    """recovery.maxAgentReplacements: 0 — a lost agent fails the job (tests/agent/test_recovery.py: replaced)."""
    require_native()
    pipeline = long_running_pipeline(partitions=6)
    path = tmp_path / "kill.yaml"
    doc = job_doc("kill-me", tmp_path / "out", pipeline)
    doc["spec"]["recovery"] = {"maxAgentReplacements": 0}
    path.write_text(yaml.safe_dump(doc))
    run = start_sabot_run(path, tmp_path)
    try:
        deadline = time.monotonic() + 60
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "agent 1 never started serving"
            assert run.poll() is None, run.communicate()
            for pid, argv in agent_processes(path).items():
                port = agent_http_port(argv)
                if _argument(argv, "--agent-index") == "1" and port is not None and _answers(port):
                    victim = pid
            time.sleep(0.01)  # polling for the agent's HTTP port to answer
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        stop_process(run, grace=0)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert run.returncode == 1
    assert summary["status"] == "Failed"
    assert summary["reason"] == f"agent 1: killed by signal SIGKILL (pid {victim})"
    assert [agent["status"] for agent in summary["agents"]][1] == "Failed" and summary["agents"][1]["exit_code"] == -9
    assert "job 'kill-me' failed: agent 1: killed by signal SIGKILL" in stderr
    assert not process_alive(victim)
    assert not agent_processes(path), "agent processes left behind"


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.2) as response:
            return response.status == 200
    except OSError:
        return False


def test_invalid_job_file_is_rejected_before_any_agent_starts(tmp_path):
    doc = job_doc("bad-job", tmp_path / "out", {
        "inputs": {"sales": SALES},
        "shuffle": {"partitions": 0},
        "aggregate": {"input": "sales", "groupBy": ["regon"], "aggregations": [{"column": "amount", "function": "sum"}]},
    })  # fmt: skip
    completed, summary = sabot_run(tmp_path, doc)
    assert completed.returncode == 2
    assert summary["status"] == "Failed"
    assert "spec.pipeline.shuffle.partitions: must be >= 1, got 0" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_column_in_a_parquet_input_is_named(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"region_id": [1, 2], "amount": [1.0, 2.0]}), tmp_path / "data" / "a.parquet")
    doc = job_doc("bad-column", tmp_path / "out", {
        "inputs": {"sales": {"format": "parquet", "path": str(tmp_path / "data")}},
        "shuffle": {"partitions": 2},
        "aggregate": {"input": "sales", "groupBy": ["regon_id"], "aggregations": [{"column": "amount", "function": "sum", "as": "total"}]},
    })  # fmt: skip
    completed, summary = sabot_run(tmp_path, doc)
    assert completed.returncode == 2
    assert "spec.pipeline.aggregate.groupBy[0]: unknown column 'regon_id' in input 'sales'" in summary["reason"]


def test_group_by_over_parquet_files_with_two_agents(tmp_path):
    require_native()
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    tables = [pa.table({"region_id": [i % 7 for i in range(j, j + 500)], "amount": [float(i) for i in range(500)]}) for j in range(3)]
    for index, table in enumerate(tables):
        pq.write_table(table, tmp_path / "data" / f"part-{index}.parquet", row_group_size=100)
    doc = job_doc("parquet-groupby", tmp_path / "out", {
        "inputs": {"sales": {"format": "parquet", "path": str(tmp_path / "data")}},
        "shuffle": {"partitions": 4},
        "aggregate": {"input": "sales", "groupBy": ["region_id"], "aggregations": [{"column": "amount", "function": "sum", "as": "total"}]},
    }, agents=2)  # fmt: skip
    completed, summary = sabot_run(tmp_path, doc)
    assert completed.returncode == 0, completed.stderr
    # 15 row groups of 100 rows, shared by rows: agent 0 the first 7, agent 1 the other 8
    assert summary["rows_in"] == 1500 and [agent["rows_in"] for agent in summary["agents"]] == [700, 800]
    expected = pa.concat_tables(tables).group_by("region_id").aggregate([("amount", "sum")]).sort_by("region_id")
    actual = read_output(tmp_path / "out").sort_by("region_id")
    assert actual.column("total").to_pylist() == expected.column("amount_sum").to_pylist()


def test_ctrl_c_stops_the_run_and_every_agent(tmp_path):
    require_native()
    pipeline = long_running_pipeline(partitions=4)
    path = tmp_path / "interrupt.yaml"
    path.write_text(yaml.safe_dump(job_doc("interrupt-me", tmp_path / "out", pipeline, agents=2)))
    run = start_sabot_run(path, tmp_path)
    try:
        deadline = time.monotonic() + 60
        started = {}
        while len(started) < 2:
            assert time.monotonic() < deadline and run.poll() is None, "agents never started"
            started = agent_processes(path)
            time.sleep(0.01)  # polling for both agent processes
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        stop_process(run, grace=0)
    assert run.returncode == 130
    assert json.loads(stdout.strip().splitlines()[-1])["reason"] == "interrupted"
    assert not any(process_alive(pid) for pid in started)


def agent_command(tmp_path, name: str, agents: int, flight_port: int, http_port: int, termination_log) -> list[str]:
    """`sabot-agent` as agent 0 of a small group-by job of `agents` agents, written to tmp_path."""
    doc = job_doc(name, tmp_path / "out", {
        "inputs": {"d": {"generate": {"rows": 1000, "columns": {"k": {"type": "int64", "distinct": 10}, "v": {"type": "float64"}}}}},
        "shuffle": {"partitions": 4},
        "aggregate": {"input": "d", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum"}]},
    }, agents=agents)  # fmt: skip
    doc["spec"]["security"] = {"tls": "disabled"}  # its peers in these tests are plaintext `--serve` agents
    job = tmp_path / f"{name}.yaml"
    job.write_text(yaml.safe_dump(doc))
    return [sys.executable, "-m", "sabot_agent", "--job", str(job), "--agent-index", "0", "--flight-port", str(flight_port),
            "--http-port", str(http_port), "--spill-dir", str(tmp_path / "spill"), "--termination-log", str(termination_log)]


def test_agent_fails_fast_when_a_peer_dies_before_sealing(tmp_path, serve_agent):
    """sabot-agent on its own (flags, termination log): its peer 1 answers health but never seals, then dies."""
    from sabot_agent.local import free_ports

    silent_peer = serve_agent("silent-peer", "--agent-index", "1", "--agent-count", "2")  # answers for its own outputs only
    flight_port, http_port = free_ports(2)
    reason_file = tmp_path / "termination-log"
    agent = subprocess.Popen(
        agent_command(tmp_path, "lonely", 2, flight_port, http_port, reason_file),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True,
        env=dict(child_env(), SABOT_PEERS=f"127.0.0.1:{flight_port},{silent_peer.peer}", SABOT_AGENT_COUNT="2"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # agent 0 sealed its stage 0 and now waits for the silent peer's part of it
            status = _status(http_port)
            if status and status["phase"] == "stage 1":
                break
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()
            time.sleep(0.02)  # polling the agent's /status
        silent_peer.stop()
        _, stderr = agent.communicate(timeout=30)
    finally:
        stop_process(agent, grace=0)
    assert agent.returncode == 1
    reason = reason_file.read_text().strip()
    assert reason.startswith("agent 0: stages failed: agent 1 stopped answering while this agent waited for its stage 0"), reason
    assert silent_peer.peer in reason
    assert "\n" not in reason and f"sabot-agent: error: {reason}" in stderr


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=0.5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def test_a_successful_agent_reports_its_result_in_the_termination_log(tmp_path):
    """In a pod the operator reads each agent's JSON result from its termination message."""
    from sabot_agent.local import free_ports

    flight_port, http_port = free_ports(2)
    result_file = tmp_path / "termination-log"
    completed = subprocess.run(
        [*agent_command(tmp_path, "single", 1, flight_port, http_port, result_file), "--peers", f"127.0.0.1:{flight_port}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=RUN_TIMEOUT, env=child_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    reported = json.loads(result_file.read_text())
    assert reported == json.loads(completed.stdout.strip().splitlines()[-1])
    assert reported["rows_in"] == 1000 and reported["rows_out"] == 10
