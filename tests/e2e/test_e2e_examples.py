"""Each example SabotJob on a real cluster: applied with the test image and its output on the shared
storage the suite is given (SABOT_E2E_OUTPUT), it reaches Succeeded, every agent reports its result in
the status, the published result (its `_SUCCESS` manifest) has a part per agent and the rows the agents
reported, and an agent's /metrics (scraped through the API server's pod proxy while it runs) exposes
the agent metrics. See conftest.py for what the suite needs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
GROUP, VERSION, PLURAL = "sabot.io", "v1alpha1", "sabotjobs"
AGENT_SELECTOR = "app.kubernetes.io/name=sabot-agent,sabot.io/job-name={job}"
POLL_SECONDS = 0.5
METRICS_POLL_SECONDS = 0.05  # until one scrape succeeded: the agents live only a few seconds


def reads_local_files(job: dict) -> bool:
    """Inputs given as local paths exist on the machine that has the file, not inside agent pods."""
    return any("path" in source and "://" not in source["path"] for source in job["spec"]["pipeline"]["inputs"].values())


def scrape_agent_metrics(cluster, namespace: str, job_name: str) -> str | None:
    """/metrics of the first running agent pod of the job, through the API server's pod proxy.

    Readiness is not awaited: the example jobs finish about a second after their agents start,
    sooner than a readiness probe period, and the HTTP server is the first thing an agent starts."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=AGENT_SELECTOR.format(job=job_name)).items
    for pod in pods:
        if pod.status.phase != "Running":
            continue
        (port,) = [p.container_port for p in pod.spec.containers[0].ports if p.name == "http"]
        try:
            return cluster.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod.metadata.name}:{port}", namespace, "metrics", _request_timeout=5)
        except client.ApiException:
            continue  # not listening yet, or finished between the list and the scrape
    return None


def read_manifest(shared_output, path: str) -> dict:
    """The `_SUCCESS` manifest of the result published at `path` (s3://...)."""
    with shared_output.filesystem().open_input_stream(f"{path[len('s3://'):].rstrip('/')}/_SUCCESS") as handle:
        return json.loads(handle.read())


def events_of(cluster, namespace: str, name: str) -> str:
    events = cluster.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return "\n".join(f"  {e.type} {e.reason}: {e.message}" for e in events)


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_job_succeeds_on_the_cluster(e2e_cluster, namespace, shared_output, example):
    job = yaml.safe_load(example.read_text())
    if reads_local_files(job):
        pytest.skip(f"{example.name} reads local files that agent pods do not have")
    job["spec"]["image"] = e2e_cluster.image
    name = job["metadata"]["name"]
    if shared_output is not None:
        shared_output.grant(e2e_cluster, namespace)
        job["spec"]["storage"] = shared_output.storage()
        job["spec"]["pipeline"]["output"]["path"] = shared_output.path_for(namespace, name)
    else:
        pytest.skip(f"{example.name} writes a local path, which the operator refuses (it would vanish with the pods): "
                    "set SABOT_E2E_OUTPUT=s3://bucket/prefix/ (see tests/e2e/conftest.py)")
    e2e_cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)

    metrics, status = None, {}
    deadline = time.monotonic() + e2e_cluster.timeout
    while time.monotonic() < deadline:
        status = e2e_cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        if metrics is None:
            metrics = scrape_agent_metrics(e2e_cluster, namespace, name)
        time.sleep(POLL_SECONDS if metrics is not None else METRICS_POLL_SECONDS)

    history = f"status: {yaml.safe_dump(status)}\nevents:\n{events_of(e2e_cluster, namespace, name)}"
    assert status.get("phase") == "Succeeded", history
    agents = status["agents"]
    assert sorted(agent["index"] for agent in agents) == list(range(job["spec"].get("agents", 1))), history
    for agent in agents:
        assert agent["result"]["outputFiles"], history
    assert sum(agent["result"]["rowsIn"] for agent in agents) > 0, history
    assert sum(agent["result"]["rowsOut"] for agent in agents) > 0, history
    if shared_output is not None:
        manifest = read_manifest(shared_output, job["spec"]["pipeline"]["output"]["path"])
        assert len(manifest["parts"]) == len(agents), manifest
        assert manifest["rows"] == sum(agent["result"]["rowsOut"] for agent in agents), (manifest, history)
    assert metrics is not None, "no agent /metrics could be scraped while the job ran"
    assert "# TYPE sabot_shuffle_bytes" in metrics and f'job="{name}"' in metrics, metrics[:2000]
