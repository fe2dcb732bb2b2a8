"""The pure manifest builders, without a cluster."""
from __future__ import annotations

import base64

import yaml
from cryptography import x509

from sabotjobs import sabot_job
from sabot_agent.jobspec import validate_job
from sabot_agent.security import AgentIdentity
from sabot_operator import builders, crd
from sabot_operator.validation import spec_problems


def defaulted(spec_patch: dict | None = None, name: str = "wordcount") -> dict:
    job = sabot_job(name, spec_patch)
    return {**job, "spec": crd.spec_with_defaults(job["spec"])}


def env_of(pod: dict) -> dict[str, str]:
    """The container's literal variables (those given by reference: `refs_of`)."""
    return {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"] if "value" in item}


def refs_of(pod: dict) -> dict[str, dict]:
    """The container's variables given by reference (`valueFrom`)."""
    return {item["name"]: item["valueFrom"] for item in pod["spec"]["containers"][0]["env"] if "valueFrom" in item}


def attempt_children(job: dict, attempt: int) -> list[dict]:
    pods = [builders.agent_pod(job, index, attempt) for index in range(job["spec"]["agents"])]
    return builders.shared_children(job) + builders.agent_tls_children(job, attempt) + pods


CERT_MANAGER = {"security": {"issuerRef": {"name": "agents-ca", "kind": "ClusterIssuer"}}}


def test_every_child_is_owned_by_the_job_in_its_namespace():
    job = defaulted()
    for child in attempt_children(job, attempt=1) + attempt_children(defaulted(CERT_MANAGER), attempt=1):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "sabot.io/v1alpha1",
            "kind": "SabotJob",
            "name": "wordcount",
            "uid": "uid-wordcount",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "default"
        assert child["metadata"]["labels"][builders.LABEL_JOB] == "wordcount"


def test_children_have_deterministic_names():
    job = defaulted()
    names = [(child["kind"], child["metadata"]["name"]) for child in attempt_children(job, attempt=1)]
    assert names == [
        ("ConfigMap", "wordcount-plan"),
        ("Service", "wordcount-agents"),
        ("NetworkPolicy", "wordcount-agents"),
        ("Secret", "wordcount-agent-0-tls"),
        ("Secret", "wordcount-agent-1-tls"),
        ("Secret", "wordcount-agent-2-tls"),
        ("Pod", "wordcount-agent-0"),
        ("Pod", "wordcount-agent-1"),
        ("Pod", "wordcount-agent-2"),
    ]
    assert names == [(child["kind"], child["metadata"]["name"]) for child in attempt_children(job, attempt=2)]
    # cert-manager's Secrets have names the operator never issues (or deletes) itself
    cert_manager = [(child["kind"], child["metadata"]["name"]) for child in attempt_children(defaulted(CERT_MANAGER), attempt=1)]
    assert cert_manager[3:6] == [("Certificate", f"wordcount-agent-{i}-cert") for i in range(3)]
    plain = defaulted({"security": {"tls": "disabled", "networkPolicy": "disabled"}})
    assert [child["kind"] for child in attempt_children(plain, attempt=1)] == ["ConfigMap", "Service", "Pod", "Pod", "Pod"]


def test_agent_env_tells_each_agent_who_it_is():
    job = defaulted({"threadsPerAgent": 4, "memoryBudget": "256Mi"})
    env = env_of(builders.agent_pod(job, 1, attempt=3))
    assert env == {
        "SABOT_JOB": "/etc/sabot/job.yaml",
        "SABOT_AGENT_INDEX": "1",
        "SABOT_AGENT_COUNT": "3",
        "SABOT_BIND_HOST": "0.0.0.0",
        "SABOT_ADVERTISE_HOST": "wordcount-agent-1.wordcount-agents",
        "SABOT_FLIGHT_PORT": "8815",
        "SABOT_HTTP_PORT": "8080",
        "SABOT_SLOTS": "2",
        "SABOT_THREADS": "4",
        "SABOT_SPILL_DIR": "/var/lib/sabot/spill",
        "SABOT_PEERS": ",".join(f"wordcount-agent-{i}.wordcount-agents:8815" for i in range(3)),
        "SABOT_ATTEMPT": "3",
        "SABOT_REPLACEABLE": "1",  # recovery.maxAgentReplacements defaults to 3
        "SABOT_REPLACEMENT": "0",
        "SABOT_RUN_ID": job["metadata"]["uid"],
        "SABOT_MEMORY_BUDGET": "256Mi",
        "SABOT_TLS_CERT": "/etc/sabot-tls/tls.crt",
        "SABOT_TLS_KEY": "/etc/sabot-tls/tls.key",
        "SABOT_TLS_CA": "/etc/sabot-tls/ca.crt",
    }
    assert not {name for name in env_of(builders.agent_pod(defaulted({"security": {"tls": "disabled"}}), 1, 3)) if name.startswith("SABOT_TLS")}



def test_a_replacement_pod_differs_from_the_first_only_in_its_number():
    job = defaulted()
    first, replacement = builders.agent_pod(job, 1, 2), builders.agent_pod(job, 1, 2, replacement=3)
    assert replacement["metadata"]["labels"].pop(builders.LABEL_REPLACEMENT) == "3" and first["metadata"]["labels"].pop(builders.LABEL_REPLACEMENT) == "0"
    assert env_of(replacement).pop("SABOT_REPLACEMENT") == "3" and env_of(first)["SABOT_REPLACEMENT"] == "0"
    for pod in (first, replacement):
        pod["spec"]["containers"][0]["env"] = [item for item in pod["spec"]["containers"][0]["env"] if item["name"] != "SABOT_REPLACEMENT"]
    assert first == replacement
    # agents wait for a lost peer's replacement only when the job allows replacements
    assert env_of(builders.agent_pod(defaulted({"recovery": {"maxAgentReplacements": 0}}), 1, 2))["SABOT_REPLACEABLE"] == "0"


def test_pod_env_comes_after_the_operators_variables():
    extra = [{"name": "TZ", "value": "UTC"}, {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "api"}}}]
    pod = builders.agent_pod(defaulted({"pod": {"env": extra}}), 0, 1)
    assert pod["spec"]["containers"][0]["env"][-2:] == extra
    assert spec_problems(sabot_job(spec_patch={"pod": {"env": extra}})) == []


