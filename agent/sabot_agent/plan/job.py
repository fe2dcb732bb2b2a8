"""The planner's entry point: a job (its SQL, or a short form written as SQL) and its inputs' schemas
and statistics in, the distributed plan out. Every process that plans the same file gets the same plan.

The short forms are SQL with a fixed shape, so they have no planner of their own:
- aggregate: `SELECT <groupBy>, <function>(<column>) AS <as>, ... FROM <input> [WHERE <where>] GROUP BY <groupBy>`
  (mean is AVG);
- join: `SELECT ... FROM <left> JOIN <right> ON <left>.<leftOn[i]> = <right>.<rightOn[i]> ... [WHERE <where>]`.
  With `on` (the same key names on both sides) the keys appear once, as SQL's USING does (for full
  and right joins the key is the value of whichever side has it); then the left side's other columns,
  then the right side's, a name the left side also has getting the suffix `_right`. With
  leftOn/rightOn both sides keep all their columns (same suffix rule).
"""

from __future__ import annotations

import pyarrow as pa

from sabot_agent.jobspec import JobSpec, JobSpecError
from sabot_agent.plan import distribute, physical, sql
from sabot_agent.plan.types import PlanError

JOIN_SQL = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}
RIGHT_SUFFIX = "_right"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def job_query(job: JobSpec, schemas: dict[str, pa.Schema]) -> tuple[str, str]:
    """(the job's SQL, the spec field SQL errors are reported at)."""
    if job.sql is not None:
        return job.sql, "spec.pipeline.sql"
    if job.aggregate is not None:
        return _aggregate_sql(job), "spec.pipeline.aggregate"
    return _join_sql(job, schemas), "spec.pipeline.join"


def _aggregate_sql(job: JobSpec) -> str:
    aggregate = job.aggregate
    functions = {"count": "count", "sum": "sum", "min": "min", "max": "max", "mean": "avg"}
    select = [quote(key) for key in aggregate.group_by]
    select += [f"{functions[item.function]}({quote(item.column)}) AS {quote(item.output)}" for item in aggregate.aggregations]
    text = f"SELECT {', '.join(select)} FROM {quote(aggregate.input)}"
    if aggregate.where:
        text += f" WHERE ({aggregate.where})"
    if aggregate.group_by:
        text += f" GROUP BY {', '.join(quote(key) for key in aggregate.group_by)}"
    return text


def _join_sql(job: JobSpec, schemas: dict[str, pa.Schema]) -> str:
    join = job.join
    left, right = quote(join.left), quote(join.right)
    left_names, right_names = schemas[join.left].names, schemas[join.right].names
    select, taken = [], set()
    if join.same_keys:
        for key in join.left_on:
            side = left if join.how in ("inner", "left") else None
            value = f"{left}.{quote(key)}" if side else f"COALESCE({left}.{quote(key)}, {right}.{quote(key)})"
            select.append(f"{value} AS {quote(key)}")
            taken.add(key)
    hidden = set(join.left_on) if join.same_keys else set()
    for name in left_names:
        if name not in hidden:
            select.append(f"{left}.{quote(name)} AS {quote(name)}")
            taken.add(name)
    for name in right_names:
        if join.same_keys and name in join.right_on:
            continue
        alias = name
        while alias in taken:
            alias += RIGHT_SUFFIX
        select.append(f"{right}.{quote(name)} AS {quote(alias)}")
        taken.add(alias)
    condition = " AND ".join(f"{left}.{quote(a)} = {right}.{quote(b)}" for a, b in zip(join.left_on, join.right_on))
    text = f"SELECT {', '.join(select)} FROM {left} {JOIN_SQL[join.how]} {right} ON {condition}"
    if join.where:
        text += f" WHERE ({join.where})"
    return text


def plan_job(job: JobSpec, agents: int, slots: int, schemas: dict[str, pa.Schema], stats: dict[str, physical.TableStats]) -> physical.DistributedPlan:
    """Plan a validated job; a query the planner refuses raises PlanError prefixed with the spec field."""
    text, where = job_query(job, schemas)
    try:
        query = sql.plan_sql(text, schemas)
        partitions = job.partitions or distribute.default_partitions(agents, slots)
        return distribute.plan_stages(query, stats, agents, partitions)
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None


def plan_job_inputs(job: JobSpec, agents: int, slots: int, described=None):
    """Describe every input and plan the job: what `sabot validate`, `sabot explain`, `sabot run` and
    each agent do before anything runs. `described` (inputs.DescribedInputs) holds the descriptions
    made while validating the job. Returns (plan, input infos); problems raise JobSpecError, each
    naming its spec field."""
    from sabot_agent.inputs import DescribedInputs, InputError

    described = described or DescribedInputs()
    infos, problems = {}, []
    for name, spec in job.inputs.items():
        try:
            infos[name] = described.describe(spec)
        except InputError as exc:
            problems.append(f"spec.pipeline.inputs.{name}.path: {exc}")
    if problems:
        raise JobSpecError(problems)
    schemas = {name: info.schema for name, info in infos.items()}
    stats = {name: info.stats for name, info in infos.items()}
    try:
        return plan_job(job, agents, slots, schemas, stats), infos
    except PlanError as exc:
        raise QueryRefused([str(exc)]) from None


class QueryRefused(JobSpecError):
    """The planner refused the job's query over its inputs' schemas: every attempt would too."""


def plan_fingerprint(plan, infos) -> str:
    """What every agent of a job must agree on before exchanging anything: the distributed plan and the
    units (files, row groups, rows) of every input it shares out. Agents plan on their own; two that
    listed an input at different moments (a file added to a directory or an S3 prefix in between)
    would split it differently and silently lose or double rows. Exchanged in every stage seal."""
    import hashlib

    digest = hashlib.sha256(plan.to_json().encode())
    for name in sorted(infos):
        for unit in infos[name].units:
            digest.update(f"\n{name}\t{unit.path}\t{unit.index}\t{unit.rows}".encode())
    return digest.hexdigest()[:16]
