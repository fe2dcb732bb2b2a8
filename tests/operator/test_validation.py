"""The operator's validation (for clusters without CEL) rejects what the CRD rejects, naming the field."""
from __future__ import annotations

import pytest

from sabotjobs import sabot_job
from invalid_specs import INVALID_SPECS
from sabot_operator import crd
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
