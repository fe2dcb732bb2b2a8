"""Invalid SabotJobs, one per kind of mistake: the operator's validation and the API server (schema
and CEL rules) must both reject each, naming the field.

Each case: (id, name override or None, spec merge patch, field that must be named, fragment of the
API server's message).
"""
from __future__ import annotations

LONG_NAME = "a" * 60


def volume(name: str, mount_path: str) -> dict:
    return {"name": name, "mountPath": mount_path, "persistentVolumeClaim": {"claimName": f"{name}-claim"}}


REGIONS = {"generate": {"rows": 10, "columns": {"region": {"type": "string"}, "manager": {"type": "string"}}}}

INVALID_SPECS = [
    ("zero-agents", None, {"agents": 0}, "spec.agents", "greater than or equal to 1"),
    ("privileged-flight-port", None, {"flightPort": 80}, "spec.flightPort", "greater than or equal to 1024"),
    ("unknown-pull-policy", None, {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", "Unsupported value"),
    ("bad-memory-budget", None, {"memoryBudget": "lots"}, "spec.memoryBudget", "should match"),
    ("retry-limit-too-high", None, {"retry": {"limit": 1000}}, "spec.retry.limit", "less than or equal to 100"),
    ("missing-pipeline", None, {"pipeline": None}, "spec.pipeline", "Required value"),
    ("same-ports", None, {"flightPort": 9000, "metricsPort": 9000}, "spec.metricsPort", "must differ from flightPort"),
    ("host-ports-past-65535", None, {"hostNetwork": True, "agents": 10, "flightPort": 65530, "metricsPort": 9000}, "spec.flightPort", "flightPort + agents - 1 must be <= 65535"),
    ("host-metrics-ports-past-65535", None, {"hostNetwork": True, "agents": 10, "flightPort": 9000, "metricsPort": 65530}, "spec.metricsPort", "metricsPort + agents - 1 must be <= 65535"),
    ("host-port-ranges-overlap", None, {"hostNetwork": True, "agents": 4, "flightPort": 9000, "metricsPort": 9002}, "spec.metricsPort", "must not overlap"),
    ("aggregate-and-join", None, {"pipeline": {"join": {"left": "sales", "right": "sales", "on": ["region"]}}}, "spec.pipeline", "exactly one of sql, aggregate or join"),
    ("sql-and-aggregate", None, {"pipeline": {"sql": "SELECT region FROM sales"}}, "spec.pipeline", "exactly one of sql, aggregate or join"),
    ("aggregate-unknown-input", None, {"pipeline": {"aggregate": {"input": "nope"}}}, "spec.pipeline.aggregate.input", "must name one of pipeline.inputs"),
    ("join-with-itself", None, {"pipeline": {"aggregate": None, "join": {"left": "sales", "right": "sales", "on": ["region"]}}}, "spec.pipeline.join.right", "two different inputs"),
    ("join-unknown-left", None, {"pipeline": {"aggregate": None, "join": {"left": "nope", "right": "sales", "on": ["region"]}}}, "spec.pipeline.join.left", "join.left must name one of pipeline.inputs"),
    ("join-unknown-right", None, {"pipeline": {"aggregate": None, "join": {"left": "sales", "right": "nope", "on": ["region"]}}}, "spec.pipeline.join.right", "join.right must name one of pipeline.inputs"),
    ("duplicate-join-keys", None, {"pipeline": {"aggregate": None, "inputs": {"regions": REGIONS}, "join": {"left": "sales", "right": "regions", "on": ["region", "region"]}}}, "spec.pipeline.join.on", "join keys must be unique"),
    ("duplicate-group-by", None, {"pipeline": {"aggregate": {"groupBy": ["region", "region"]}}}, "spec.pipeline.aggregate.groupBy", "must be unique"),
    ("path-without-format", None, {"pipeline": {"inputs": {"files": {"path": "/data/in"}}}}, "spec.pipeline.inputs.files.format", "format is required with path"),
    ("path-and-generate", None, {"pipeline": {"inputs": {"sales": {"path": "/data/in", "format": "parquet"}}}}, "spec.pipeline.inputs.sales", "either path (with format) or generate"),
    ("two-spill-volumes", None, {"spill": {"emptyDir": {"sizeLimit": "1Gi"}, "persistentVolumeClaim": {"claimName": "scratch"}}}, "spec.spill", "exactly one of emptyDir or persistentVolumeClaim"),
    ("volume-name-not-a-label", None, {"volumes": [volume("Data", "/data")]}, "spec.volumes[0].name", "should match"),
    ("relative-mount-path", None, {"volumes": [volume("data", "data")]}, "spec.volumes[0].mountPath", "should match"),
    ("duplicate-volume-names", None, {"volumes": [volume("data", "/data"), volume("data", "/in")]}, "spec.volumes", "volume names must be unique"),
    ("nested-mount-paths", None, {"volumes": [volume("data", "/data"), volume("inputs", "/data/in")]}, "spec.volumes", "mountPaths must not overlap"),
    ("mount-path-in-tmp", None, {"volumes": [volume("scratch", "/tmp/scratch")]}, "spec.volumes", "the agent's own mounts"),
    ("mount-path-above-the-plan", None, {"volumes": [volume("etc", "/etc")]}, "spec.volumes", "the agent's own mounts"),
    ("reserved-pod-label", None, {"pod": {"labels": {"sabot.io/attempt": "7"}}}, "spec.pod.labels", "reserved for the operator"),
    ("pod-env-sets-an-agent-setting", None, {"pod": {"env": [{"name": "SABOT_AGENT_INDEX", "value": "3"}]}}, "spec.pod.env", "names the operator sets"),
    ("pod-env-sets-the-s3-keys", None, {"storage": {"s3": {"credentialsSecret": "s3-keys"}}, "pod": {"env": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]}},
     "spec.pod.env", "pod.env cannot set them too"),
    ("pod-env-twice", None, {"pod": {"env": [{"name": "TZ", "value": "UTC"}, {"name": "TZ", "value": "CET"}]}}, "spec.pod.env", "must be unique"),
    ("pod-env-value-and-value-from", None, {"pod": {"env": [{"name": "TZ", "value": "UTC", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "tz"}}}]}},
     "spec.pod.env[0]", "value or valueFrom, not both"),
    ("pod-env-value-from-nothing", None, {"pod": {"env": [{"name": "TZ", "valueFrom": {}}]}}, "spec.pod.env[0].valueFrom", "exactly one of secretKeyRef or configMapKeyRef"),
    ("pod-env-bad-name", None, {"pod": {"env": [{"name": "1TZ", "value": "UTC"}]}}, "spec.pod.env[0].name", "should match"),
    ("name-too-long", LONG_NAME, {}, "metadata.name", "at most 52 characters"),
    ("unknown-tls-mode", None, {"security": {"tls": "optional"}}, "spec.security.tls", "Unsupported value"),
    ("issuer-without-tls", None, {"security": {"tls": "disabled", "issuerRef": {"name": "agents-ca"}}}, "spec.security.issuerRef", "needs tls enabled"),
    ("metrics-from-without-policy", None, {"security": {"networkPolicy": "disabled", "metricsFrom": [{"podSelector": {}}]}},
     "spec.security.metricsFrom", "needs networkPolicy enabled"),
    ("unknown-issuer-kind", None, {"security": {"issuerRef": {"name": "agents-ca", "kind": "Vault"}}}, "spec.security.issuerRef.kind", "Unsupported value"),
]