S3_STORAGE = {"storage": {"s3": {"endpoint": "http://minio.storage:9000", "region": "eu-west-1", "credentialsSecret": "results-s3"}},
              "pipeline": {"output": {"format": "parquet", "path": "s3://results/wordcount/"}}}


def test_s3_credentials_reach_the_agents_by_reference_to_the_secret():
    job = defaulted(S3_STORAGE)
    for index in range(3):
        pod = builders.agent_pod(job, index, attempt=2)
        env = pod["spec"]["containers"][0]["env"]
        assert env[-2:] == [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "results-s3", "key": "AWS_ACCESS_KEY_ID"}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "results-s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
        ]
        # required references (no `optional`): without the Secret the kubelet does not start the agent
        assert all("optional" not in ref["secretKeyRef"] for ref in refs_of(pod).values())
        # every other variable is the usual literal, none of them about storage
        assert len(env) == len(env_of(pod)) + 2 and not [name for name in env_of(pod) if name.startswith("AWS_")]
        # the pod mounts no Secret for it: the kubelet resolves the references
        assert [v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v] == [f"wordcount-agent-{index}-tls"]
    # endpoint and region reach the agents in the job file (the plan ConfigMap), the keys never do
    document = yaml.safe_load(builders.plan_config_map(job)["data"]["job.yaml"])
    assert document["spec"]["storage"] == S3_STORAGE["storage"]
    parsed = validate_job(document)
    assert (parsed.storage.s3_endpoint, parsed.storage.s3_region) == ("http://minio.storage:9000", "eu-west-1")


def test_no_credentials_without_a_credentials_secret():
    for storage in (None, {"s3": {"endpoint": "http://minio.storage:9000"}}, {"s3": {"region": "eu-west-1"}}):
        job = defaulted({"storage": storage} if storage else None)
        pod = builders.agent_pod(job, 0, attempt=1)
        assert refs_of(pod) == {}
        assert not [name for name in env_of(pod) if name.startswith("AWS_")]
    # the operator-built manifest is all there is: no value of a key anywhere in the pod
    pod = builders.agent_pod(defaulted(S3_STORAGE), 0, attempt=1)
    assert set(refs_of(pod)) == set(crd.S3_CREDENTIAL_KEYS)
    assert all(set(item) == {"name", "valueFrom"} for item in pod["spec"]["containers"][0]["env"] if item["name"].startswith("AWS_"))


