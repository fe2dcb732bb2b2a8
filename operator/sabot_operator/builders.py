"""Pure manifest builders: a SabotJob (spec with defaults applied) in, Kubernetes objects as dicts out.

Every child gets a deterministic name and is adopted by the job (ownerReference with
controller=true), so creating it twice is a 409 and deleting the job garbage-collects it. The
children every attempt shares (the plan ConfigMap and the headless Service) carry a hash of what
they hold, so the operator can tell one built for another spec from the one the attempt needs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import kopf
import yaml

from sabot_agent import jobspec

from . import crd

AGENT_CONTAINER = "agent"
AGENT_COMMAND = ["sabot-agent"]
JOB_DIR = "/etc/sabot"
JOB_FILE_KEY = "job.yaml"
PEERS_KEY = "peers"
SPILL_DIR = "/var/lib/sabot/spill"
# Agents run as an unprivileged numeric user so runAsNonRoot holds for any image.
AGENT_UID = 65532
READINESS_PATH = "/readyz"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "sabot.io/job-name"
LABEL_INDEX = "sabot.io/agent-index"
LABEL_ATTEMPT = "sabot.io/attempt"
ANNOTATION_CONTENT_HASH = "sabot.io/content-hash"
MANAGER = "sabot-operator"
AGENT_APP = "sabot-agent"


def agent_pod_name(job_name: str, index: int) -> str:
    return f"{job_name}-agent-{index}"


def service_name(job_name: str) -> str:
    return f"{job_name}-agents"


def plan_name(job_name: str) -> str:
    return f"{job_name}-plan"


def shared_child_names(job_name: str) -> dict[str, str]:
    """Kind -> name of the children every attempt of the job shares, in creation order."""
    return {"ConfigMap": plan_name(job_name), "Service": service_name(job_name)}


def job_labels(job_name: str) -> dict[str, str]:
    """Labels of every child; also the selector for the job's pods."""
    return {LABEL_NAME: AGENT_APP, LABEL_INSTANCE: job_name, LABEL_MANAGED_BY: MANAGER, LABEL_JOB: job_name}


def pod_selector(job_name: str) -> str:
    return f"{LABEL_JOB}={job_name},{LABEL_MANAGED_BY}={MANAGER}"


def agent_ports(spec: dict[str, Any], index: int) -> tuple[int, int]:
    """(Flight port, HTTP port) of agent `index`: on the host network agents of one node must not collide."""
    offset = index if spec["hostNetwork"] else 0
    return spec["flightPort"] + offset, spec["metricsPort"] + offset


def agent_address(job_name: str, index: int) -> str:
    # "<hostname>.<subdomain>" resolves through the pod's namespace search domain, whatever the
    # cluster domain is; the headless service publishes it even before the agent is ready.
    return f"{agent_pod_name(job_name, index)}.{service_name(job_name)}"


def peers(job: dict[str, Any]) -> list[str]:
    """Flight endpoints of all agents in index order: partition p is owned by peers[p mod N]."""
    name, spec = job["metadata"]["name"], job["spec"]
    return [f"{agent_address(name, index)}:{agent_ports(spec, index)[0]}" for index in range(spec["agents"])]


def agent_job_document(job: dict[str, Any]) -> dict[str, Any]:
    """The job file the agents read: the SabotJob reduced to the spec fields the agent's schema knows."""
    known = jobspec.SPEC_SCHEMA["properties"]
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": job["metadata"]["name"]},
        "spec": {key: copy.deepcopy(value) for key, value in job["spec"].items() if key in known},
    }


