"""Fixtures of the end-to-end suite: a real cluster with the operator installed and real pods.

The suite runs only when told which cluster to use, and skips naming what is missing otherwise:
- SABOT_E2E_KUBECONFIG=path, or SABOT_E2E=1 with KUBECONFIG: the cluster (kind via `make e2e`, or
  the real-pods tier);
- SABOT_E2E_IMAGE: the image the agents run (loaded into the cluster's nodes);
- the SabotJob CRD must be installed (`helm install`, see README.md, "Installing on a cluster with Helm").
Optional: SABOT_E2E_NAMESPACE runs the jobs in that existing namespace (for an operator installed
in namespaced mode) instead of a fresh namespace per test; SABOT_E2E_TIMEOUT (seconds, default 600)
bounds the wait for each job.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from kubernetes import client, config

CRD_NAME = "sabotjobs.sabot.io"


@dataclass
class E2ECluster:
    api: client.ApiClient
    image: str
    timeout: float

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


def _kubeconfig() -> str | None:
    if os.environ.get("SABOT_E2E_KUBECONFIG"):
        return os.environ["SABOT_E2E_KUBECONFIG"]
    if os.environ.get("SABOT_E2E") == "1" and os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    return None


@pytest.fixture(scope="session")
def e2e_cluster() -> E2ECluster:
    kubeconfig = _kubeconfig()
    if not kubeconfig:
        pytest.skip("e2e: no cluster given (set SABOT_E2E_KUBECONFIG, or SABOT_E2E=1 with KUBECONFIG; `make e2e` does it with kind)")
    image = os.environ.get("SABOT_E2E_IMAGE")
    if not image:
        pytest.skip("e2e: SABOT_E2E_IMAGE (the agent image loaded into the cluster) is not set")
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    except client.ApiException as error:
        if error.status == 404:
            pytest.skip(f"e2e: the cluster of {kubeconfig} has no {CRD_NAME} CRD (helm install the operator first)")
        raise
    return E2ECluster(api=api, image=image, timeout=float(os.environ.get("SABOT_E2E_TIMEOUT", "600")))


@pytest.fixture
def namespace(e2e_cluster):
    if os.environ.get("SABOT_E2E_NAMESPACE"):
        yield os.environ["SABOT_E2E_NAMESPACE"]
        return
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    e2e_cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        e2e_cluster.core.delete_namespace(name, propagation_policy="Background")
