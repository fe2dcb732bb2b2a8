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
from controlplane import wait_for  # noqa: E402

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
    try:
        bins = controlplane.ensure_binaries(build=os.environ.get("SABOT_E2E_NO_BUILD") != "1")
    except controlplane.MissingPrerequisite as e:
        pytest.skip(f"T1 control plane unavailable: {e}")
    cp = controlplane.ControlPlane(bins)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop(remove=not os.environ.get("SABOT_KEEP_CLUSTER_DIR"))


@pytest.fixture
def namespace(kube_cluster):
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are rejected by ServiceAccount admission until the controller-manager
    # has created the namespace's default ServiceAccount.
    wait_for(lambda: kube_cluster.kubectl("get", "serviceaccount", "default", "-n", name,
                                          check=False).returncode == 0,
             timeout=30, what=f"default ServiceAccount in {name}")
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                             check=False)