def _adopted(obj: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    kopf.adopt(obj, owner=job)
    return obj


def content_hash(manifest: dict[str, Any]) -> str:
    """Identity of what a child holds (a ConfigMap's data, a Service's spec), as this operator builds it.

    Hashing the built content rather than the job's spec also tells apart a child that an older
    operator version built differently from the same spec; hashing our manifest rather than the
    object read back keeps the API server's defaults out of the comparison.
    """
    payload = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind", "metadata")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _stamped(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {ANNOTATION_CONTENT_HASH: content_hash(obj)}
    return obj


def is_current(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a shared child read from the cluster is `desired`: same content, and controlled by the
    same job (not a leftover of a deleted job of the same name, which the garbage collector is about
    to remove)."""
    meta = existing.get("metadata") or {}
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")}
    wanted_owners = {ref["uid"] for ref in desired["metadata"]["ownerReferences"]}
    return (meta.get("annotations") or {}).get(ANNOTATION_CONTENT_HASH) == content_hash(desired) and owners == wanted_owners


def plan_config_map(job: dict[str, Any]) -> dict[str, Any]:
    name = job["metadata"]["name"]
    return _stamped(_adopted(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": plan_name(name), "labels": job_labels(name)},
            "data": {
                JOB_FILE_KEY: yaml.safe_dump(agent_job_document(job), sort_keys=False),
                PEERS_KEY: "".join(f"{peer}\n" for peer in peers(job)),
            },
        },
        job,
    ))


def headless_service(job: dict[str, Any]) -> dict[str, Any]:
    name, spec = job["metadata"]["name"], job["spec"]
    return _stamped(_adopted(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service_name(name), "labels": job_labels(name)},
            "spec": {
                "clusterIP": "None",
                "selector": {LABEL_JOB: name, LABEL_NAME: AGENT_APP},
                # Agents dial each other while starting up, before any of them reports ready.
                "publishNotReadyAddresses": True,
                "ports": [
                    {"name": "flight", "port": spec["flightPort"], "targetPort": "flight"},
                    {"name": "http", "port": spec["metricsPort"], "targetPort": "http"},
                ],
            },
        },
        job,
    ))


def agent_env(job: dict[str, Any], index: int, attempt: int) -> list[dict[str, str]]:
    """The settings of `sabot-agent` (agent/sabot_agent/agent.py reads each flag from these variables)."""
    from sabot_agent.settings import ENV

    name, spec = job["metadata"]["name"], job["spec"]
    flight_port, http_port = agent_ports(spec, index)
    values = {
        "job": f"{JOB_DIR}/{JOB_FILE_KEY}",
        "agent_index": index,
        "agent_count": spec["agents"],
        "bind_host": "0.0.0.0",
        "advertise_host": agent_address(name, index),
        "flight_port": flight_port,
        "http_port": http_port,
        "slots": spec["slotsPerAgent"],
        "threads": spec.get("threadsPerAgent", spec["slotsPerAgent"]),
        "spill_dir": SPILL_DIR,
        "peers": ",".join(peers(job)),
        "attempt": attempt,
    }
    if "memoryBudget" in spec:
        values["memory_budget"] = spec["memoryBudget"]
    return [{"name": ENV[key], "value": str(value)} for key, value in values.items()]


def _spill_volume(spec: dict[str, Any]) -> dict[str, Any]:
    spill = spec.get("spill", {"emptyDir": {}})
    if "persistentVolumeClaim" in spill:
        return {"name": "spill", "persistentVolumeClaim": {"claimName": spill["persistentVolumeClaim"]["claimName"]}}
    return {"name": "spill", "emptyDir": copy.deepcopy(spill["emptyDir"])}


def agent_pod(job: dict[str, Any], index: int, attempt: int) -> dict[str, Any]:
    name, spec = job["metadata"]["name"], job["spec"]
    overrides = spec.get("pod", {})
    pod_name = agent_pod_name(name, index)
    flight_port, http_port = agent_ports(spec, index)
    spill_mount = {"name": "spill", "mountPath": SPILL_DIR}
    if "persistentVolumeClaim" in spec.get("spill", {}):
        spill_mount["subPath"] = pod_name  # agents share the claim, each in its own directory
    container = {
        "name": AGENT_CONTAINER,
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": AGENT_COMMAND,
        "env": agent_env(job, index, attempt),
        "ports": [
            {"name": "flight", "containerPort": flight_port, "protocol": "TCP"},
            {"name": "http", "containerPort": http_port, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": READINESS_PATH, "port": "http"}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": copy.deepcopy(spec.get("resources", {})),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # The agent writes its JSON result (or a one-line failure reason) to /dev/termination-log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "plan", "mountPath": JOB_DIR, "readOnly": True},
            spill_mount,
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a failed agent fails the attempt; the operator retries the attempt
        "hostname": pod_name,
        "subdomain": service_name(name),
        "hostNetwork": spec["hostNetwork"],
        "dnsPolicy": "ClusterFirstWithHostNet" if spec["hostNetwork"] else "ClusterFirst",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "plan", "configMap": {"name": plan_name(name)}},
            _spill_volume(spec),
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName", "serviceAccountName"):
        if key in overrides:
            pod_spec[key] = copy.deepcopy(overrides[key])
    labels = {**overrides.get("labels", {}), **job_labels(name), LABEL_INDEX: str(index), LABEL_ATTEMPT: str(attempt)}
    metadata = {"name": pod_name, "labels": labels}
    if "annotations" in overrides:
        metadata["annotations"] = dict(overrides["annotations"])
    return _adopted({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}, job)


def shared_children(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The children every attempt shares, in creation order (shared_child_names); an attempt's pods
    come after them: the pods mount the plan, the service names them."""
    return [plan_config_map(job), headless_service(job)]
