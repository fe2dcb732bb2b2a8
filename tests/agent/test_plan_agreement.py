"""Agents plan a job on their own; before they exchange anything they must have planned the same.
Every stage seal names the producer's plan fingerprint (the distributed plan and the units of every
input), and a consumer refuses a seal with another: two agents that listed an input directory at
different moments would otherwise split it differently and silently lose or double rows."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from helpers import child_env, stop_process
from sabot_agent.local import free_ports, local_certificates, write_certificates
from sabot_agent.plan.job import plan_fingerprint, plan_job_inputs
from sabot_agent.jobspec import validate_job

TIMEOUT = 120


def group_by_job(inputs: str, output: str, partitions: int = 4) -> dict:
    return {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": "agreement"},
        "spec": {"agents": 2, "pipeline": {
            "inputs": {"t": {"format": "parquet", "path": inputs}},
            "shuffle": {"partitions": partitions},
            "aggregate": {"input": "t", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum"}]},
            "output": {"format": "parquet", "path": output},
        }},
    }  # fmt: skip


def write_part(directory, name: str, start: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keys = pa.array([(start + i) % 50 for i in range(1000)], pa.int64())
    pq.write_table(pa.table({"k": keys, "v": pa.array([float(i) for i in range(1000)])}), directory / name)


def test_the_fingerprint_follows_the_input_files_and_the_plan(tmp_path):
    write_part(tmp_path / "one", "a.parquet", 0)
    one = validate_job(group_by_job(str(tmp_path / "one"), str(tmp_path / "out")))
    plan, infos = plan_job_inputs(one, 2, 1)
    assert plan_fingerprint(plan, infos) == plan_fingerprint(*plan_job_inputs(one, 2, 1))
    other_plan = validate_job(group_by_job(str(tmp_path / "one"), str(tmp_path / "out"), partitions=8))
    assert plan_fingerprint(*plan_job_inputs(other_plan, 2, 1)) != plan_fingerprint(plan, infos)
    write_part(tmp_path / "one", "b.parquet", 7)
    assert plan_fingerprint(*plan_job_inputs(one, 2, 1)) != plan_fingerprint(plan, infos)  # another file


def test_agents_that_saw_different_input_files_fail_instead_of_exchanging(tmp_path):
    """Agent 0 sees one file of the input directory, agent 1 two (as if a file arrived between their
    listings): the job fails naming the disagreement; no result is published."""
    write_part(tmp_path / "early", "a.parquet", 0)
    write_part(tmp_path / "late", "a.parquet", 0)
    write_part(tmp_path / "late", "b.parquet", 7)
    output = tmp_path / "out"
    ports = free_ports(4)
    peers = f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    tls = write_certificates(str(tmp_path / "tls"), local_certificates("agreement", 0, 2))
    processes = []
    try:
        for index, inputs in enumerate(("early", "late")):
            job_file = tmp_path / f"job-{index}.yaml"
            job_file.write_text(yaml.safe_dump(group_by_job(str(tmp_path / inputs), str(output))))
            command = [sys.executable, "-m", "sabot_agent", "--job", str(job_file), "--agent-index", str(index), "--peers", peers,
                       "--bind-host", "127.0.0.1", "--flight-port", str(ports[index]), "--http-port", str(ports[2 + index]),
                       "--spill-dir", str(tmp_path / "spill"), "--shuffle-timeout", "30", "--startup-timeout", "30", *tls[index]]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                              cwd=tmp_path, start_new_session=True))  # fmt: skip
        outcomes = [process.communicate(timeout=TIMEOUT) for process in processes]
    finally:
        for process in processes:
            stop_process(process, grace=0)
    codes = [process.returncode for process in processes]
    errors = "\n".join(stderr for _, stderr in outcomes)
    assert all(code != 0 for code in codes), (codes, errors)
    assert "planned this job differently" in errors, errors
    assert "Traceback" not in errors, errors
    assert not (output / "_SUCCESS").exists()
