"""Pure manifest builders: a SabotJob (spec with defaults applied) in, Kubernetes objects as dicts out.

Every child gets a deterministic name and is adopted by the job (ownerReference with
controller=true), so creating it twice is a 409 and deleting the job garbage-collects it. The
children every attempt shares (the plan ConfigMap, the headless Service and the NetworkPolicy) carry a
hash of what they hold, so the operator can tell one built for another spec from the one the attempt
needs; so do the per-agent TLS Secrets (or cert-manager Certificates), whose hash names the attempt.

Agent TLS (unless `spec.security.tls: disabled`): each agent gets a Secret of its own (`tls.crt`,
`tls.key`, `ca.crt`, the layout cert-manager writes too), mounted read-only at TLS_DIR, so a pod holds
only its own key and a node only the keys of its pods (one Secret for all agents would also exceed
the 1 MiB Secret limit near 1024 agents). `agent_tls_secret` builds a Secret without its keys: the
keys are random, and `with_new_keys` issues them for a whole attempt at once (one new CA, whose key is
dropped), just before they are written, so plans stay pure values that hold no key material.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import kopf
import yaml

from sabot_agent import jobspec, security

from . import crd
from .volumes import JOB_DIR, SPILL_DIR, TLS_DIR, TMP_DIR, pod_claims  # the agent's mounts, which spec.volumes keep clear of

AGENT_CONTAINER = "agent"
AGENT_COMMAND = ["sabot-agent"]
JOB_FILE_KEY = "job.yaml"
PEERS_KEY = "peers"
# SABOT_TLS_* setting -> key in the agent's TLS Secret (kubernetes.io/tls plus ca.crt, as cert-manager writes)
TLS_FILES = {"tls_cert": "tls.crt", "tls_key": "tls.key", "tls_ca": "ca.crt"}
# Secret files are root's; the agent reads them through its group (fsGroup = AGENT_UID).
TLS_FILE_MODE = 0o440
CERT_MANAGER_API_VERSION = "cert-manager.io/v1"
# Agents run as an unprivileged numeric user so runAsNonRoot holds for any image.
AGENT_UID = 65532
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
LIVENESS_PERIOD_SECONDS = 5
# A stopped or hung agent holds nothing worth waiting for, and its replacement waits for the name.
TERMINATION_GRACE_SECONDS = 5

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "sabot.io/job-name"
LABEL_INDEX = "sabot.io/agent-index"
LABEL_ATTEMPT = "sabot.io/attempt"
# how many pods of this agent index the attempt replaced before this one (0: the first)
LABEL_REPLACEMENT = "sabot.io/replacement"
ANNOTATION_CONTENT_HASH = "sabot.io/content-hash"
MANAGER = "sabot-operator"
AGENT_APP = "sabot-agent"


def agent_pod_name(job_name: str, index: int) -> str:
    return f"{job_name}-agent-{index}"


def service_name(job_name: str) -> str:
    return f"{job_name}-agents"


def plan_name(job_name: str) -> str:
    return f"{job_name}-plan"


def network_policy_name(job_name: str) -> str:
    return f"{job_name}-agents"


def uses_cert_manager(spec: dict[str, Any]) -> bool:
    return security.tls_enabled(spec) and "issuerRef" in (spec.get("security") or {})


def network_policy_enabled(spec: dict[str, Any]) -> bool:
    return (spec.get("security") or {}).get("networkPolicy", security.ENABLED) == security.ENABLED


def tls_secret_name(job_name: str, index: int, spec: dict[str, Any]) -> str:
    # cert-manager's Secrets are named apart from the operator's: a Certificate left from an earlier
    # attempt keeps rewriting its Secret, which must never be one the operator issues itself.
    return f"{agent_pod_name(job_name, index)}-{'cert' if uses_cert_manager(spec) else 'tls'}"


def job_labels(job_name: str) -> dict[str, str]:
    """Labels of every child; also the selector for the job's pods."""
    return {LABEL_NAME: AGENT_APP, LABEL_INSTANCE: job_name, LABEL_MANAGED_BY: MANAGER, LABEL_JOB: job_name}


def pod_selector(job_name: str) -> str:
    return f"{LABEL_JOB}={job_name},{LABEL_MANAGED_BY}={MANAGER}"


