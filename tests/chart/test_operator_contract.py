"""The chart against the operator's own code: the Deployment's arguments are ones `sabot-operator`
accepts, the PodMonitor/NetworkPolicy select the labels and port names the agent pods really carry,
and the agent pods the operator builds satisfy the restricted Pod Security Standard."""
from __future__ import annotations

import re

import pytest
import yaml

from chart_render import CHART, EXAMPLES, SCENARIOS, render
from pod_security import restricted_violations

from sabot_operator import builders, crd
from sabot_operator import main as operator_main

AGENT_SELECTOR = yaml.safe_load((CHART / "values.yaml").read_text())["agents"]["selectorLabels"]


def agent_pod_of(spec: dict, index: int = 0) -> dict:
    job = {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
           "metadata": {"name": "contract", "namespace": "jobs", "uid": "00000000-0000-0000-0000-000000000001"},
           "spec": crd.spec_with_defaults(spec)}
    return builders.agent_pod(job, index, attempt=1)


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
