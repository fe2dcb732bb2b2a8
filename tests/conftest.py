"""Fixtures shared by every tier that needs the T1 control plane (tests/cluster, tests/operator): a real Kubernetes API server (plus controller-manager,
scheduler and kwok) on loopback. See tests/README.md.

- ``kube_cluster`` (session): starts hack/cluster/controlplane.py's ControlPlane,
  or uses the cluster of $KUBECONFIG when SABOT_E2E_USE_KUBECONFIG=1.
  Yields an object with ``.kubeconfig`` (Path) and ``.kubectl(*args, input=None,
  check=True)`` (returns CompletedProcess, text mode).
- ``namespace`` (function): a fresh namespace per test (with its default
  ServiceAccount present), deleted afterwards.

When the Go toolchain, the Go module proxy or etcd is missing, the fixtures skip
with a reason naming what is missing. Set SABOT_E2E_NO_BUILD=1 to skip instead of
building the binaries (cold build: minutes) when they are not cached yet.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import controlplane  # noqa: E402
from helpers import control_plane, fresh_namespace  # noqa: E402

# Pod-bearing namespaces take a little while to finalize; we don't wait for it.
NAMESPACE_PREFIX = "t1-"


@dataclass
class ExistingCluster:
    """A cluster we did not start: only a kubeconfig and a kubectl."""

    kubeconfig: Path
    kubectl_bin: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return controlplane.run_kubectl(self.kubectl_bin, self.kubeconfig, *args, input=input,
                                        check=check, timeout=timeout)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the T1 control plane (kube_cluster fixture)")


@pytest.fixture(scope="session")
def kube_cluster():
    if os.environ.get("SABOT_E2E_USE_KUBECONFIG") == "1" and os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        kubectl = os.environ.get("KUBECTL") or "kubectl"
        yield ExistingCluster(kubeconfig=kubeconfig, kubectl_bin=kubectl)
        return
    with control_plane() as plane:
        yield plane


@pytest.fixture
def namespace(kube_cluster):
    with fresh_namespace(kube_cluster, NAMESPACE_PREFIX) as name:
        yield name


# --------------------------------------------------------------------------- S3 tier
# A real S3-compatible object store (SeaweedFS `weed mini`, hack/s3/s3server.py) on loopback. See tests/README.md.
#
# - ``s3_weed`` (session): path of the cached weed binary (hack/s3/ensure-seaweedfs.sh builds it once;
#   skips naming the missing prerequisite, Go or the module proxy). Tiers that need the server on another
#   address start their own: ``s3server.S3Server(s3_weed, host="10.244.0.1").start()``.
# - ``s3_server`` (session): one S3Server for the session; ``.endpoint`` ("127.0.0.1:PORT"), ``.access_key``,
#   ``.secret_key``, ``.region``, ``.env()`` (the AWS_* variables), ``.create_bucket(name)``,
#   ``.filesystem(**overrides)`` (a pyarrow.fs.S3FileSystem: endpoint_override=host:port, scheme="http", region,
#   the keys, connect_timeout 5 s, request_timeout 30 s; ``.filesystem_kwargs()`` gives the arguments).
# - ``s3_bucket`` (function): a fresh, empty bucket; yields its name; deleted (with its objects) afterwards.
# - ``s3_fs`` (session): ``s3_server.filesystem()``.
# SABOT_E2E_NO_BUILD=1 skips instead of building weed when it is not cached yet.
sys.path.insert(0, str(REPO / "hack" / "s3"))
import s3server  # noqa: E402


@pytest.fixture(scope="session")
def s3_weed():
    try:
        return s3server.ensure_weed(build=os.environ.get("SABOT_E2E_NO_BUILD") != "1")
    except s3server.MissingPrerequisite as e:
        pytest.skip(f"S3 server (SeaweedFS) unavailable: {e}")


@pytest.fixture(scope="session")
def s3_server(s3_weed):
    server = s3server.S3Server(s3_weed)
    server.start()
    try:
        yield server
    finally:
        server.stop(remove=not os.environ.get("SABOT_KEEP_S3_DIR"))


@pytest.fixture(scope="session")
def s3_fs(s3_server):
    return s3_server.filesystem()


@pytest.fixture
def s3_bucket(s3_server):
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    try:
        yield name
    finally:
        s3_server.delete_bucket(name)
