"""The operator's own check of a SabotJob, for clusters that do not run the CRD's CEL rules.

Each problem names its field ("spec.metricsPort: ..."), so the Degraded condition and the Event
tell the user exactly what to fix. Two checks are the operator's alone, beyond the CRD: local input and
output paths must lie on a volume of spec.volumes (volumes.path_problems), and the job's query is
planned by the agents' planner as far as it can be without reading file inputs
(plan.sql_check.job_sql_problems: syntax, unknown tables, and everything over generated inputs).
"""

from __future__ import annotations

from typing import Any

import jsonschema

from sabot_agent.jobspec import JobSpecError, field_path, validate_job
from sabot_agent.plan.sql_check import job_sql_problems

from . import builders, crd, volumes

_SCHEMA_VALIDATOR = jsonschema.Draft7Validator(crd.OBJECT_SCHEMA)


def _schema_problem(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return "; ".join(f"{field_path([*error.absolute_path, name])}: required field is missing" for name in missing)
    return f"{field_path(error.absolute_path)}: {error.message}"


def spec_problems(job: dict[str, Any]) -> list[str]:
    """Every problem of the job: the CRD schema, its CEL rules and the volumes of local paths, then the
    pipeline's own semantics, then its query."""
    problems = sorted({_schema_problem(error) for error in _SCHEMA_VALIDATOR.iter_errors(job)})
    if problems:
        return problems
    defaulted = {**job, "spec": crd.spec_with_defaults(job["spec"])}
    for rule in crd.RULES:
        for where, node in crd.nodes_at(defaulted, rule.path):
            if not rule.holds(node):
                field = (where + rule.field).lstrip(".")
                problems.append(f"{field}: {rule.message}" if field else rule.message)
    problems += volumes.path_problems(defaulted["spec"])
    if problems:
        return problems
    try:
        job_spec = validate_job(builders.agent_job_document(defaulted))
    except JobSpecError as error:
        return list(error.problems)
    return job_sql_problems(job_spec)