def _agent_pods(job_name: str) -> dict[str, str]:
    """Labels that select the job's agent pods (Service, NetworkPolicy)."""
    return {LABEL_JOB: job_name, LABEL_NAME: AGENT_APP}


def agent_ports(spec: dict[str, Any], index: int) -> tuple[int, int]:
    """(Flight port, HTTP port) of agent `index`: on the host network agents of one node must not collide."""
    offset = index if spec["hostNetwork"] else 0
    return spec["flightPort"] + offset, spec["metricsPort"] + offset


def agent_address(job_name: str, index: int) -> str:
    # "<hostname>.<subdomain>" resolves through the pod's namespace search domain, whatever the
    # cluster domain is; the headless service publishes it even before the agent is ready.
    return f"{agent_pod_name(job_name, index)}.{service_name(job_name)}"


def agent_identity(job: dict[str, Any], index: int, attempt: int) -> security.AgentIdentity:
    """The name agent `index`'s certificate carries: scoped by the namespace, so a shared issuer's
    certificate for a job of the same name elsewhere is no agent of this one."""
    return security.AgentIdentity(job["metadata"]["name"], attempt, index, scope=job["metadata"]["namespace"])


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


def _stamped(obj: dict[str, Any], content: dict[str, Any] | None = None) -> dict[str, Any]:
    """`obj` annotated with the hash of its content, or of `content` (what a Secret's random keys are for)."""
    obj["metadata"]["annotations"] = {ANNOTATION_CONTENT_HASH: content_hash(obj if content is None else content)}
    return obj


