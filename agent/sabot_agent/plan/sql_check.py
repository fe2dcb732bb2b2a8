"""A job's SQL checked before anything starts, also where some inputs' schemas are unknown.

The operator cannot read file inputs (they lie on the agents' volumes, or on S3 behind a Secret the
operator never reads), so it checks what needs no schema, with the agents' own planner: DataFusion
parses the statement (a syntax error names its line and column) and resolves every table the
statement names before planning any of them, including those of subqueries (CTE names excluded).
A schema provider that records those names and resolves none of them shows every table the query
refers to; any other error DataFusion raises before it reaches the first table cannot depend on a
schema. When every referenced table has a known schema (generated inputs, or none at all), the
query is planned completely (unknown columns, unsupported constructs). What is left — columns of
file inputs, and constructs that only a typed plan shows — the agents report when they plan.
"""

from __future__ import annotations

from typing import Mapping

import datafusion
import pyarrow as pa
from datafusion import catalog

from sabot_agent.jobspec import JobSpec, generated_schema
from sabot_agent.plan import sql
from sabot_agent.plan.job import job_query
from sabot_agent.plan.types import PlanError


class _ReferencedTables(catalog.SchemaProvider):
    """DataFusion's default schema: knows the inputs' names, records each table asked for, resolves none."""

    def __init__(self, names):
        self.names = set(names)
        self.asked: list[str] = []

    def table_names(self) -> set[str]:
        return set(self.names)

    def table_exist(self, name: str) -> bool:
        return name in self.names

    def table(self, name: str):
        if name not in self.asked:
            self.asked.append(name)
        return None


def check_sql(text: str, tables: Mapping[str, pa.Schema | None]) -> None:
    """Raise PlanError for what is wrong with `text` over tables of these names; a schema of None is
    unknown, and what depends on it is not checked."""
    if not text.strip():
        raise PlanError("the query is empty")
    config = datafusion.SessionConfig()
    for key, value in sql._DF_OPTIONS.items():
        config = config.set(key, value)
    context = datafusion.SessionContext(config)
    referenced = _ReferencedTables(tables)
    context.catalog().register_schema("public", referenced)
    options = datafusion.SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
    try:
        context.sql_with_options(text, options).logical_plan()
        error = None
    except Exception as exc:  # DataFusion raises plain Exception subclasses with its own text
        error = str(exc)
    if error is not None and not any(f"table 'datafusion.public.{name}' not found" in error for name in referenced.asked):
        raise PlanError(sql._datafusion_message(error, tables, text))  # raised before any table was planned
    unknown = [name for name in referenced.asked if name not in tables]
    if unknown:
        raise PlanError(sql._datafusion_message(f"table '{unknown[0]}' not found", tables, text))
    if all(tables[name] is not None for name in referenced.asked):
        try:
            sql.plan_sql(text, {name: schema for name, schema in tables.items() if schema is not None})
        except PlanError:
            raise
        except Exception:  # a planner bug, not the query's: the agents meet it too and report it
            pass


def job_sql_problems(job: JobSpec) -> list[str]:
    """The problems of a validated job's query that show without reading its file inputs, each
    prefixed with its spec field (as the agents report them)."""
    schemas = {name: generated_schema(spec) if spec.rows is not None else None for name, spec in job.inputs.items()}
    if job.join is not None and any(schemas[side] is None for side in (job.join.left, job.join.right)):
        return []  # the join's SELECT list is made of both sides' columns; its keys are checked by validate_job
    text, where = job_query(job, schemas)
    try:
        check_sql(text, schemas)
    except PlanError as exc:
        return [f"{where}: {exc}"]
    return []