def test_threads_default_to_slots():
    assert env_of(builders.agent_pod(defaulted(), 0, attempt=1))["SABOT_THREADS"] == "2"


def test_on_the_host_network_agent_i_uses_base_port_plus_i():
    job = defaulted({"hostNetwork": True, "agents": 4, "flightPort": 9000, "metricsPort": 9100})
    pods = [builders.agent_pod(job, index, attempt=1) for index in range(4)]
    ports = [{p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]} for pod in pods]
    assert ports == [{"flight": 9000 + i, "http": 9100 + i} for i in range(4)]
    assert all(pod["spec"]["hostNetwork"] and pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet" for pod in pods)
    assert builders.peers(job) == [f"wordcount-agent-{i}.wordcount-agents:{9000 + i}" for i in range(4)]


def test_without_host_network_every_agent_uses_the_base_ports():
    job = defaulted()
    for index in range(3):
        env = env_of(builders.agent_pod(job, index, attempt=1))
        assert (env["SABOT_FLIGHT_PORT"], env["SABOT_HTTP_PORT"]) == ("8815", "8080")


def test_pod_is_locked_down():
    pod = builders.agent_pod(defaulted(), 0, attempt=1)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["command"] == ["sabot-agent"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The read-only root needs writable mounts for spill and temporary files.
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/etc/sabot", "/var/lib/sabot/spill", "/tmp", "/etc/sabot-tls"}
    assert {"name": "tls", "mountPath": "/etc/sabot-tls", "readOnly": True} in container["volumeMounts"]


def test_each_pod_mounts_only_its_own_key():
    for spec_patch, suffix in ((None, "tls"), (CERT_MANAGER, "cert")):
        for index in range(3):
            volumes = builders.agent_pod(defaulted(spec_patch), index, attempt=1)["spec"]["volumes"]
            assert {"name": "tls", "secret": {"secretName": f"wordcount-agent-{index}-{suffix}", "defaultMode": 0o440}} in volumes


def test_pod_identity_for_dns_and_attempt_labels():
    pod = builders.agent_pod(defaulted(), 2, attempt=5)
    assert pod["spec"]["hostname"] == "wordcount-agent-2"
    assert pod["spec"]["subdomain"] == "wordcount-agents"
    assert pod["metadata"]["labels"][builders.LABEL_INDEX] == "2"
    assert pod["metadata"]["labels"][builders.LABEL_ATTEMPT] == "5"


def test_pod_overrides_are_applied_but_cannot_replace_operator_labels():
    overrides = {
        "labels": {"team": "data", builders.LABEL_JOB: "hijack"},
        "annotations": {"note": "x"},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "batch",
        "schedulerName": "volcano",
        "serviceAccountName": "sabot-agent",
    }
    job = defaulted({"pod": overrides, "resources": {"limits": {"memory": "1Gi", "cpu": 2}}})
    pod = builders.agent_pod(job, 0, attempt=1)
    assert pod["metadata"]["labels"]["team"] == "data"
    assert pod["metadata"]["labels"][builders.LABEL_JOB] == "wordcount"
    assert pod["metadata"]["annotations"] == {"note": "x"}
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName", "serviceAccountName"):
        assert pod["spec"][key] == overrides[key]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"memory": "1Gi", "cpu": 2}}


def test_spill_volume_choices():
    default_pod = builders.agent_pod(defaulted(), 0, attempt=1)
    assert {"name": "spill", "emptyDir": {}} in default_pod["spec"]["volumes"]
    sized = builders.agent_pod(defaulted({"spill": {"emptyDir": {"sizeLimit": "10Gi"}}}), 0, attempt=1)
    assert {"name": "spill", "emptyDir": {"sizeLimit": "10Gi"}} in sized["spec"]["volumes"]
    claimed = builders.agent_pod(defaulted({"spill": {"persistentVolumeClaim": {"claimName": "scratch"}}}), 1, attempt=1)
    assert {"name": "spill", "persistentVolumeClaim": {"claimName": "scratch"}} in claimed["spec"]["volumes"]
    mount = next(m for m in claimed["spec"]["containers"][0]["volumeMounts"] if m["name"] == "spill")
    assert mount["subPath"] == "wordcount-agent-1"


