"""`sabot explain`: the distributed plan every agent derives — stages, where they run, exchanges with
their partition counts, operators with pruned scan columns — as text, and with --json in the
serialized form with the fingerprint the agents compare in their seals."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from engine_support import job_document
from helpers import child_env
from sabot_agent.jobspec import validate_job
from sabot_agent.plan.job import plan_fingerprint, plan_job_inputs
from sabot_agent.plan.physical import DistributedPlan

SQL = "SELECT region, count(*) AS n, sum(amount) AS total FROM sales WHERE amount > 10 GROUP BY region ORDER BY total DESC LIMIT 3"


def explain(tmp_path, *flags: str) -> tuple[str, dict]:
    table = pa.table({"region": [f"r{i % 7}" for i in range(5000)], "amount": list(range(5000)), "note": ["x"] * 5000})
    pq.write_table(table, tmp_path / "sales.parquet", row_group_size=1000)
    job = job_document("explained", {"sales": {"format": "parquet", "path": str(tmp_path / "sales.parquet")}}, tmp_path / "out", agents=3, sql=SQL)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", "explain", str(path), *flags], capture_output=True, text=True,
                               env=child_env(), timeout=120)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout, job


def test_explain_names_stages_exchanges_operators_and_pruned_columns(tmp_path):
    text, _ = explain(tmp_path)
    assert "3 agents" in text
    assert "stage 0 (every agent, tasks: row groups of sales) -> hash exchange on (sales.region) into" in text
    assert "scan sales [region, amount] where" in text  # `note` is never read
    assert "aggregate partial by sales.region: count(Int64(1)) = count_all(*), sum(sales.amount)" in text
    assert "aggregate final by sales.region" in text and "read hash exchange of stage 0" in text
    assert "tasks: 6 partitions, 2 per agent" in text and "limit 3" in text
    assert "gather to agent 0" in text and "as one ordered file" in text


def test_explain_json_is_the_serialized_plan_with_the_agents_fingerprint(tmp_path):
    out, job = explain(tmp_path, "--json")
    shown = json.loads(out)
    plan, infos = plan_job_inputs(validate_job(job), 3, 1)
    assert shown["fingerprint"] == plan_fingerprint(plan, infos)
    assert shown["plan"] == json.loads(plan.to_json())
    assert DistributedPlan.from_json(json.dumps(shown["plan"])).to_json() == plan.to_json()
