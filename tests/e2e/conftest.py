"""Fixtures of the end-to-end suite: a real cluster with the operator installed and real pods.

The suite runs only when told which cluster to use, and skips naming what is missing otherwise:
- SABOT_E2E_KUBECONFIG=path, or SABOT_E2E=1 with KUBECONFIG: the cluster (kind via `make e2e`, or
  the real-pods tier);
- SABOT_E2E_IMAGE: the image the agents run (loaded into the cluster's nodes);
- the SabotJob CRD must be installed (`helm install`, see README.md, "Installing on a cluster with Helm").
Optional: SABOT_E2E_NAMESPACE runs the jobs in that existing namespace (for an operator installed
in namespaced mode) instead of a fresh namespace per test; SABOT_E2E_TIMEOUT (seconds, default 600)
bounds the wait for each job.

Shared output: a job of several agents commits its result through a location every agent reaches
(agent 0 moves every agent's staged part into place), and the operator refuses a local output no
volume backs, so the examples (written for `sabot run`) need object storage and skip without it. SABOT_E2E_OUTPUT=s3://bucket/prefix/ gives it (each job writes under
<prefix>/<namespace>/<job>/), with SABOT_E2E_S3_ENDPOINT (e.g. http://minio.storage:9000, as the pods
reach it; also used to read the result back) and SABOT_E2E_S3_REGION when not AWS's defaults, and
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: the suite puts them into a Secret `sabot-e2e-s3` in each
namespace, which the jobs' spec.storage.s3.credentialsSecret names.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from kubernetes import client, config

CRD_NAME = "sabotjobs.sabot.io"
S3_SECRET = "sabot-e2e-s3"
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


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


@dataclass
class SharedOutput:
    """Object storage every agent reaches (SABOT_E2E_OUTPUT and friends, see the module docstring)."""

    base: str  # s3://bucket/prefix
    endpoint: str | None
    region: str | None
    keys: dict[str, str]

    def storage(self) -> dict:
        s3 = {"credentialsSecret": S3_SECRET}
        if self.endpoint:
            s3["endpoint"] = self.endpoint
        if self.region:
            s3["region"] = self.region
        return {"s3": s3}

    def path_for(self, namespace: str, job_name: str) -> str:
        return f"{self.base.rstrip('/')}/{namespace}/{job_name}/"

    def grant(self, cluster: E2ECluster, namespace: str) -> None:
        """The Secret with the keys in `namespace` (replaced when it exists)."""
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=S3_SECRET), type="Opaque", string_data=self.keys)
        try:
            cluster.core.create_namespaced_secret(namespace, body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            cluster.core.replace_namespaced_secret(S3_SECRET, namespace, body)

    def filesystem(self):
        from pyarrow import fs as pafs

        options = {"access_key": self.keys["AWS_ACCESS_KEY_ID"], "secret_key": self.keys["AWS_SECRET_ACCESS_KEY"],
                   "connect_timeout": 5, "request_timeout": 30}
        if self.endpoint:
            scheme, _, address = self.endpoint.rstrip("/").partition("://")
            options.update(endpoint_override=address, scheme=scheme)
        if self.region:
            options["region"] = self.region
        return pafs.S3FileSystem(**options)


@pytest.fixture(scope="session")
def shared_output() -> SharedOutput | None:
    base = os.environ.get("SABOT_E2E_OUTPUT")
    if not base:
        return None
    if not base.startswith("s3://"):
        pytest.fail(f"SABOT_E2E_OUTPUT must be an s3:// URI, not {base!r}")
    missing = [key for key in S3_KEYS if not os.environ.get(key)]
    if missing:
        pytest.fail(f"SABOT_E2E_OUTPUT is set but {' and '.join(missing)} not: the agents need the keys")
    return SharedOutput(base=base, endpoint=os.environ.get("SABOT_E2E_S3_ENDPOINT") or None,
                        region=os.environ.get("SABOT_E2E_S3_REGION") or None,
                        keys={key: os.environ[key] for key in S3_KEYS})
