"""The chart against the operator's own code: the Deployment's arguments are ones `sabot-operator`
accepts, the PodMonitor and the operator's per-job NetworkPolicy select the labels and port names the
agent pods really carry, the agent pods the operator builds satisfy the restricted Pod Security
Standard, and everything it creates per job validates strictly against the Kubernetes schemas."""
from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from chart_render import CHART, EXAMPLES, KUBE_VERSION, SCENARIOS, render
from pod_security import restricted_violations

from sabot_operator import builders, crd
from sabot_operator import main as operator_main

AGENT_SELECTOR = yaml.safe_load((CHART / "values.yaml").read_text())["agents"]["selectorLabels"]


def job_of(spec: dict, name: str = "contract") -> dict:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
            "metadata": {"name": name, "namespace": "jobs", "uid": "00000000-0000-0000-0000-000000000001"},
            "spec": crd.spec_with_defaults(spec)}


def agent_pod_of(spec: dict, index: int = 0) -> dict:
    return builders.agent_pod(job_of(spec), index, attempt=1)


def example_spec() -> dict:
    assert EXAMPLES, "examples/*.yaml missing"
    return yaml.safe_load(EXAMPLES[0].read_text())["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_operator_accepts_the_deployment_arguments(helm, scenario):
    (deployment,) = [doc for doc in render(helm, scenario) if doc["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = operator_main.parse_args(container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (args.metrics_port, args.health_port) == (ports["metrics"], ports["health"])
    watched = yaml.safe_load(scenario.read_text()) or {}
    assert args.namespace == watched.get("watch", {}).get("namespaces", [])


def test_agent_selector_and_port_names_match_the_agent_pods():
    pod = agent_pod_of(example_spec())
    assert AGENT_SELECTOR.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert {port["name"] for port in container["ports"]} == {"flight", "http"}


def prometheus_meta_label(pod_label: str) -> str:
    """The meta label Prometheus' Kubernetes discovery gives a pod label: every character outside
    [a-zA-Z0-9_] becomes "_"."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_pod_monitor_relabels_the_job_name_from_a_label_the_agent_pods_carry(helm):
    """The chart's PodMonitor template against the labels the operator's builder puts on agent pods."""
    (monitor,) = [doc for doc in render(helm, CHART / "ci" / "monitoring-networkpolicy-values.yaml") if doc["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (relabeling,) = [item for item in endpoint["relabelings"] if item["targetLabel"] == "sabot_job"]
    labels = agent_pod_of(example_spec())["metadata"]["labels"]
    by_meta_label = {prometheus_meta_label(name): value for name, value in labels.items()}
    assert [by_meta_label.get(source) for source in relabeling["sourceLabels"]] == ["contract"]  # the job's name


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_agent_pods_satisfy_the_restricted_pod_security_standard(example):
    spec = yaml.safe_load(example.read_text())["spec"]
    for index in range(spec.get("agents", 1)):
        pod = agent_pod_of(spec, index)
        assert restricted_violations(pod["spec"]) == []
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_host_network_agents_violate_only_the_host_network_control():
    pod = agent_pod_of({**example_spec(), "hostNetwork": True})
    assert restricted_violations(pod["spec"]) == ["spec.hostNetwork is true"]
    assert restricted_violations(pod["spec"], allow_host_network=True) == []


def test_the_jobs_network_policy_selects_its_own_agent_pods_and_their_ports():
    spec = example_spec()
    policy = builders.network_policy(job_of(spec))
    pod, other_job = agent_pod_of(spec), builders.agent_pod(job_of(spec, "other"), 0, attempt=1)
    selected = policy["spec"]["podSelector"]["matchLabels"].items()
    flight, metrics = policy["spec"]["ingress"]
    (peer,) = flight["from"]
    assert selected <= pod["metadata"]["labels"].items() and peer["podSelector"]["matchLabels"].items() == selected
    assert not selected <= other_job["metadata"]["labels"].items()  # another job's agents are no peers
    (container,) = pod["spec"]["containers"]
    assert [rule["ports"][0]["port"] for rule in (flight, metrics)] == [port["name"] for port in container["ports"]] == ["flight", "http"]


@pytest.mark.parametrize("security", [{}, {"issuerRef": {"name": "agents-ca"}}], ids=["operator-ca", "cert-manager"])
def test_what_the_operator_creates_per_job_validates_strictly(security):
    volumes = [{"name": "results", "mountPath": "/results", "persistentVolumeClaim": {"claimName": "shared", "readOnly": False}}]
    job = job_of({**example_spec(), "volumes": volumes,
                  "security": {**security, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}})
    children = builders.with_new_keys([*builders.shared_children(job), *builders.agent_tls_children(job, 1), builders.agent_pod(job, 0, 1)])
    for child in children:
        if child["apiVersion"] == builders.CERT_MANAGER_API_VERSION:
            continue  # kubernetes-validate knows no cert-manager schema (tests/operator builds the Certificate)
        try:
            kubernetes_validate.validate(child, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{child['kind']}/{child['metadata']['name']}: {error.message} at {list(error.path)}")
