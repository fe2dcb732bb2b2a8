"""Offline checks of charts/sabot-operator: every scenario in ci/*.yaml renders, lints, validates
against the Kubernetes 1.33 schemas (strict), passes the restricted Pod Security Standard, has RBAC
without wildcards; the values schema rejects typos; the CRD copy equals crds/sabotjob.yaml."""
from __future__ import annotations

import json
import subprocess

import jsonschema
import pytest
import yaml

import kubernetes_validate
from chart_render import CHART, CHART_CRD, KUBE_VERSION, RELEASE_NAMESPACE, SCENARIOS, SOURCE_CRD, helm_template, render
from pod_security import pod_specs, restricted_violations
from sabot_agent.jobspec import MAX_JOB_NAME_LENGTH, validate_job
from sabot_operator.validation import spec_problems

VALUES_SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULT_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# prometheus-operator kinds: kubernetes-validate ships no schema for them (checked by their own tests).
NO_OFFLINE_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}
# What the operator's code calls (operator/sabot_operator/kube.py, handlers.py) and kopf needs.
OPERATOR_RULES = {
    ("sabot.io", "sabotjobs"): {"get", "list", "watch", "patch", "update", "delete"},
    ("sabot.io", "sabotjobs/status"): {"get", "list", "watch", "patch", "update"},
    ("sabot.io", "sabotjobs/finalizers"): {"get", "list", "watch", "patch", "update"},
    ("", "pods"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "services"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "configmaps"): {"create", "get", "list", "watch", "patch", "update", "delete"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"create", "list", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"create", "get", "delete"},
}
# Only with certManager.enabled (jobs with spec.security.issuerRef).
CERT_MANAGER_RULES = {("cert-manager.io", "certificates"): {"create", "list", "delete"}}
KOPF_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [doc for doc in manifests if doc["kind"] == kind]


def operator_objects(manifests: list[dict], kind: str) -> list[dict]:
    """Objects of a kind that belong to the operator (not to the `helm test` hook)."""
    return [doc for doc in by_kind(manifests, kind)
            if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]


def granted(role: dict) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs a Role/ClusterRole grants."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def operator_deployment(manifests: list[dict]) -> dict:
    (deployment,) = by_kind(manifests, "Deployment")
    return deployment


# --- values schema -------------------------------------------------------------------------------

def test_values_schema_is_closed_everywhere():
    """Every object node of values.schema.json rejects unknown keys or types its free-form map values."""
    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert "additionalProperties" in node, f"{where or '<root>'}: no additionalProperties"
            for key, child in node.items():
                walk(child, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for child in node:
                walk(child, where)
    walk(VALUES_SCHEMA, "")


@pytest.mark.parametrize("values", [CHART / "values.yaml", *SCENARIOS], ids=lambda p: p.name)
def test_values_schema_accepts_the_defaults_and_every_scenario(values):
    jsonschema.validate(yaml.safe_load(values.read_text()) or {}, VALUES_SCHEMA)


@pytest.mark.parametrize("typo", [
    {"imag": {"tag": "1"}},
    {"image": {"tagg": "1"}},
    {"networkPolicy": {"enable": True}},
    {"prometheus": {"podMonitor": {"enabeld": True}}},
    {"securityContext": {"readOnlyRootFileSystem": True}},
], ids=["top-level", "image.tagg", "networkPolicy.enable", "podMonitor.enabeld", "readOnlyRootFileSystem"])
def test_values_schema_rejects_a_typo(typo):
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        jsonschema.validate(typo, VALUES_SCHEMA)


def test_helm_refuses_to_render_a_typo(helm):
    result = helm_template(helm, "--set", "image.tagg=1", check=False)
    assert result.returncode != 0
    assert "tagg" in result.stderr and "additional properties" in result.stderr.lower(), result.stderr


# --- every scenario --------------------------------------------------------------------------------

def test_helm_lint(helm, scenario):
    result = subprocess.run([helm, "lint", "--strict", str(CHART), "--namespace", RELEASE_NAMESPACE,
                             "--kube-version", KUBE_VERSION, "--values", str(scenario)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_manifests_validate_strictly_against_kubernetes_schemas(rendered):
    checked = 0
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) in NO_OFFLINE_SCHEMA:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked > 0


def test_pods_satisfy_the_restricted_pod_security_standard(rendered):
    specs = list(pod_specs(rendered))
    assert specs, "no pod rendered"
    for where, spec in specs:
        assert restricted_violations(spec) == [], where
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["resources"]["requests"] and container["resources"]["limits"], where


def test_rbac_rules_have_no_wildcards(rendered):
    roles = by_kind(rendered, "ClusterRole") + by_kind(rendered, "Role")
    assert roles or not any(doc["kind"] == "Deployment" for doc in rendered)
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)


def test_operator_deployment_runs_one_replica_recreated(rendered):
    deployment = operator_deployment(rendered)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["sabot-operator"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "HOME/TMPDIR (/tmp) must be writable"


# --- modes and options --------------------------------------------------------------------------

def test_cluster_wide_mode_grants_everything_in_one_cluster_role(helm):
    manifests = render(helm, CHART / "ci" / "default-values.yaml")
    assert operator_objects(manifests, "Role") == []
    (cluster_role,) = by_kind(manifests, "ClusterRole")
    grants = granted(cluster_role)
    for key, verbs in {**OPERATOR_RULES, **KOPF_CLUSTER_RULES}.items():
        assert grants.get(key) == verbs, key
    assert set(grants) == set(OPERATOR_RULES) | set(KOPF_CLUSTER_RULES)
    args = operator_deployment(manifests)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [arg for arg in args if arg.startswith("--namespace")]


def test_namespaced_mode_grants_a_role_per_watched_namespace(helm):
    manifests = render(helm, CHART / "ci" / "namespaced-values.yaml")
    roles = operator_objects(manifests, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role) == OPERATOR_RULES
    bindings = operator_objects(manifests, "RoleBinding")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sabot-sabot-operator",
                                        "namespace": RELEASE_NAMESPACE}]
    (cluster_role,) = by_kind(manifests, "ClusterRole")
    assert granted(cluster_role) == KOPF_CLUSTER_RULES
    args = operator_deployment(manifests)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [arg for arg in args if arg.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_monitors_and_network_policies_are_opt_in(helm):
    defaults = render(helm, CHART / "ci" / "default-values.yaml")
    assert not {"ServiceMonitor", "PodMonitor", "NetworkPolicy"} & {doc["kind"] for doc in defaults}


def test_pod_monitor_scrapes_the_agents_metrics_port(helm):
    manifests = render(helm, CHART / "ci" / "monitoring-networkpolicy-values.yaml")
    (pod_monitor,) = by_kind(manifests, "PodMonitor")
    assert pod_monitor["spec"]["selector"]["matchLabels"] == DEFAULT_VALUES["agents"]["selectorLabels"]
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert [endpoint["port"] for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]] == ["http"]
    (service_monitor,) = by_kind(manifests, "ServiceMonitor")
    (service,) = by_kind(manifests, "Service")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [port["name"] for port in service["spec"]["ports"]] == ["metrics"]