def is_current(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a child read from the cluster is `desired`: same content, and controlled by the same
    job (not a leftover of a deleted job of the same name, which the garbage collector is about to
    remove)."""
    meta = existing.get("metadata") or {}
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")}
    wanted_owners = {ref["uid"] for ref in desired["metadata"]["ownerReferences"]}
    wanted_hash = desired["metadata"]["annotations"][ANNOTATION_CONTENT_HASH]
    return (meta.get("annotations") or {}).get(ANNOTATION_CONTENT_HASH) == wanted_hash and owners == wanted_owners


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
                "selector": _agent_pods(name),
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


def network_policy(job: dict[str, Any]) -> dict[str, Any]:
    """Ingress of the job's agents: Flight only from the job's own agent pods, the HTTP port
    (metrics, probes, status; read-only) from `spec.security.metricsFrom`, or from anywhere without it
    (where Prometheus runs is the cluster's business, and some network plugins subject the kubelet's
    probes to policies too). Egress stays open: agents read inputs and write results anywhere."""
    name = job["metadata"]["name"]
    metrics: dict[str, Any] = {"ports": [{"port": "http", "protocol": "TCP"}]}
    if "metricsFrom" in (job["spec"].get("security") or {}):
        metrics["from"] = copy.deepcopy(job["spec"]["security"]["metricsFrom"])
    return _stamped(_adopted(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": network_policy_name(name), "labels": job_labels(name)},
            "spec": {
                "podSelector": {"matchLabels": _agent_pods(name)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": _agent_pods(name)}}], "ports": [{"port": "flight", "protocol": "TCP"}]},
                    metrics,
                ],
            },
        },
        job,
    ))


def _agent_labels(job_name: str, index: int, attempt: int) -> dict[str, str]:
    return {**job_labels(job_name), LABEL_INDEX: str(index), LABEL_ATTEMPT: str(attempt)}


def agent_tls_secret(job: dict[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """Agent `index`'s TLS Secret for `attempt`, without its keys (`with_new_keys` issues them). Its
    hash covers what the keys are for, the attempt included: a Secret of another attempt is stale."""
    name = job["metadata"]["name"]
    identity = agent_identity(job, index, attempt)
    purpose = {"identity": identity.name, "uri": identity.uri, "hostnames": [agent_address(name, index)], "files": sorted(TLS_FILES.values())}
    return _stamped(_adopted(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": tls_secret_name(name, index, job["spec"]), "labels": _agent_labels(name, index, attempt)},
            "type": "kubernetes.io/tls",
        },
        job,
    ), purpose)


def with_new_keys(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`children` with every agent TLS Secret among them given its keys: one new CA for all of them
    (they are one attempt's), a key and certificate per agent; the CA's key is not kept anywhere."""
    secrets = [child for child in children if child["kind"] == "Secret"]
    if not secrets:
        return children
    identities = []
    for secret in secrets:
        labels = secret["metadata"]["labels"]
        identities.append(security.AgentIdentity(labels[LABEL_JOB], int(labels[LABEL_ATTEMPT]), int(labels[LABEL_INDEX]), secret["metadata"]["namespace"]))
    issued = security.issue_job_certificates(identities, [[agent_address(identity.job, identity.index)] for identity in identities])
    data = {}
    for secret, pair in zip(secrets, issued.agents):
        files = {"tls_cert": pair.certificate, "tls_key": pair.key, "tls_ca": issued.ca}
        data[secret["metadata"]["name"]] = {TLS_FILES[setting]: base64.b64encode(pem).decode() for setting, pem in files.items()}
    return [{**child, "data": data[child["metadata"]["name"]]} if child["kind"] == "Secret" else child for child in children]


def agent_certificate(job: dict[str, Any], index: int, attempt: int) -> dict[str, Any]:
    """A cert-manager Certificate for agent `index` of `attempt`, issued by `spec.security.issuerRef`
    into the Secret the pod mounts. The agent name is the first DNS name (Go writes DNS names before
    URIs, and gRPC takes the first SAN as the identity); no commonName, which cert-manager discourages.
    A new key per Certificate (rotationPolicy Always), and the Certificate is replaced per attempt."""
    name, spec = job["metadata"]["name"], job["spec"]
    identity = agent_identity(job, index, attempt)
    issuer = spec["security"]["issuerRef"]
    secret_name = tls_secret_name(name, index, spec)
    return _stamped(_adopted(
        {
            "apiVersion": CERT_MANAGER_API_VERSION,
            "kind": "Certificate",
            "metadata": {"name": secret_name, "labels": _agent_labels(name, index, attempt)},
            "spec": {
                "secretName": secret_name,
                # not the operator's managed-by label: the operator lists (and would delete) its own Secrets by it
                "secretTemplate": {"labels": {LABEL_JOB: name, LABEL_INDEX: str(index), LABEL_ATTEMPT: str(attempt)}},
                "dnsNames": [identity.name, agent_address(name, index)],
                "uris": [identity.uri],
                "duration": f"{int(security.CERTIFICATE_VALIDITY.total_seconds()) // 3600}h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["digital signature", "server auth", "client auth"],
                "issuerRef": {"name": issuer["name"], "kind": issuer.get("kind", "Issuer"), "group": issuer.get("group", "cert-manager.io")},
            },
        },
        job,
    ))


def certificate_ready(certificate: dict[str, Any]) -> bool:
    """cert-manager reports Ready=True once the Secret holds a certificate for this spec."""
    generation = certificate["metadata"].get("generation")
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True" and condition.get("observedGeneration", generation) == generation
        for condition in (certificate.get("status") or {}).get("conditions") or []
    )


def agent_tls_children(job: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
    """Per agent, the Secret (or the cert-manager Certificate) its pod mounts; none without TLS."""
    spec = job["spec"]
    if not security.tls_enabled(spec):
        return []
    build = agent_certificate if uses_cert_manager(spec) else agent_tls_secret
    return [build(job, index, attempt) for index in range(spec["agents"])]


def agent_env(job: dict[str, Any], index: int, attempt: int, replacement: int = 0) -> list[dict[str, Any]]:
    """The settings of `sabot-agent` (agent/sabot_agent/agent.py reads each flag from these variables),
    then the object storage credentials (`s3_credentials_env`), then spec.pod.env (which cannot name
    any of them). With agent replacements allowed, agents wait for a lost peer's replacement."""
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
        "replaceable": int(jobspec.RecoverySpec.of(spec).max_agent_replacements > 0),
        "replacement": replacement,
    }
    if job["metadata"].get("uid"):
        values["run_id"] = job["metadata"]["uid"]  # one SabotJob is one run: every attempt's manifest names it
    if "memoryBudget" in spec:
        values["memory_budget"] = spec["memoryBudget"]
    if security.tls_enabled(spec):
        values.update({setting: f"{TLS_DIR}/{file}" for setting, file in TLS_FILES.items()})
    extra = copy.deepcopy((spec.get("pod") or {}).get("env", []))
    return [{"name": ENV[key], "value": str(value)} for key, value in values.items()] + s3_credentials_env(spec) + extra


