"""Every example SabotJob (and the chart's `helm test` job) validates against the CRD's
openAPIV3Schema, with unknown fields rejected the way `kubectl apply` (strict field validation)
rejects them."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from chart_render import CHART, EXAMPLES, SOURCE_CRD, render


def strict(schema: dict) -> dict:
    """A copy in which every object with declared properties rejects undeclared ones (the API
    server's strict field validation), except where the CRD preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for child in node.values():
                close(child)
        elif isinstance(node, list):
            for child in node:
                close(child)
    close(schema)
    return schema


def crd_validator() -> jsonschema.Validator:
    crd = yaml.safe_load(SOURCE_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def problems(doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in crd_validator().iter_errors(doc)]


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_validates_against_the_crd(example):
    doc = yaml.safe_load(example.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("sabot.io/v1alpha1", "SabotJob")
    assert problems(doc) == []


def test_the_validator_rejects_a_typo_and_a_bad_value():
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["agentz"] = 2
    doc["spec"]["agents"] = 0
    found = problems(doc)
    assert any("agentz" in problem for problem in found), found
    assert any(problem.startswith("spec.agents") for problem in found), found


def test_helm_test_job_validates_against_the_crd(helm):
    manifests = render(helm, CHART / "ci" / "default-values.yaml")
    (config_map,) = [doc for doc in manifests if doc["kind"] == "ConfigMap"
                     and (doc["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    assert problems(yaml.safe_load(config_map["data"]["sabotjob.yaml"])) == []