def test_pod_monitor_follows_the_watch_list_in_namespaced_mode(helm):
    manifests = render(helm, CHART / "ci" / "namespaced-monitoring-networkpolicy-values.yaml")
    (pod_monitor,) = by_kind(manifests, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"matchNames": ["jobs"]}


def test_the_chart_has_a_network_policy_for_the_operator_only(helm):
    """The agents get one per job from the operator (Flight from the same job only); a namespace-wide
    policy of the chart would add "every agent pod of the namespace" to it."""
    for scenario in ("monitoring-networkpolicy-values.yaml", "namespaced-monitoring-networkpolicy-values.yaml"):
        (policy,) = by_kind(render(helm, CHART / "ci" / scenario), "NetworkPolicy")
        assert (policy["metadata"]["namespace"], policy["metadata"]["name"]) == (RELEASE_NAMESPACE, "sabot-sabot-operator")
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (rule,) = by_kind(render(helm, CHART / "ci" / "monitoring-networkpolicy-values.yaml"), "NetworkPolicy")[0]["spec"]["ingress"]
    assert rule["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def test_cert_manager_certificates_are_granted_only_when_enabled(helm):
    (cluster_role,) = by_kind(render(helm, CHART / "ci" / "monitoring-networkpolicy-values.yaml"), "ClusterRole")
    assert granted(cluster_role) == {**OPERATOR_RULES, **KOPF_CLUSTER_RULES, **CERT_MANAGER_RULES}
    for role in operator_objects(render(helm, CHART / "ci" / "namespaced-monitoring-networkpolicy-values.yaml"), "Role"):
        assert granted(role) == {**OPERATOR_RULES, **CERT_MANAGER_RULES}


def test_helm_test_hook_runs_a_valid_sabotjob_with_least_privilege(helm):
    manifests = render(helm, CHART / "ci" / "default-values.yaml")
    hooks = [doc for doc in manifests if (doc["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    assert sorted(doc["kind"] for doc in hooks) == ["ConfigMap", "PersistentVolumeClaim", "Pod", "Role", "RoleBinding", "ServiceAccount"]
    (role,) = [doc for doc in hooks if doc["kind"] == "Role"]
    assert granted(role) == {("sabot.io", "sabotjobs"): {"create", "get", "delete"}}
    (pod,) = [doc for doc in hooks if doc["kind"] == "Pod"]
    (service_account,) = [doc for doc in hooks if doc["kind"] == "ServiceAccount"]
    assert pod["spec"]["serviceAccountName"] == service_account["metadata"]["name"]
    (config_map,) = [doc for doc in hooks if doc["kind"] == "ConfigMap"]
    job = yaml.safe_load(config_map["data"]["sabotjob.yaml"])
    compile(config_map["data"]["run_smoke_test.py"], "run_smoke_test.py", "exec")
    # one agent, writing to the claim the hook creates: the operator accepts no output that vanishes with the pods
    parsed = validate_job(job)
    assert (parsed.agents, parsed.output.path, "storage" in job["spec"]) == (1, f"/results/{job['metadata']['name']}/", False)
    assert spec_problems(job) == []
    (claim,) = [doc for doc in hooks if doc["kind"] == "PersistentVolumeClaim"]
    assert [volume["persistentVolumeClaim"]["claimName"] for volume in job["spec"]["volumes"]] == [claim["metadata"]["name"]]
    # ReadWriteOnce, as any cluster's default StorageClass provides: its one agent mounts it
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}
    claim_of_class = [doc for doc in yaml.safe_load_all(helm_template(helm, "--set", "test.volume.storageClassName=nfs").stdout)
                      if doc and doc["kind"] == "PersistentVolumeClaim"]
    assert [doc["spec"]["storageClassName"] for doc in claim_of_class] == ["nfs"]


def test_helm_test_job_on_shared_storage_runs_two_agents_and_overwrites_its_own_result(helm):
    manifests = render(helm, CHART / "ci" / "monitoring-networkpolicy-values.yaml")
    (config_map,) = [doc for doc in manifests if doc["kind"] == "ConfigMap" and "sabotjob.yaml" in doc["data"]]
    job = yaml.safe_load(config_map["data"]["sabotjob.yaml"])
    parsed = validate_job(job)
    assert (parsed.agents, parsed.output.path, parsed.output.mode) == (2, "s3://sabot-smoke/helm-test/", "overwrite")
    assert spec_problems(job) == []
    assert "volumes" not in job["spec"] and not by_kind(manifests, "PersistentVolumeClaim")
    assert job["spec"]["storage"] == {"s3": {"endpoint": "http://minio.storage.svc:9000", "region": "us-east-1",
                                             "credentialsSecret": "sabot-smoke-s3"}}
    assert (parsed.storage.s3_endpoint, parsed.storage.s3_region) == ("http://minio.storage.svc:9000", "us-east-1")


def test_values_schema_of_the_smoke_jobs_storage_is_the_jobs():
    from sabot_agent.jobspec import STORAGE_SCHEMA

    assert VALUES_SCHEMA["properties"]["test"]["properties"]["storage"] == STORAGE_SCHEMA


def test_helm_test_job_name_fits_agent_pod_names_with_a_long_release_name(helm):
    manifests = [doc for doc in yaml.safe_load_all(helm_template(helm, "--set", "fullnameOverride=" + "x" * 63).stdout) if doc]
    (config_map,) = [doc for doc in manifests if doc["kind"] == "ConfigMap"]
    name = yaml.safe_load(config_map["data"]["sabotjob.yaml"])["metadata"]["name"]
    assert len(name) <= MAX_JOB_NAME_LENGTH and len(f"{name}-agent-1023") <= 63


def test_smoke_test_is_left_out_when_disabled(helm):
    manifests = render(helm, CHART / "ci" / "byo-crd-serviceaccount-values.yaml")
    assert not [doc for doc in manifests if "helm.sh/hook" in (doc["metadata"].get("annotations") or {})]
    assert by_kind(manifests, "ServiceAccount") == []
    assert by_kind(manifests, "CustomResourceDefinition") == []
    image = operator_deployment(manifests)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/sabot@sha256:" + "0" * 64


# --- the CRD: one source of truth ----------------------------------------------------------------

def test_chart_crd_is_a_copy_of_crds_sabotjob_yaml():
    assert CHART_CRD.exists(), "charts/sabot-operator/files/crds/sabotjob.yaml missing: run `make chart-crd`"
    assert CHART_CRD.read_bytes() == SOURCE_CRD.read_bytes(), \
        "the chart's CRD drifted from crds/sabotjob.yaml: run `make chart-crd`"


def test_rendered_crd_equals_the_source_plus_chart_metadata(helm):
    manifests = render(helm, CHART / "ci" / "default-values.yaml")
    (crd,) = by_kind(manifests, "CustomResourceDefinition")
    source = yaml.safe_load(SOURCE_CRD.read_text())
    metadata = crd.pop("metadata")
    source_metadata = source.pop("metadata")
    assert crd == source
    assert metadata["name"] == source_metadata["name"] == "sabotjobs.sabot.io"
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
