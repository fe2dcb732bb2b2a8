"""The SabotJob CustomResourceDefinition, built in Python; `hack/gen_crd.py` writes it to crds/sabotjob.yaml.

`spec.pipeline` is the agent's PIPELINE_SCHEMA (the schema `sabot run` validates), so a pipeline has
one definition. Every CEL rule is a `Rule` that also carries its Python twin: the operator runs the
same checks itself (validation.py), so clusters without CEL report the same problems.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sabot_agent import jobspec
from sabot_agent.jobspec import API_VERSION, GROUP, KIND, MAX_JOB_NAME_LENGTH, VERSION  # noqa: F401 - owned by the job schema
from sabot_agent.security import ENABLED

from sabot_agent.settings import ENV

from . import volumes

PLURAL = "sabotjobs"
SINGULAR = "sabotjob"
SHORT_NAMES = ["sj"]

DEFAULT_IMAGE = "sabot:0.1.0"
DEFAULT_FLIGHT_PORT = 8815
DEFAULT_METRICS_PORT = 8080
# Agents drop every capability, so they cannot bind privileged ports.
MIN_PORT = 1024
MAX_PORT = 65535
MAX_RETRIES = 100
MAX_BACKOFF_SECONDS = 3600
MAX_SECONDS = 31_536_000  # one year: bounds every duration field

MAX_MESSAGE_LENGTH = 4096  # the kubelet's limit for a termination message, too
PHASES = ("Pending", "Starting", "Running", "Succeeded", "Failed", "Suspended")
ACTIVE_PHASES = ("Starting", "Running")
# AgentsScheduled: whether the scheduler placed every pod of the current (or last) attempt; False with
# reason Unschedulable and the scheduler's message when it cannot. A condition of its own rather than
# Degraded, which records failures and keeps them for the job's life.
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "AgentsScheduled")

# Kubernetes' resource.Quantity syntax (apimachinery/pkg/api/resource).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


def _integer(minimum: int, maximum: int, description: str, default: int | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description}
    if default is not None:
        node["default"] = default
    return node


def _string(max_length: int, description: str, min_length: int = 1, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "description": description, **extra}


def _string_map(max_entries: int, max_value_length: int, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": max_entries,
        "additionalProperties": {"type": "string", "maxLength": max_value_length},
        "description": description,
    }


def _quantity(description: str) -> dict[str, Any]:
    # int-or-string is the only structural form for quantities; the pattern applies to the string form.
    return {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "maxLength": 64,
        "description": description,
    }


# The API server holds numeric bounds as float64: 2**63 - 1 rounds up to 2**63 and wraps to a negative
# int64 bound that refuses every value. 2**63 - 1024 is the largest int64 a float64 holds exactly.
MAX_INT64_BOUND = 2**63 - 1024


def fit_bounds(schema: Any) -> Any:
    """A copy of `schema` whose maxima the API server can represent."""
    if isinstance(schema, dict):
        fitted = {key: fit_bounds(value) for key, value in schema.items()}
        if isinstance(fitted.get("maximum"), int) and fitted["maximum"] > MAX_INT64_BOUND:
            fitted["maximum"] = MAX_INT64_BOUND
        return fitted
    if isinstance(schema, list):
        return [fit_bounds(item) for item in schema]
    return schema


def _from_agent(name: str, **overrides: Any) -> dict[str, Any]:
    """A spec field the agent's job schema also defines: same bounds, operator defaults on top."""
    return {**copy.deepcopy(jobspec.SPEC_SCHEMA["properties"][name]), **overrides}


_RESOURCE_LIST = {
    "type": "object",
    "maxProperties": 16,
    "additionalProperties": _quantity("a resource quantity"),
}

_TOLERATION = {
    "type": "object",
    "properties": {
        "key": _string(253, "taint key; empty with operator Exists matches every taint", min_length=0),
        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
        "value": _string(63, "taint value", min_length=0),
        "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": _integer(0, MAX_SECONDS, "how long a NoExecute taint is tolerated"),
    },
}

# The keys of `spec.storage.s3.credentialsSecret`, passed to the agents as these variables (the AWS
# SDK inside pyarrow reads them); the manifest names the Secret, never holds a value.
S3_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# spec.pod.env may not set what the operator sets: the agent's settings, and the S3 keys it passes
RESERVED_ENV = tuple(sorted(ENV.values()))
MAX_POD_ENV = 64
_KEY_REF = {
    "type": "object",
    "required": ["name", "key"],
    "properties": {"name": _string(253, "name of the object in the job's namespace"), "key": _string(253, "key in it")},
}

