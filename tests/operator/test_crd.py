"""The generated CRD: up to date, structural, bounded, and accepting every example SabotJob."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from sabotjobs import sabot_job
from sabot_agent import jobspec
from sabot_operator import crd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
import gen_crd  # noqa: E402

SCHEMA = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crd_file_is_up_to_date_with_the_generator():
    assert gen_crd.CRD_FILE.read_text() == gen_crd.render(), "crds/sabotjob.yaml is stale: run python hack/gen_crd.py"


def test_gen_crd_check_mode_reports_a_stale_file(tmp_path, monkeypatch):
    stale = tmp_path / "sabotjob.yaml"
    stale.write_text("stale\n")
    monkeypatch.setattr(gen_crd, "CRD_FILE", stale)
    monkeypatch.setattr(sys, "argv", ["gen_crd.py", "--check"])
    assert gen_crd.main() == 1
    result = subprocess.run([sys.executable, str(REPO / "hack" / "gen_crd.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_names_subresource_and_printer_columns():
    crd_doc = yaml.safe_load(gen_crd.CRD_FILE.read_text())
    assert crd_doc["metadata"]["name"] == "sabotjobs.sabot.io"
    assert crd_doc["spec"]["scope"] == "Namespaced"
    assert crd_doc["spec"]["names"]["shortNames"] == ["sj"]
    version = crd_doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Ready": ".status.ready",
        "Slots": ".spec.slotsPerAgent",
        "Attempt": ".status.attempt",
        "Age": ".metadata.creationTimestamp",
    }


def _walk(node: dict, where: str):
    yield where, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{where}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{where}[*]")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{where}[]")


def test_schema_is_structural():
    for where, node in _walk(SCHEMA, "<root>"):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], where
            continue
        assert "type" in node, f"{where} has no type"
        assert not ("properties" in node and "additionalProperties" in node), f"{where}: properties with additionalProperties"


def test_every_spec_field_is_bounded():
    for where, node in _walk(SCHEMA["properties"]["spec"], "spec"):
        kind = node.get("type")
        if kind == "string" and "enum" not in node:
            assert "maxLength" in node, f"{where}: string without maxLength"
        elif kind == "integer":
            assert "minimum" in node and "maximum" in node, f"{where}: integer without bounds"
        elif kind == "array":
            assert "maxItems" in node, f"{where}: array without maxItems"
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{where}: map without maxProperties"


def test_pipeline_is_the_agents_schema():
    embedded = copy.deepcopy(SCHEMA["properties"]["spec"]["properties"]["pipeline"])

    def without_cel(node):
        if isinstance(node, dict):
            return {key: without_cel(value) for key, value in node.items() if key != "x-kubernetes-validations"}
        if isinstance(node, list):
            return [without_cel(item) for item in node]
        return node

    assert without_cel(embedded) == crd.fit_bounds(jobspec.kubernetes_openapi_schema(jobspec.PIPELINE_SCHEMA))


def test_numeric_bounds_survive_the_api_servers_float64():
    for where, node in _walk(SCHEMA, "<root>"):
        for bound in ("minimum", "maximum"):
            if bound in node:
                assert abs(node[bound]) <= crd.MAX_INT64_BOUND and int(float(node[bound])) == node[bound], where


def test_every_rule_is_placed_in_the_schema():
    rules_in_schema = [
        validation["rule"]
        for _, node in _walk(SCHEMA, "<root>")
        for validation in node.get("x-kubernetes-validations", [])
    ]
    assert sorted(rules_in_schema) == sorted([rule.cel for rule in crd.RULES] + [crd.immutable_while_active_rule()["rule"]])


def test_immutability_rule_covers_every_spec_field_but_suspend():
    rule = crd.immutable_while_active_rule()["rule"]
    for name in crd.SPEC_PROPERTIES:
        assert (f"self.spec.{name} ==" in rule) == (name != "suspend"), name


def test_a_valid_job_passes_the_schema():
    jsonschema.Draft7Validator(SCHEMA).validate(sabot_job())


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_sabotjob_validates_against_the_crd(path: Path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == crd.KIND]
    for document in documents:
        jsonschema.Draft7Validator(SCHEMA).validate(document)


def test_the_agent_ignores_exactly_the_cluster_only_spec_fields():
    """jobspec.CLUSTER_SPEC_FIELDS is the agent's copy of the spec fields only the CRD knows."""
    assert jobspec.CLUSTER_SPEC_FIELDS == set(crd.SPEC_PROPERTIES) - set(jobspec.SPEC_SCHEMA["properties"])
