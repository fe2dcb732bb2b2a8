"""Facts the agent, `sabot run` and the operator share have one definition: the resource's identity and
the job name limit (sabot_agent.jobspec), the field-path format of problems (jobspec.field_path) and the
SABOT_* variable names (sabot_agent.settings); the operator imports them."""

from __future__ import annotations

import re

from helpers import REPO
from sabot_agent import agent, jobspec, settings
from sabot_operator import builders, crd, validation
from sabotjobs import sabot_job

SOURCES = {
    path.relative_to(REPO).as_posix(): path.read_text()
    for package in ("agent/sabot_agent", "operator/sabot_operator")
    for path in sorted((REPO / package).rglob("*.py"))
}


def defined_in(name: str) -> list[str]:
    return [path for path, text in SOURCES.items() if re.search(rf"^{name}\s*=", text, re.MULTILINE)]


def test_the_resource_identity_and_the_job_name_limit_are_defined_once():
    for name in ("GROUP", "VERSION", "API_VERSION", "KIND", "MAX_JOB_NAME_LENGTH"):
        assert defined_in(name) == ["agent/sabot_agent/jobspec.py"], name
    assert (crd.API_VERSION, crd.KIND, crd.MAX_JOB_NAME_LENGTH) == (jobspec.API_VERSION, jobspec.KIND, jobspec.MAX_JOB_NAME_LENGTH)
    longest_pod = builders.agent_pod_name("x" * jobspec.MAX_JOB_NAME_LENGTH, jobspec.MAX_AGENTS - 1)
    assert len(longest_pod) == jobspec.MAX_NAME_LENGTH == 63


def test_field_paths_have_one_formatter():
    assert [path for path, text in SOURCES.items() if "isinstance(part, int)" in text] == ["agent/sabot_agent/jobspec.py"]
    assert validation.field_path is jobspec.field_path
    assert jobspec.field_path(["spec", "pipeline", "aggregate", "groupBy", 0]) == "spec.pipeline.aggregate.groupBy[0]"


def test_only_settings_spells_the_sabot_variables():
    spelled = {path for path, text in SOURCES.items() if re.search(r"[\"']SABOT_[A-Z_]+[\"']", text)}
    assert spelled == {"agent/sabot_agent/settings.py"}


def test_every_variable_the_operator_sets_is_read_by_the_agent(monkeypatch):
    job = sabot_job("envs", {"agents": 3, "memoryBudget": "64Mi"})
    job["spec"] = crd.spec_with_defaults(job["spec"])
    env = {item["name"]: item["value"] for item in builders.agent_env(job, 2, 4)}
    assert set(env) <= set(settings.ENV.values()), set(env) - set(settings.ENV.values())
    for variable in settings.ENV.values():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    args = agent.build_parser().parse_args([])
    read = {variable: str(getattr(args, dest)) for dest, variable in settings.ENV.items() if variable in env}
    assert read == env
    assert (args.agent_index, args.agent_count, args.attempt, args.memory_budget) == (2, 3, 4, "64Mi")