SPEC_PROPERTIES: dict[str, Any] = {
    "image": _string(1024, "agent container image", default=DEFAULT_IMAGE),
    "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"], "default": "IfNotPresent"},
    "agents": _from_agent("agents", default=1, description="number of agent pods; fixed while a shuffle is live"),
    "slotsPerAgent": _from_agent("slotsPerAgent", default=1, description="task slots of each agent"),
    "threadsPerAgent": _from_agent("threadsPerAgent", description="native executor threads of each agent (default: slotsPerAgent)"),
    "flightPort": _integer(MIN_PORT, MAX_PORT, "Arrow Flight port (with hostNetwork agent i uses flightPort + i)", DEFAULT_FLIGHT_PORT),
    "metricsPort": _integer(MIN_PORT, MAX_PORT, "HTTP port for /metrics, /healthz, /readyz (with hostNetwork agent i uses metricsPort + i)", DEFAULT_METRICS_PORT),
    "hostNetwork": {"type": "boolean", "default": False, "description": "run agents in the node's network namespace; each agent then gets its own ports"},
    "resources": {
        "type": "object",
        "description": "compute resources of each agent container",
        "properties": {"requests": _RESOURCE_LIST, "limits": _RESOURCE_LIST},
    },
    "memoryBudget": _from_agent("memoryBudget", description="memory an agent's partition store may hold before it spills"),
    "spill": {
        "type": "object",
        "description": "where agents spill partitions over the memory budget: an emptyDir or a PersistentVolumeClaim (one subdirectory per agent)",
        "properties": {
            "emptyDir": {
                "type": "object",
                "properties": {
                    "sizeLimit": _quantity("emptyDir size limit"),
                    "medium": {"type": "string", "enum": ["", "Memory"]},
                },
            },
            "persistentVolumeClaim": {
                "type": "object",
                "required": ["claimName"],
                "properties": {"claimName": _string(253, "name of a claim in the job's namespace")},
            },
        },
    },
    "volumes": volumes.SCHEMA,
    "pipeline": fit_bounds(jobspec.kubernetes_openapi_schema(jobspec.PIPELINE_SCHEMA)),
    "pod": {
        "type": "object",
        "description": "overrides for the agent pods",
        "properties": {
            "labels": _string_map(64, 63, "extra pod labels"),
            "annotations": _string_map(64, 4096, "extra pod annotations"),
            "nodeSelector": _string_map(64, 63, "node selector"),
            "tolerations": {"type": "array", "maxItems": 32, "items": _TOLERATION},
            "affinity": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "a core/v1 Affinity"},
            "priorityClassName": _string(253, "priority class of the agent pods"),
            "schedulerName": _string(253, "scheduler of the agent pods"),
            "serviceAccountName": _string(253, "service account of the agent pods (its token is never mounted)"),
            "env": {
                "type": "array",
                "maxItems": MAX_POD_ENV,
                "description": "extra environment variables of the agent container (not the ones the operator sets)",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": _string(256, "variable name", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
                        "value": {"type": "string", "maxLength": 32768},
                        "valueFrom": {
                            "type": "object",
                            "description": "exactly one of secretKeyRef or configMapKeyRef",
                            "properties": {kind: _KEY_REF for kind in ("secretKeyRef", "configMapKeyRef")},
                        },
                    },
                },
            },
        },
    },
    "retry": {
        "type": "object",
        "default": {},
        "description": "a failed agent fails the attempt; a new attempt starts after an exponential backoff",
        "properties": {
            "limit": _integer(0, MAX_RETRIES, "failed attempts retried before the job fails", 3),
            "backoffSeconds": _integer(1, MAX_BACKOFF_SECONDS, "delay before the first retry; doubles per failure", 10),
        },
    },
    "ttlSecondsAfterFinished": _from_agent("ttlSecondsAfterFinished", description="delete the job this long after it finished"),
    # No defaults: absent fields mean enabled, and a default would change the spec (hash) of every job
    # started before the upgrade.
    "security": {
        **jobspec.kubernetes_openapi_schema(jobspec.SPEC_SCHEMA["properties"]["security"]),
        "description": "transport security of the agents: mutual TLS (tls, default enabled; issuerRef: cert-manager issues the "
        "certificates instead of the operator's per-attempt CA) and the job's NetworkPolicy (networkPolicy, default enabled; "
        "metricsFrom: who may reach the metrics port, default anyone)",
    },
    "storage": {
        **jobspec.kubernetes_openapi_schema(jobspec.SPEC_SCHEMA["properties"]["storage"]),
        "description": "how agents reach object storage: s3.endpoint, s3.region, s3.credentialsSecret (a Secret with "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
    },
    # No defaults, as for security: the agents apply them.
    "recovery": {
        **jobspec.kubernetes_openapi_schema(jobspec.SPEC_SCHEMA["properties"]["recovery"]),
        "description": f"agent-level recovery: a killed or hung agent is replaced by one of the same index, up to "
        f"maxAgentReplacements (default {jobspec.DEFAULT_AGENT_REPLACEMENTS}) per attempt; hungAfterSeconds (default "
        f"{jobspec.DEFAULT_HUNG_AFTER_SECONDS}): an agent whose health endpoint has not answered this long is hung",
    },
    "suspend": {"type": "boolean", "default": False, "description": "remove the agents; resuming starts a new attempt"},
    "activeDeadlineSeconds": _integer(1, MAX_SECONDS, "fail the job when it has run this long (not counting suspended time)"),
    # No default: a startup may legitimately take long (image pulls on many nodes, nodes being added),
    # and a default would change the spec (hash) of every job started before the upgrade.
    "startupDeadlineSeconds": _integer(
        1, MAX_SECONDS,
        "fail the attempt (counted against retry.limit, its pods deleted) when its agents are not all ready this long after it started",
    ),
}