def test_every_agent_mounts_the_jobs_claims_whole_under_names_of_their_own():
    volumes = [{"name": "tmp", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "results"}},
               {"name": "inputs", "mountPath": "/srv/inputs", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}]
    job = defaulted({"volumes": volumes})
    for index in range(job["spec"]["agents"]):
        spec = builders.agent_pod(job, index, attempt=1)["spec"]
        mounts = spec["containers"][0]["volumeMounts"]
        names = [volume["name"] for volume in spec["volumes"]]
        claims = [volume for volume in spec["volumes"] if "persistentVolumeClaim" in volume]
        assert claims == [{"name": "volume-tmp", "persistentVolumeClaim": {"claimName": "results", "readOnly": False}},
                          {"name": "volume-inputs", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}]
        assert [mount for mount in mounts if mount["name"] in {claim["name"] for claim in claims}] == [
            {"name": "volume-tmp", "mountPath": "/data", "readOnly": False},
            {"name": "volume-inputs", "mountPath": "/srv/inputs", "readOnly": True}]  # no subPath: one directory all agents share
        assert len(set(names)) == len(names) and {"tmp", "spill", "plan", "tls"} <= set(names)  # a claim named "tmp" clashes with nothing
        assert {mount["name"] for mount in mounts} == set(names)


def test_service_is_headless_and_publishes_unready_agents():
    service = builders.headless_service(defaulted())
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {builders.LABEL_JOB: "wordcount", builders.LABEL_NAME: builders.AGENT_APP}
    assert {port["name"]: port["port"] for port in service["spec"]["ports"]} == {"flight": 8815, "http": 8080}


def test_plan_holds_an_agent_job_file_and_the_ordered_peers():
    job = defaulted({"pod": {"labels": {"team": "data"}}, "retry": {"limit": 1}})
    config_map = builders.plan_config_map(job)
    document = yaml.safe_load(config_map["data"]["job.yaml"])
    assert "pod" not in document["spec"] and "retry" not in document["spec"]  # operator-only fields stay out
    parsed = validate_job(document)
    assert (parsed.name, parsed.agents, parsed.slots_per_agent, parsed.partitions) == ("wordcount", 3, 2, 6)
    assert config_map["data"]["peers"].splitlines() == builders.peers(job)


def read_back(child: dict) -> dict:
    """`child` as the API server returns it: defaults and server fields added."""
    obj = {**child, "metadata": {**child["metadata"], "uid": "child-uid", "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    if child["kind"] == "Service":
        obj["spec"] = {**child["spec"], "clusterIPs": ["None"], "type": "ClusterIP", "sessionAffinity": "None",
                       "ports": [{**port, "protocol": "TCP"} for port in child["spec"]["ports"]]}
    return obj


def test_shared_children_carry_a_hash_of_what_they_hold():
    job = defaulted()
    for child in builders.shared_children(job):
        assert child["metadata"]["annotations"] == {builders.ANNOTATION_CONTENT_HASH: builders.content_hash(child)}
        assert builders.is_current(read_back(child), child)  # server defaults do not make it stale


def test_a_shared_child_built_for_another_spec_or_job_is_not_current():
    plan, service, _ = builders.shared_children(defaulted())
    new_plan, same_service, _ = builders.shared_children(defaulted({"pipeline": {"shuffle": {"partitions": 12}}}))
    assert not builders.is_current(read_back(plan), new_plan)
    assert builders.is_current(read_back(service), same_service)  # the service does not depend on the pipeline
    _, new_service, _ = builders.shared_children(defaulted({"flightPort": 9000}))
    assert not builders.is_current(read_back(service), new_service)
    # A leftover of a deleted job of the same name: same content, another owner.
    recreated = {**defaulted(), "metadata": {**defaulted()["metadata"], "uid": "uid-of-the-new-job"}}
    assert not builders.is_current(read_back(plan), builders.plan_config_map(recreated))
    unstamped = read_back(plan)
    unstamped["metadata"].pop("annotations")
    assert not builders.is_current(unstamped, plan)


def test_the_network_policy_admits_flight_from_the_jobs_own_agents_only():
    policy = builders.network_policy(defaulted())
    agents = {"matchLabels": {builders.LABEL_JOB: "wordcount", builders.LABEL_NAME: builders.AGENT_APP}}
    assert policy["spec"] == {
        "podSelector": agents,
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"podSelector": agents}], "ports": [{"port": "flight", "protocol": "TCP"}]},
            {"ports": [{"port": "http", "protocol": "TCP"}]},  # metrics and probes: from anywhere by default
        ],
    }
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    scraped = builders.network_policy(defaulted({"security": {"metricsFrom": monitoring}}))
    assert scraped["spec"]["ingress"][1] == {"ports": [{"port": "http", "protocol": "TCP"}], "from": monitoring}
    assert not builders.is_current(read_back(policy), scraped)
    assert builders.is_current(read_back(policy), builders.network_policy(defaulted({"flightPort": 9000})))  # named ports


