"""The SabotJob schema: one module used by the agent, `sabot run` and (via PIPELINE_SCHEMA) the CRD.

A job file IS a SabotJob manifest. ``validate_job(doc)`` checks it completely before anything starts
and raises ``JobSpecError`` listing every problem, each prefixed with the field it concerns, e.g.
``spec.pipeline.aggregate.groupBy[0]: unknown column 'regon_id' in input 'sales'``.

The JSON Schema dicts below are written to be Kubernetes structural schemas: every node has a type,
objects close with ``additionalProperties: false``, numbers and strings and lists are bounded. The only
Kubernetes incompatibility is ``additionalProperties: false`` next to ``properties`` (the API server
prunes unknown fields instead); ``kubernetes_openapi_schema`` returns a copy without it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jsonschema
import pyarrow as pa

from sabot_agent.plan import types as sql_types
from sabot_agent.security import SECURITY_SCHEMA

# The one definition of the resource's identity; operator/sabot_operator/crd.py imports these.
GROUP = "sabot.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SabotJob"

FILE_FORMATS = ("parquet", "csv", "ipc")
OUTPUT_MODES = ("error-if-exists", "overwrite")
GENERATED_TYPES = ("int64", "float64", "string")
AGGREGATE_FUNCTIONS = ("count", "sum", "min", "max", "mean")
NUMERIC_ONLY_FUNCTIONS = ("sum", "mean")
MAX_SQL_LENGTH = 256 * 1024
MAX_EXPRESSION_LENGTH = 16 * 1024
JOIN_KINDS = ("inner", "left", "right", "full")

MAX_NAME_LENGTH = 63
MAX_PATH_LENGTH = 4096
MAX_INPUTS = 16
MAX_COLUMNS = 256
MAX_KEYS = 16
MAX_AGGREGATIONS = 64
MAX_PARTITIONS = 65536
MAX_AGENTS = 1024
MAX_SLOTS = 256
MAX_GENERATED_ROWS = 10**12
MAX_SEED = 2**63 - 1
# Agent pods are named "<job>-agent-<index>" and double as DNS hostnames, which are DNS labels of at most
# MAX_NAME_LENGTH characters: a job name leaves room for the longest suffix, "-agent-1023" (52 characters).
MAX_JOB_NAME_LENGTH = MAX_NAME_LENGTH - len(f"-agent-{MAX_AGENTS - 1}")

_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
_COLUMN_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_LENGTH}
_EXPRESSION = {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_LENGTH}
_KEY_LIST = {"type": "array", "minItems": 1, "maxItems": MAX_KEYS, "items": _COLUMN_NAME}

GENERATED_COLUMN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": list(GENERATED_TYPES)},
        "distinct": {"type": "integer", "minimum": 1, "maximum": MAX_GENERATED_ROWS},
        "nullFraction": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "format": {"type": "string", "enum": list(FILE_FORMATS)},
        "path": _PATH,
        "generate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rows", "columns"],
            "properties": {
                "rows": {"type": "integer", "minimum": 1, "maximum": MAX_GENERATED_ROWS},
                "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                "columns": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_COLUMNS,
                    "additionalProperties": GENERATED_COLUMN_SCHEMA,
                },
            },
        },
    },
}

PIPELINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["inputs", "output"],
    "properties": {
        "inputs": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_INPUTS,
            "additionalProperties": INPUT_SCHEMA,
        },
        "shuffle": {
            "type": "object",
            "additionalProperties": False,
            "required": ["partitions"],
            "properties": {"partitions": {"type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS}},
        },
        "aggregate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["input", "groupBy", "aggregations"],
            "properties": {
                "input": _NAME,
                "groupBy": {"type": "array", "minItems": 0, "maxItems": MAX_KEYS, "items": _COLUMN_NAME},
                "where": _EXPRESSION,
                "aggregations": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_AGGREGATIONS,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["column", "function"],
                        "properties": {
                            "column": _COLUMN_NAME,
                            "function": {"type": "string", "enum": list(AGGREGATE_FUNCTIONS)},
                            "as": _COLUMN_NAME,
                        },
                    },
                },
            },
        },
        "join": {
            "type": "object",
            "additionalProperties": False,
            "required": ["left", "right"],
            "properties": {
                "left": _NAME,
                "right": _NAME,
                "on": _KEY_LIST,
                "leftOn": _KEY_LIST,
                "rightOn": _KEY_LIST,
                "how": {"type": "string", "enum": list(JOIN_KINDS)},
                "where": _EXPRESSION,
            },
        },
        "sql": {"type": "string", "minLength": 1, "maxLength": MAX_SQL_LENGTH},
        "output": {
            "type": "object",
            "additionalProperties": False,
            "required": ["format", "path"],
            "properties": {
                "format": {"type": "string", "enum": list(FILE_FORMATS)},
                "path": _PATH,
                "mode": {"type": "string", "enum": list(OUTPUT_MODES)},
            },
        },
    },
}

# How agents reach object storage (s3:// inputs and outputs). Credentials are never part of the job
# file: locally they come from the usual AWS variables and config files; on a cluster from the Secret
# named here (the operator passes its keys to the agents as environment variables).
STORAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "s3": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "endpoint": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^https?://[^\s/]+/?$"},
                "region": {"type": "string", "minLength": 1, "maxLength": 64},
                "credentialsSecret": _NAME,
            },
        },
    },
}

# Agent-level recovery: a supervisor (`sabot run`, the operator) replaces an agent that was killed or
# stopped answering with a new one of the same index and address; the others keep their work.
MAX_AGENT_REPLACEMENTS = 100
DEFAULT_AGENT_REPLACEMENTS = 3
DEFAULT_HUNG_AFTER_SECONDS = 30
RECOVERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # agents replaced in one run (attempt) before the job fails; 0: any lost agent fails it
        "maxAgentReplacements": {"type": "integer", "minimum": 0, "maximum": MAX_AGENT_REPLACEMENTS},
        # an agent whose health endpoint has not answered this long is declared hung and replaced
        "hungAfterSeconds": {"type": "integer", "minimum": 2, "maximum": 3600},
    },
}

# Fields of spec besides the pipeline that the agent and `sabot run` know. `image` and
# `ttlSecondsAfterFinished` matter only on a cluster; they are here because the operator's CRD takes
# their bounds from this schema.
SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pipeline"],
    "properties": {
        "agents": {"type": "integer", "minimum": 1, "maximum": MAX_AGENTS},
        "slotsPerAgent": {"type": "integer", "minimum": 1, "maximum": MAX_SLOTS},
        "threadsPerAgent": {"type": "integer", "minimum": 1, "maximum": MAX_SLOTS},
        "memoryBudget": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$"},
        "storage": STORAGE_SCHEMA,
        "image": {"type": "string", "minLength": 1, "maxLength": 1024},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0, "maximum": 31_536_000},
        # `tls` is read here (agents and `sabot run`); its other fields only by the operator
        "security": SECURITY_SCHEMA,
        "recovery": RECOVERY_SCHEMA,
        "pipeline": PIPELINE_SCHEMA,
    },
}

# Spec fields only the cluster uses (pod placement, ports, retries, ...). The CRD and the operator
# validate them; the very file a user `kubectl apply`s also runs with `sabot run`, which ignores them.
# Exactly crd.py's SPEC_PROPERTIES that SPEC_SCHEMA lacks (the agent cannot import the operator):
# tests/operator/test_crd.py fails when the two differ.
CLUSTER_SPEC_FIELDS = frozenset(
    {
        "imagePullPolicy",
        "flightPort",
        "metricsPort",
        "hostNetwork",
        "resources",
        "spill",
        "volumes",
        "pod",
        "retry",
        "suspend",
        "activeDeadlineSeconds",
        "startupDeadlineSeconds",
    }
)

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": [API_VERSION]},
        "kind": {"type": "string", "enum": [KIND]},
        # metadata is Kubernetes' ObjectMeta: labels, annotations, namespace, ... are all legitimate.
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": MAX_JOB_NAME_LENGTH}},
        },
        "status": {"type": "object"},
        "spec": SPEC_SCHEMA,
    },
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MEMORY_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


class JobSpecError(ValueError):
    """A job file with problems; ``problems`` lists each one as "field: what is wrong"."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"invalid SabotJob: {self.problems[0]}")
        else:
            super().__init__("invalid SabotJob:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class GeneratedColumn:
    name: str
    type: str
    distinct: int
    null_fraction: float


@dataclass(frozen=True)
class StorageSpec:
    s3_endpoint: str | None = None
    s3_region: str | None = None


@dataclass(frozen=True)
class RecoverySpec:
    max_agent_replacements: int = DEFAULT_AGENT_REPLACEMENTS
    hung_after_seconds: int = DEFAULT_HUNG_AFTER_SECONDS

    @classmethod
    def of(cls, spec: dict) -> "RecoverySpec":
        """spec.recovery of a (validated) job spec, its defaults filled in."""
        recovery = spec.get("recovery") or {}
        return cls(recovery.get("maxAgentReplacements", DEFAULT_AGENT_REPLACEMENTS), recovery.get("hungAfterSeconds", DEFAULT_HUNG_AFTER_SECONDS))


@dataclass(frozen=True)
class InputSpec:
    name: str
    format: str | None = None
    path: str | None = None
    rows: int | None = None
    seed: int = 0
    columns: tuple[GeneratedColumn, ...] = ()
    storage: StorageSpec = StorageSpec()  # how to reach object storage (the job's spec.storage)

    @property
    def generated(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class Aggregation:
    column: str
    function: str
    output: str


@dataclass(frozen=True)
class AggregateSpec:
    input: str
    group_by: tuple[str, ...]
    aggregations: tuple[Aggregation, ...]
    where: str | None = None


@dataclass(frozen=True)
class JoinSpec:
    left: str
    right: str
    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    where: str | None = None
    same_keys: bool = True  # given as `on` (one list of column names for both sides)


@dataclass(frozen=True)
class OutputSpec:
    format: str
    path: str
    mode: str = "error-if-exists"



@dataclass(frozen=True)
class JobSpec:
    name: str
    agents: int
    slots_per_agent: int
    threads_per_agent: int | None
    memory_budget_bytes: int | None
    partitions: int | None  # None: the planner's default for the agent and slot counts
    inputs: dict[str, InputSpec]
    output: OutputSpec
    aggregate: AggregateSpec | None = None
    join: JoinSpec | None = None
    sql: str | None = None
    storage: StorageSpec = StorageSpec()
    recovery: RecoverySpec = RecoverySpec()
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def parse_memory(text: str) -> int:
    """Bytes of a Kubernetes-style quantity such as ``512Mi`` or ``2G``."""
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?", text.strip())
    if not match:
        raise ValueError(f"not a memory quantity: {text!r} (examples: 268435456, 256Mi, 2Gi)")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def generated_schema(spec: InputSpec) -> pa.Schema:
    types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    return pa.schema([(column.name, types[column.type]) for column in spec.columns])


def field_path(parts) -> str:
    """``spec.pipeline.aggregate.groupBy[0]`` for the path ("spec", "pipeline", "aggregate", "groupBy", 0)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<document>"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problem(error: jsonschema.ValidationError) -> str:
    where = field_path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        unexpected = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return "; ".join(f"{field_path([*error.absolute_path, name])}: unknown field" for name in unexpected)
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{field_path([*error.absolute_path, missing])}: required field is missing"
    if kind == "type":
        return f"{where}: expected {error.validator_value}, got {type(error.instance).__name__} {_describe(error.instance)}"
    if kind == "enum":
        return f"{where}: {_describe(error.instance)} is not one of {', '.join(map(str, error.validator_value))}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{where}: must be >= {error.validator_value}, got {_describe(error.instance)}"
    if kind in ("maximum", "exclusiveMaximum"):
        return f"{where}: must be <= {error.validator_value}, got {_describe(error.instance)}"
    if kind in ("minItems", "minProperties"):
        return f"{where}: needs at least {error.validator_value} entr{'y' if error.validator_value == 1 else 'ies'}"
    if kind in ("maxItems", "maxProperties"):
        return f"{where}: allows at most {error.validator_value} entries"
    if kind == "minLength":
        return f"{where}: must not be empty"
    if kind == "maxLength":
        why = f" (agent pods are named <name>-agent-<index>, a DNS label of at most {MAX_NAME_LENGTH})" if where == "metadata.name" else ""
        return f"{where}: longer than {error.validator_value} characters{why}"
    if kind == "pattern":
        return f"{where}: {_describe(error.instance)} does not match {error.validator_value}"
    return f"{where}: {error.message}"


def kubernetes_openapi_schema(schema: Mapping[str, Any] = PIPELINE_SCHEMA) -> dict[str, Any]:
    """A copy fit for a CRD's openAPIV3Schema: Kubernetes forbids additionalProperties next to properties."""
    result = copy.deepcopy(dict(schema))

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is False:
                del node["additionalProperties"]
            for child in node.values():
                strip(child)
        elif isinstance(node, list):
            for child in node:
                strip(child)

    strip(result)
    return result


SchemaResolver = Callable[[InputSpec], pa.Schema]


def validate_job(doc: Any, resolve_schema: SchemaResolver | None = None) -> JobSpec:
    """Validate a parsed job file completely and return it as a JobSpec.

    Cluster-only spec fields (CLUSTER_SPEC_FIELDS) are left to the CRD and ignored here.

    ``resolve_schema`` reads the schema of a file input (``inputs.resolve_schema``); when given, column
    names used by the pipeline are checked against file inputs too, and an unreadable input is reported
    as a problem of its ``path`` field. Generated inputs are always checked.
    """
    original = doc
    if isinstance(doc, dict) and isinstance(doc.get("spec"), dict):
        doc = {**doc, "spec": {key: value for key, value in doc["spec"].items() if key not in CLUSTER_SPEC_FIELDS}}
    problems = [_schema_problem(error) for error in jsonschema.Draft7Validator(JOB_SCHEMA).iter_errors(doc)]
    problems = sorted(set(problem for problem in problems if problem))
    if problems:
        raise JobSpecError(problems)
    job = _build(doc, original)
    problems = _semantic_problems(job, resolve_schema)
    if problems:
        raise JobSpecError(problems)
    return job


def _build(doc: dict, original: dict) -> JobSpec:
    spec = doc["spec"]
    pipeline = spec["pipeline"]
    s3 = spec.get("storage", {}).get("s3", {})
    storage = StorageSpec(s3_endpoint=s3.get("endpoint"), s3_region=s3.get("region"))
    inputs = {}
    for name, entry in pipeline["inputs"].items():
        generate = entry.get("generate")
        if generate is None:
            inputs[name] = InputSpec(name=name, format=entry.get("format"), path=entry.get("path"), storage=storage)
        else:
            rows = generate["rows"]
            columns = tuple(
                GeneratedColumn(
                    name=column_name,
                    type=column["type"],
                    distinct=column.get("distinct", rows),
                    null_fraction=float(column.get("nullFraction", 0.0)),
                )
                for column_name, column in generate["columns"].items()
            )
            inputs[name] = InputSpec(
                name=name, format=entry.get("format"), path=entry.get("path"), rows=rows, seed=generate.get("seed", 0), columns=columns
            )
    aggregate = None
    if "aggregate" in pipeline:
        entry = pipeline["aggregate"]
        aggregate = AggregateSpec(
            input=entry["input"],
            group_by=tuple(entry["groupBy"]),
            aggregations=tuple(
                Aggregation(item["column"], item["function"], item.get("as", f"{item['column']}_{item['function']}"))
                for item in entry["aggregations"]
            ),
            where=entry.get("where"),
        )
    join = None
    if "join" in pipeline:
        entry = pipeline["join"]
        same = "on" in entry
        join = JoinSpec(
            left=entry["left"],
            right=entry["right"],
            left_on=tuple(entry.get("on", entry.get("leftOn", ()))),
            right_on=tuple(entry.get("on", entry.get("rightOn", ()))),
            how=entry.get("how", "inner"),
            where=entry.get("where"),
            same_keys=same,
        )
    memory = spec.get("memoryBudget")
    return JobSpec(
        name=doc["metadata"]["name"],
        agents=spec.get("agents", 1),
        slots_per_agent=spec.get("slotsPerAgent", 1),
        threads_per_agent=spec.get("threadsPerAgent"),
        memory_budget_bytes=parse_memory(memory) if memory else None,
        partitions=pipeline["shuffle"]["partitions"] if "shuffle" in pipeline else None,
        inputs=inputs,
        output=OutputSpec(format=pipeline["output"]["format"], path=pipeline["output"]["path"],
                          mode=pipeline["output"].get("mode", OUTPUT_MODES[0])),
        storage=storage,
        recovery=RecoverySpec.of(spec),
        aggregate=aggregate,
        join=join,
        sql=pipeline.get("sql"),
        raw=original,
    )


def _semantic_problems(job: JobSpec, resolve_schema: SchemaResolver | None) -> list[str]:
    problems: list[str] = []
    if not _DNS_LABEL.match(job.name):
        problems.append(f"metadata.name: {job.name!r} must be a DNS label (lowercase letters, digits, '-')")
    schemas: dict[str, pa.Schema] = {}
    for name, spec in job.inputs.items():
        where = f"spec.pipeline.inputs.{name}"
        if not _DNS_LABEL.match(name) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"{where}: input name must be an identifier")
        if spec.path is not None and spec.rows is not None:
            problems.append(f"{where}: give either 'path' (with 'format') or 'generate', not both")
        elif spec.path is None and spec.rows is None:
            problems.append(f"{where}: needs 'path' with 'format', or 'generate'")
        elif spec.path is not None and spec.format is None:
            problems.append(f"{where}.format: required with 'path' (one of {', '.join(FILE_FORMATS)})")
        elif spec.rows is not None and spec.format is not None:
            problems.append(f"{where}.format: only file inputs take a format; generated data has none")
        elif spec.rows is not None:
            schemas[name] = generated_schema(spec)
        elif resolve_schema is not None:
            try:
                schemas[name] = resolve_schema(spec)
            except Exception as exc:  # any reader error is a problem of this input's path
                problems.append(f"{where}.path: cannot read {spec.format} input {spec.path!r}: {exc}")

    given = [name for name, value in (("aggregate", job.aggregate), ("join", job.join), ("sql", job.sql)) if value is not None]
    if len(given) != 1:
        problems.append(f"spec.pipeline: needs exactly one of 'aggregate', 'join' or 'sql' (got {', '.join(given) or 'none'})")

    def check_input(where: str, name: str) -> bool:
        if name not in job.inputs:
            problems.append(f"{where}: unknown input {name!r} (inputs: {', '.join(job.inputs)})")
            return False
        return name in schemas

    def check_column(where: str, input_name: str, column: str) -> pa.DataType | None:
        schema = schemas[input_name]
        if column not in schema.names:
            problems.append(f"{where}: unknown column {column!r} in input {input_name!r} (columns: {', '.join(schema.names)})")
            return None
        return schema.field(column).type

    if job.aggregate is not None:
        base = "spec.pipeline.aggregate"
        aggregate = job.aggregate
        known = check_input(f"{base}.input", aggregate.input)
        _check_unique(problems, f"{base}.groupBy", aggregate.group_by)
        if known:
            for index, key in enumerate(aggregate.group_by):
                key_type = check_column(f"{base}.groupBy[{index}]", aggregate.input, key)
                if key_type is not None and sql_types.engine_type(key_type) is None:
                    problems.append(f"{base}.groupBy[{index}]: column {key!r} is {key_type}, which cannot be a group key yet")
        outputs = set(aggregate.group_by)
        for index, item in enumerate(aggregate.aggregations):
            where = f"{base}.aggregations[{index}]"
            if known:
                column_type = check_column(f"{where}.column", aggregate.input, item.column)
                if column_type is not None and sql_types.engine_type(column_type) is None:
                    problems.append(f"{where}.column: {item.column!r} is {column_type}, which cannot be aggregated yet")
                elif (
                    column_type is not None
                    and item.function in NUMERIC_ONLY_FUNCTIONS
                    and not (pa.types.is_integer(column_type) or pa.types.is_floating(column_type) or pa.types.is_decimal(column_type))
                ):
                    problems.append(f"{where}.function: {item.function} needs a numeric column, {item.column!r} is {column_type}")
            if item.output in outputs:
                problems.append(f"{where}.as: output column {item.output!r} is used twice")
            outputs.add(item.output)

    if job.join is not None:
        base = "spec.pipeline.join"
        join = job.join
        left_known = check_input(f"{base}.left", join.left)
        right_known = check_input(f"{base}.right", join.right)
        if join.left == join.right:
            problems.append(f"{base}.right: joins {join.right!r} with itself; give the second side its own input")
        entry = job.raw["spec"]["pipeline"]["join"]
        if "on" in entry and ("leftOn" in entry or "rightOn" in entry):
            problems.append(f"{base}: give either 'on' or 'leftOn' with 'rightOn', not both")
        elif "on" not in entry and ("leftOn" not in entry or "rightOn" not in entry):
            problems.append(f"{base}: needs 'on' (key columns of both sides) or 'leftOn' with 'rightOn'")
        elif len(join.left_on) != len(join.right_on):
            problems.append(f"{base}.rightOn: has {len(join.right_on)} columns, leftOn has {len(join.left_on)}")
        left_field, right_field = ("on", "on") if join.same_keys else ("leftOn", "rightOn")
        _check_unique(problems, f"{base}.{left_field}", join.left_on)
        if not join.same_keys:
            _check_unique(problems, f"{base}.{right_field}", join.right_on)
        for index, (left_key, right_key) in enumerate(zip(join.left_on, join.right_on)):
            left_type = check_column(f"{base}.{left_field}[{index}]", join.left, left_key) if left_known else None
            right_type = check_column(f"{base}.{right_field}[{index}]", join.right, right_key) if right_known else None
            if left_type is not None and right_type is not None and not _joinable(left_type, right_type):
                right_name = "" if join.same_keys else f"{right_key!r} is "
                problems.append(
                    f"{base}.{left_field}[{index}]: key {left_key!r} is {left_type} in {join.left!r} but {right_name}{right_type} in {join.right!r}"
                )
    return problems


def _joinable(left: pa.DataType, right: pa.DataType) -> bool:
    if sql_types.engine_type(left) is None or sql_types.engine_type(right) is None:
        return False
    try:
        sql_types.comparable(left, right, "join keys")
    except sql_types.PlanError:
        return False
    return True


def _check_unique(problems: list[str], where: str, names: tuple[str, ...]) -> None:
    seen = set()
    for index, name in enumerate(names):
        if name in seen:
            problems.append(f"{where}[{index}]: {name!r} is listed twice")
        seen.add(name)


def _yaml_loader():
    """A safe loader with YAML 1.2 booleans (PyYAML's 1.1 rules would turn the key `on` (join.on) into
    True) that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""
    import yaml

    class JobLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first_lines: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *anchor` merges may repeat keys by design
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # an unhashable key: the base constructor reports it
                    line = key_node.start_mark.line + 1
                    if key in first_lines:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (first given on line {first_lines[key]})", key_node.start_mark
                        )
                    first_lines[key] = line
            return super().construct_mapping(node, deep)

    JobLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    JobLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return JobLoader


def load_job_file(path: str, resolve_schema: SchemaResolver | None = None) -> JobSpec:
    """Read and validate a YAML (or JSON) job file."""
    import yaml

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise JobSpecError([f"{path}: cannot read job file: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JobSpecError([f"{path}: line {line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"]) from None
    try:
        doc = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}: line {mark.line + 1}, column {mark.column + 1}" if mark else path
        raise JobSpecError([f"{where}: not valid YAML: {' '.join(str(exc.problem or exc.context).split())}"]) from None
    except yaml.YAMLError as exc:
        raise JobSpecError([f"{path}: not valid YAML: {' '.join(str(exc).split())}"]) from None
    return validate_job(doc, resolve_schema)