def liveness_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """A hung agent (stopped, deadlocked, cut off) is killed by the kubelet once its /healthz has not
    answered for spec.recovery.hungAfterSeconds; with restartPolicy Never its pod fails, and the
    operator replaces it (status.reconcile)."""
    hung_after = jobspec.RecoverySpec.of(spec).hung_after_seconds
    return {"httpGet": {"path": LIVENESS_PATH, "port": "http"}, "periodSeconds": LIVENESS_PERIOD_SECONDS, "timeoutSeconds": 2,
            "failureThreshold": max(1, hung_after // LIVENESS_PERIOD_SECONDS)}  # fmt: skip


def s3_credentials_env(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from `spec.storage.s3.credentialsSecret`, by
    reference (`secretKeyRef`); none without it. Not optional: without the Secret (or one of its keys)
    the kubelet does not start the agent (CreateContainerConfigError) instead of the agent failing on
    its first request. The endpoint and region reach the agents in the job file."""
    secret = ((spec.get("storage") or {}).get("s3") or {}).get("credentialsSecret")
    if not secret:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in crd.S3_CREDENTIAL_KEYS]


def _spill_volume(spec: dict[str, Any]) -> dict[str, Any]:
    spill = spec.get("spill", {"emptyDir": {}})
    if "persistentVolumeClaim" in spill:
        return {"name": "spill", "persistentVolumeClaim": {"claimName": spill["persistentVolumeClaim"]["claimName"]}}
    return {"name": "spill", "emptyDir": copy.deepcopy(spill["emptyDir"])}


def agent_pod(job: dict[str, Any], index: int, attempt: int, replacement: int = 0) -> dict[str, Any]:
    """Agent `index` of `attempt`; a replacement (the n-th of this index in the attempt) is the same
    pod, name and address, but for its replacement number (label and SABOT_REPLACEMENT)."""
    name, spec = job["metadata"]["name"], job["spec"]
    overrides = spec.get("pod", {})
    pod_name = agent_pod_name(name, index)
    flight_port, http_port = agent_ports(spec, index)
    spill_mount = {"name": "spill", "mountPath": SPILL_DIR}
    if "persistentVolumeClaim" in spec.get("spill", {}):
        spill_mount["subPath"] = pod_name  # agents share the claim, each in its own directory
    claim_volumes, claim_mounts = pod_claims(spec)
    container = {
        "name": AGENT_CONTAINER,
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": AGENT_COMMAND,
        "env": agent_env(job, index, attempt, replacement),
        "ports": [
            {"name": "flight", "containerPort": flight_port, "protocol": "TCP"},
            {"name": "http", "containerPort": http_port, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": READINESS_PATH, "port": "http"}, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": liveness_probe(spec),
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
            {"name": "tmp", "mountPath": TMP_DIR},
            *claim_mounts,
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator decides: replace a lost agent by a new pod, or fail the attempt
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        # The pod's pause process is PID 1 (and reaps zombies), not the agent: signals reach the agent
        # as on any machine, including the SIGKILL/SIGSTOP a failpoint sends itself, which the kernel
        # drops for a PID 1 that has no handler.
        "shareProcessNamespace": True,
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
            *claim_volumes,
        ],
    }
    if security.tls_enabled(spec):
        pod_spec["volumes"].append({"name": "tls", "secret": {"secretName": tls_secret_name(name, index, spec), "defaultMode": TLS_FILE_MODE}})
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName", "serviceAccountName"):
        if key in overrides:
            pod_spec[key] = copy.deepcopy(overrides[key])
    labels = {**overrides.get("labels", {}), **job_labels(name), LABEL_INDEX: str(index), LABEL_ATTEMPT: str(attempt), LABEL_REPLACEMENT: str(replacement)}
    metadata = {"name": pod_name, "labels": labels}
    if "annotations" in overrides:
        metadata["annotations"] = dict(overrides["annotations"])
    return _adopted({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}, job)


def shared_children(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The children every attempt shares, in creation order; an attempt's pods come after them: the
    pods mount the plan, the service names them, the policy admits their traffic."""
    return [plan_config_map(job), headless_service(job), *([network_policy(job)] if network_policy_enabled(job["spec"]) else [])]