_TIME = {"type": "string", "format": "date-time"}
# status.replacements keeps the latest ones: one attempt replaces at most jobspec.MAX_AGENT_REPLACEMENTS
MAX_RECORDED_REPLACEMENTS = jobspec.MAX_AGENT_REPLACEMENTS

_COUNT = {"type": "integer", "minimum": 0}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the published result: its location (the job's output path), rows and part files (agent 0 reports it)",
    "properties": {"uri": {"type": "string", "maxLength": jobspec.MAX_PATH_LENGTH}, "rows": _COUNT, "parts": _COUNT},
}
RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "what the agent reported in its termination message",
    "properties": {
        "rowsIn": _COUNT,
        "rowsShuffled": _COUNT,
        "rowsOut": _COUNT,
        "bytesShuffled": _COUNT,
        "spilledBytes": _COUNT,
        "seconds": {"type": "number", "minimum": 0},
        "outputFiles": {"type": "array", "maxItems": 4096, "items": {"type": "string", "maxLength": jobspec.MAX_PATH_LENGTH}},
        # An unsigned 64-bit sum: beyond the API server's int64, so kept as decimal text.
        "checksum": {"type": "string", "maxLength": 20},
        "output": OUTPUT_SCHEMA,
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": list(PHASES)},
        "conditions": {
            "type": "array",
            "maxItems": 8,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string", "enum": list(CONDITION_TYPES)},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string", "maxLength": 128},
                    "message": {"type": "string", "maxLength": MAX_MESSAGE_LENGTH},
                    "lastTransitionTime": _TIME,
                    "observedGeneration": {"type": "integer", "minimum": 0},
                },
            },
        },
        "observedGeneration": {"type": "integer", "minimum": 0},
        "attempt": {"type": "integer", "minimum": 0, "description": "the current attempt; every attempt has its own shuffle ids"},
        "failedAttempts": {"type": "integer", "minimum": 0},
        "ready": {"type": "string", "maxLength": 16, "description": "ready agents / all agents"},
        "specHash": {"type": "string", "maxLength": 64, "description": "hash of the spec the current attempt runs"},
        "startTime": _TIME,
        "attemptStartTime": {**_TIME, "description": "when the current attempt started; startupDeadlineSeconds counts from it"},
        "completionTime": _TIME,
        "nextAttemptTime": _TIME,
        "output": OUTPUT_SCHEMA,
        "agents": {
            "type": "array",
            "maxItems": jobspec.MAX_AGENTS,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 63},
                    "index": {"type": "integer", "minimum": 0},
                    "address": {"type": "string", "maxLength": 253},
                    "flightPort": {"type": "integer"},
                    "metricsPort": {"type": "integer"},
                    "slots": {"type": "integer"},
                    "phase": {"type": "string", "maxLength": 32},
                    "ready": {"type": "boolean"},
                    "message": {"type": "string", "maxLength": MAX_MESSAGE_LENGTH},
                    "replacements": {"type": "integer", "minimum": 0, "description": "times this agent was replaced in the attempt"},
                    "result": RESULT_SCHEMA,
                },
            },
        },
        "replacements": {
            "type": "array",
            "maxItems": MAX_RECORDED_REPLACEMENTS,
            "description": "the agents replaced (a new pod of the same index and name) instead of retrying their attempt; the latest last",
            "items": {
                "type": "object",
                "properties": {
                    "attempt": {"type": "integer", "minimum": 0},
                    "agent": {"type": "integer", "minimum": 0},
                    "reason": {"type": "string", "maxLength": MAX_MESSAGE_LENGTH},
                    "time": _TIME,
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Rule:
    """One CEL rule of the CRD and its Python twin.

    `path` locates the schema node the rule sits on, from the object root ("*" = every value of a
    map, "#" = every item of a list); `field` is the field a violation is reported on, relative to that node. `holds` receives
    the node with defaults applied, as CEL sees it.
    """

    path: tuple[str, ...]
    field: str
    cel: str
    message: str
    holds: Callable[[dict], bool]


def _unique(values: list) -> bool:
    return len(set(values)) == len(values)


def _cel_list(values) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _ports_in_range(port_field: str) -> Rule:
    return Rule(
        ("spec",), f".{port_field}",
        f"!self.hostNetwork || self.{port_field} + self.agents - 1 <= {MAX_PORT}",
        f"with hostNetwork agent i listens on {port_field} + i, so {port_field} + agents - 1 must be <= {MAX_PORT}",
        lambda spec: not spec["hostNetwork"] or spec[port_field] + spec["agents"] - 1 <= MAX_PORT,
    )


_RESERVED_LABEL_PREFIXES = ("sabot.io/", "app.kubernetes.io/")
# a pipeline is a SQL query or one of its short forms (the job schema checks the same)
PIPELINE_FORMS = ("sql", "aggregate", "join")

RULES: tuple[Rule, ...] = (
    Rule(
        (), "",
        f"size(self.metadata.name) <= {MAX_JOB_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_JOB_NAME_LENGTH} characters so that pod names <name>-agent-<index> stay DNS labels",
        lambda job: len(job["metadata"]["name"]) <= MAX_JOB_NAME_LENGTH,
    ),
    Rule(
        ("spec",), ".metricsPort",
        "self.metricsPort != self.flightPort",
        "metricsPort must differ from flightPort: the HTTP and Flight servers are separate",
        lambda spec: spec["metricsPort"] != spec["flightPort"],
    ),
    _ports_in_range("flightPort"),
    _ports_in_range("metricsPort"),
    Rule(
        ("spec",), ".metricsPort",
        "!self.hostNetwork || self.metricsPort + self.agents <= self.flightPort || self.flightPort + self.agents <= self.metricsPort",
        "with hostNetwork the ranges flightPort..flightPort+agents-1 and metricsPort..metricsPort+agents-1 must not overlap",
        lambda spec: not spec["hostNetwork"]
        or spec["metricsPort"] + spec["agents"] <= spec["flightPort"]
        or spec["flightPort"] + spec["agents"] <= spec["metricsPort"],
    ),
    Rule(
        ("spec", "pipeline"), "",
        " + ".join(f"(has(self.{form}) ? 1 : 0)" for form in PIPELINE_FORMS) + " == 1",
        "the pipeline needs exactly one of sql, aggregate or join",
        lambda pipeline: sum(form in pipeline for form in PIPELINE_FORMS) == 1,
    ),
    Rule(
        ("spec", "pipeline"), ".aggregate.input",
        "!has(self.aggregate) || self.aggregate.input in self.inputs",
        "aggregate.input must name one of pipeline.inputs",
        lambda pipeline: "aggregate" not in pipeline or pipeline["aggregate"]["input"] in pipeline["inputs"],
    ),
    Rule(
        ("spec", "pipeline"), ".join.left",
        "!has(self.join) || self.join.left in self.inputs",
        "join.left must name one of pipeline.inputs",
        lambda pipeline: "join" not in pipeline or pipeline["join"]["left"] in pipeline["inputs"],
    ),
    Rule(
        ("spec", "pipeline"), ".join.right",
        "!has(self.join) || self.join.right in self.inputs",
        "join.right must name one of pipeline.inputs",
        lambda pipeline: "join" not in pipeline or pipeline["join"]["right"] in pipeline["inputs"],
    ),
    Rule(
        ("spec", "pipeline", "join"), ".right",
        "self.left != self.right",
        "a join needs two different inputs",
        lambda join: join["left"] != join["right"],
    ),
    Rule(
        ("spec", "pipeline", "aggregate"), ".groupBy",
        "self.groupBy.all(k, self.groupBy.exists_one(x, x == k))",
        "groupBy columns must be unique",
        lambda aggregate: _unique(aggregate["groupBy"]),
    ),
    Rule(
        ("spec", "pipeline", "join"), ".on",
        "self.on.all(k, self.on.exists_one(x, x == k))",
        "join keys must be unique",
        lambda join: _unique(join["on"]),
    ),
    # Input names are the keys of the pipeline.inputs map, so they are unique by construction.
    Rule(
        ("spec", "pipeline", "inputs", "*"), "",
        "has(self.path) != has(self.generate)",
        "an input needs either path (with format) or generate",
        lambda entry: ("path" in entry) != ("generate" in entry),
    ),
    Rule(
        ("spec", "pipeline", "inputs", "*"), ".format",
        "has(self.path) == has(self.format)",
        "format is required with path, and generated inputs take none",
        lambda entry: ("path" in entry) == ("format" in entry),
    ),
    Rule(
        ("spec", "spill"), "",
        "has(self.emptyDir) != has(self.persistentVolumeClaim)",
        "spill needs exactly one of emptyDir or persistentVolumeClaim",
        lambda spill: ("emptyDir" in spill) != ("persistentVolumeClaim" in spill),
    ),
    *(Rule(("spec", "volumes"), "", cel, message, holds) for cel, message, holds in volumes.LIST_RULES),
    Rule(
        ("spec", "security"), ".issuerRef",
        f"!has(self.issuerRef) || !has(self.tls) || self.tls == '{ENABLED}'",
        "issuerRef names who issues the agents' TLS certificates, so it needs tls enabled",
        lambda security: "issuerRef" not in security or security.get("tls", ENABLED) == ENABLED,
    ),
    Rule(
        ("spec", "security"), ".metricsFrom",
        f"!has(self.metricsFrom) || !has(self.networkPolicy) || self.networkPolicy == '{ENABLED}'",
        "metricsFrom is a rule of the job's NetworkPolicy, so it needs networkPolicy enabled",
        lambda security: "metricsFrom" not in security or security.get("networkPolicy", ENABLED) == ENABLED,
    ),
    Rule(
        ("spec", "pod", "env"), "",
        f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
        "names the operator sets (" + ", ".join(RESERVED_ENV) + ") cannot be set in pod.env",
        lambda env: not any(item["name"] in RESERVED_ENV for item in env),
    ),
    Rule(
        ("spec",), ".pod.env",
        "!has(self.storage) || !has(self.storage.s3) || !has(self.storage.s3.credentialsSecret) || !has(self.pod) || !has(self.pod.env) || "
        f"self.pod.env.all(e, !(e.name in {_cel_list(S3_CREDENTIAL_KEYS)}))",
        "with storage.s3.credentialsSecret the operator sets " + " and ".join(S3_CREDENTIAL_KEYS) + ": pod.env cannot set them too",
        lambda spec: not ((spec.get("storage") or {}).get("s3") or {}).get("credentialsSecret")
        or not any(item["name"] in S3_CREDENTIAL_KEYS for item in (spec.get("pod") or {}).get("env", [])),
    ),
    Rule(
        ("spec", "pod", "env"), "",
        "self.all(e, self.exists_one(x, x.name == e.name))",
        "pod.env names must be unique",
        lambda env: _unique([item["name"] for item in env]),
    ),
    Rule(
        ("spec", "pod", "env", "#"), "",
        "!(has(self.value) && has(self.valueFrom))",
        "a pod.env entry takes value or valueFrom, not both",
        lambda item: not ("value" in item and "valueFrom" in item),
    ),
    Rule(
        ("spec", "pod", "env", "#", "valueFrom"), "",
        "has(self.secretKeyRef) != has(self.configMapKeyRef)",
        "valueFrom needs exactly one of secretKeyRef or configMapKeyRef",
        lambda source: ("secretKeyRef" in source) != ("configMapKeyRef" in source),
    ),
    Rule(
        ("spec", "pod", "labels"), "",
        "self.all(k, " + " && ".join(f"!k.startsWith('{prefix}')" for prefix in _RESERVED_LABEL_PREFIXES) + ")",
        "label keys under " + " and ".join(_RESERVED_LABEL_PREFIXES) + " are reserved for the operator",
        lambda labels: not any(key.startswith(_RESERVED_LABEL_PREFIXES) for key in labels),
    ),
)

# The only spec field that may change while an attempt runs: everything else shapes the running
# shuffle (agent count = partition owners, ports, plan). The operator enforces the same by running
# an attempt with the spec it started with (status.specHash) and reporting any edit as Degraded.
MUTABLE_WHILE_ACTIVE = ("suspend",)


def _unchanged(field: str) -> str:
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    return f"(has({new}) ? has({old}) && {new} == {old} : !has({old}))"


def immutable_while_active_rule() -> dict[str, str]:
    """A transition rule on the root: spec rules cannot see status, and "while active" is a status fact."""
    frozen = [name for name in SPEC_PROPERTIES if name not in MUTABLE_WHILE_ACTIVE]
    active = "[" + ", ".join(f"'{phase}'" for phase in ACTIVE_PHASES) + "]"
    return {
        "rule": f"!has(oldSelf.status) || !has(oldSelf.status.phase) || !(oldSelf.status.phase in {active}) || ("
        + " && ".join(_unchanged(name) for name in frozen)
        + ")",
        "message": "spec is immutable while the job is Starting or Running; only spec.suspend may change (suspend the job first, then edit it)",
        "reason": "FieldValueForbidden",
    }


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for part in path:
        schema = schema["additionalProperties"] if part == "*" else schema["items"] if part == "#" else schema["properties"][part]
    return schema


def _object_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["pipeline"], "properties": copy.deepcopy(SPEC_PROPERTIES)},
            "status": copy.deepcopy(STATUS_SCHEMA),
        },
    }
    for rule in RULES:
        validation = {"rule": rule.cel, "message": rule.message, "reason": "FieldValueInvalid"}
        if rule.field:
            validation["fieldPath"] = rule.field
        _node(schema, rule.path).setdefault("x-kubernetes-validations", []).append(validation)
    schema["x-kubernetes-validations"].append(immutable_while_active_rule())
    return schema