def test_an_agent_secret_is_built_without_keys_and_issued_with_its_attempt():
    job = defaulted()
    secrets = [builders.agent_tls_secret(job, index, attempt=4) for index in range(3)]
    assert all("data" not in secret and secret["type"] == "kubernetes.io/tls" for secret in secrets)
    assert secrets[1]["metadata"]["labels"][builders.LABEL_ATTEMPT] == "4" and secrets[1]["metadata"]["labels"][builders.LABEL_INDEX] == "1"
    pod = builders.agent_pod(job, 0, attempt=4)
    issued = builders.with_new_keys([secrets[0], secrets[1], secrets[2], pod])
    assert issued[3] is pod and [child["metadata"] for child in issued[:3]] == [secret["metadata"] for secret in secrets]
    files = [{key: base64.b64decode(value) for key, value in secret["data"].items()} for secret in issued[:3]]
    assert all(set(data) == {"tls.crt", "tls.key", "ca.crt"} for data in files)
    assert len({data["ca.crt"] for data in files}) == 1  # one CA per attempt
    authority = x509.load_pem_x509_certificate(files[0]["ca.crt"])
    for index, data in enumerate(files):
        certificate = x509.load_pem_x509_certificate(data["tls.crt"])
        certificate.verify_directly_issued_by(authority)
        names = [name.value for name in certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        identity = AgentIdentity("wordcount", 4, index, "default")
        assert names == [identity.name, f"wordcount-agent-{index}.wordcount-agents", identity.uri]
    again = builders.with_new_keys(secrets)
    assert again[0]["data"]["ca.crt"] != issued[0]["data"]["ca.crt"] and again[0]["data"]["tls.key"] != issued[0]["data"]["tls.key"]
    # the hash names the attempt: another attempt's Secret is stale, the keys themselves do not count
    assert builders.is_current(read_back(issued[0]), secrets[0])
    assert not builders.is_current(read_back(issued[0]), builders.agent_tls_secret(job, 0, attempt=5))


def test_a_cert_manager_certificate_names_the_agent_first():
    job = defaulted(CERT_MANAGER)
    certificate = builders.agent_certificate(job, 2, attempt=3)
    identity = AgentIdentity("wordcount", 3, 2, "default")
    assert certificate["apiVersion"] == "cert-manager.io/v1" and certificate["metadata"]["name"] == "wordcount-agent-2-cert"
    assert certificate["spec"] == {
        "secretName": "wordcount-agent-2-cert",
        "secretTemplate": {"labels": {builders.LABEL_JOB: "wordcount", builders.LABEL_INDEX: "2", builders.LABEL_ATTEMPT: "3"}},
        "dnsNames": [identity.name, "wordcount-agent-2.wordcount-agents"],
        "uris": [identity.uri],
        "duration": "8784h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["digital signature", "server auth", "client auth"],
        "issuerRef": {"name": "agents-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
    }
    assert not builders.is_current(read_back(certificate), builders.agent_certificate(job, 2, attempt=4))
    ready = {**certificate, "metadata": {**certificate["metadata"], "generation": 1},
             "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}}  # fmt: skip
    assert builders.certificate_ready(ready) and not builders.certificate_ready(certificate)
    assert not builders.certificate_ready({**ready, "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 0}]}})


def test_a_hung_agent_is_killed_by_its_liveness_probe_within_hung_after_seconds():
    default = builders.agent_pod(defaulted({}), 0, attempt=1)["spec"]["containers"][0]["livenessProbe"]
    assert default["httpGet"] == {"path": "/healthz", "port": "http"}
    assert default["periodSeconds"] * default["failureThreshold"] == 30  # jobspec.DEFAULT_HUNG_AFTER_SECONDS
    quick = builders.agent_pod(defaulted({"recovery": {"hungAfterSeconds": 12}}), 0, attempt=1)["spec"]["containers"][0]["livenessProbe"]
    assert quick["periodSeconds"] * quick["failureThreshold"] == 10  # the last multiple of the period within 12 s
