"""The operator's validation (for clusters without CEL) rejects what the CRD rejects, naming the field."""
from __future__ import annotations

import pytest

from sabotjobs import sabot_job
from invalid_specs import INVALID_SPECS
from sabot_operator import crd
from sabot_agent.jobspec import validate_job
from sabot_operator.validation import spec_problems


def test_a_valid_job_has_no_problems():
    assert spec_problems(sabot_job()) == []


@pytest.mark.parametrize("name, spec_patch, field, _api_fragment", [case[1:] for case in INVALID_SPECS], ids=[case[0] for case in INVALID_SPECS])
def test_invalid_spec_is_reported_on_its_field(name, spec_patch, field, _api_fragment):
    problems = spec_problems(sabot_job(name or "wordcount", spec_patch))
    assert any(problem.startswith(field) for problem in problems), problems


def test_every_cel_rule_has_a_case():
    """Each CEL rule's Python twin is exercised by at least one invalid spec."""
    fired = set()
    for _, name, spec_patch, _, _ in INVALID_SPECS:
        job = sabot_job(name or "wordcount", spec_patch)
        defaulted = {**job, "spec": crd.spec_with_defaults(job["spec"])}
        for rule in crd.RULES:
            if any(not rule.holds(node) for _, node in crd.nodes_at(defaulted, rule.path)):
                fired.add(rule.cel)
    assert fired == {rule.cel for rule in crd.RULES}


def test_pipeline_semantics_come_from_the_agents_validation():
    problems = spec_problems(sabot_job(spec_patch={"pipeline": {"aggregate": {"groupBy": ["regon"]}}}))
    assert any(problem.startswith("spec.pipeline.aggregate.groupBy[0]") and "regon" in problem for problem in problems), problems


def test_defaults_are_applied_the_way_the_api_server_does():
    spec = crd.spec_with_defaults({"pipeline": {}})
    assert spec["flightPort"] == crd.DEFAULT_FLIGHT_PORT and spec["metricsPort"] == crd.DEFAULT_METRICS_PORT
    assert spec["retry"] == {"limit": 3, "backoffSeconds": 10}
    assert spec["suspend"] is False and spec["hostNetwork"] is False
    assert "threadsPerAgent" not in spec  # no default: the agent uses slotsPerAgent


# --- local paths must lie on a volume (the operator's own check; CEL cannot normalize paths) ----------

DATA = {"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "shared"}}
INPUTS = {"name": "inputs", "mountPath": "/srv/inputs", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}


def files_job(input_path: str, output_path: str, volumes: list[dict]) -> dict:
    return sabot_job(spec_patch={"volumes": volumes, "pipeline": {
        "inputs": {"sales": {"generate": None, "format": "parquet", "path": input_path}},
        "aggregate": {"groupBy": [], "aggregations": [{"column": "amount", "function": "sum"}]},
        "output": {"path": output_path}}})  # fmt: skip


@pytest.mark.parametrize("input_path, output_path", [
    ("/srv/inputs/sales/", "/data/out/"),
    ("/srv/inputs", "file:///data/out"),
    ("file:///srv/inputs/2026/sales.parquet", "/data"),
    ("s3://lake/sales/", "/data/results/../out/"),
])  # fmt: skip
def test_local_paths_on_volumes_are_accepted(input_path, output_path):
    assert spec_problems(files_job(input_path, output_path, [DATA, INPUTS])) == []


def test_an_output_no_volume_backs_is_rejected_in_one_line_saying_it_would_vanish():
    problems = spec_problems(files_job("s3://lake/sales/", "/tmp/out", [DATA]))
    assert problems == ["spec.pipeline.output.path: /tmp/out is not on a volume: each agent would write it inside its own pod and it "
                        "would vanish with the pods; write to s3://... or mount a PersistentVolumeClaim with spec.volumes"]


@pytest.mark.parametrize("output_path, shown", [
    ("out/sales/", "out/sales/ (in the agent: /tmp/out/sales)"),  # relative: under the working directory, /tmp
    ("/database/out", "/database/out"),  # shares the mountPath's first characters, not its directory
    ("/data/../etc/out", "/data/../etc/out (in the agent: /etc/out)"),
    ("file:///var/out", "file:///var/out (in the agent: /var/out)"),
])  # fmt: skip
def test_outputs_outside_every_volume_are_rejected(output_path, shown):
    (problem,) = spec_problems(files_job("s3://lake/sales/", output_path, [DATA]))
    assert problem.startswith(f"spec.pipeline.output.path: {shown} is not on a volume"), problem


def test_an_output_on_a_read_only_volume_is_rejected():
    assert spec_problems(files_job("/srv/inputs/sales/", "/srv/inputs/out/", [DATA, INPUTS])) == [
        "spec.pipeline.output.path: /srv/inputs/out/ is on volume 'inputs', which is mounted readOnly"]


def test_a_local_input_no_volume_backs_is_rejected():
    problems = spec_problems(files_job("examples/data/sales/", "/data/out/", [DATA]))
    assert problems == ["spec.pipeline.inputs.sales.path: examples/data/sales/ (in the agent: /tmp/examples/data/sales) is not on a volume: "
                        "the agent pods cannot see files of the machine that applied the job; read from s3://... or mount a "
                        "PersistentVolumeClaim holding them with spec.volumes"]


def test_local_runs_keep_local_paths():
    """`sabot run` and `sabot validate` (validate_job) read the same file: spec.volumes is ignored there
    and local paths are this machine's."""
    job = files_job("examples/data/sales/", "out/sales/", [DATA])
    assert spec_problems(job) and validate_job(job).output.path == "out/sales/"