OBJECT_SCHEMA = _object_schema()


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR, "shortNames": SHORT_NAMES, "listKind": f"{KIND}List"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "ready agents / all agents"},
                        {"name": "Slots", "type": "integer", "jsonPath": ".spec.slotsPerAgent", "description": "task slots per agent"},
                        {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": copy.deepcopy(OBJECT_SCHEMA)},
                }
            ],
        },
    }


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """A copy of `value` with the schema's defaults filled in, the way the API server defaults objects."""
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties", {})
        values_schema = schema.get("additionalProperties")
        result = {}
        for name, item in value.items():
            child = properties.get(name, values_schema if isinstance(values_schema, dict) else None)
            result[name] = with_defaults(item, child) if child else item
        for name, child in properties.items():
            if name not in result and "default" in child:
                result[name] = with_defaults(copy.deepcopy(child["default"]), child)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(item, schema["items"]) for item in value]
    return value


def spec_with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    return with_defaults(spec, OBJECT_SCHEMA["properties"]["spec"])


def nodes_at(document: Any, path: tuple[str, ...], where: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, node) for every node of `document` at a rule's `path`; absent nodes yield nothing."""
    if not path:
        yield where, document
        return
    head, rest = path[0], path[1:]
    if head == "#":
        for position, item in enumerate(document if isinstance(document, list) else []):
            yield from nodes_at(item, rest, f"{where}[{position}]")
        return
    if not isinstance(document, dict):
        return
    children = document.items() if head == "*" else ([(head, document[head])] if head in document else [])
    for name, child in children:
        yield from nodes_at(child, rest, f"{where}.{name}" if where else name)
