"""Fixtures of the real-pods tier (T2): the T1 control plane plus one real node (containerd, runc, CNI
bridge, kubelet, hack/realpods/dns.py), the project image imported into containerd, the SabotJob CRD,
and (per test module that asks for it) the operator running in-process (kopf.testing.KopfRunner, all
namespaces).

Skips, naming what is missing, when the machine cannot run it: not root, the Debian packages
(containerd, runc, containernetworking-plugins, debootstrap) absent, Go/the module proxy/etcd absent
(T1's binaries), the Debian mirror or PyPI unreachable for the image, or the kubelet refusing to start
here (the skip quotes its error line). `hack/realpods/ensure.sh` installs and builds everything up front.

Env: SABOT_E2E_NO_BUILD=1 skips instead of building the Kubernetes binaries; SABOT_KEEP_CLUSTER_DIR=1
keeps the control plane's directory. The node always removes what it created (bridge, veths, netns,
mounts, cgroups, processes); the session asserts it at the end.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
for folder in ("operator", "agent"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))
sys.path.insert(0, str(REPO / "hack" / "cluster"))
sys.path.insert(0, str(REPO / "hack" / "realpods"))
import controlplane  # noqa: E402
import node as realnode  # noqa: E402
from helpers import control_plane, fresh_namespace  # noqa: E402

CRD_FILE = REPO / "crds" / "sabotjob.yaml"
IMAGE = os.environ.get("SABOT_IMAGE", "sabot.local/sabot:dev")


@dataclass
class RealPodsCluster:
    cp: controlplane.ControlPlane
    node: realnode.Node
    image: str
    timings: dict = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def realpods_cluster():
    try:
        realnode.preflight()
    except realnode.Missing as e:
        pytest.skip(f"T2 real pods unavailable: {e}")
    t0 = time.monotonic()
    with control_plane("T2 real pods (T1 binaries)", quiet=True, extra_apiserver_args=realnode.APISERVER_ARGS,
                       extra_sans=realnode.APISERVER_SANS) as cp:
        node = None
        try:
            t_cp = time.monotonic() - t0
            # kwok's fake node would take pods that never run: this tier has only the real node.
            cp.kubectl("delete", "node", controlplane.FAKE_NODE, "--wait=false")
            node = realnode.Node(cp)
            try:
                node.start()
            except realnode.Missing as e:
                node = None
                pytest.skip(f"T2 real pods unavailable: {e}")
            except realnode.NodeError as e:
                kubelet_dead = "kubelet exited" in str(e) or "waiting for node" in str(e)
                line = node.kubelet_error() if kubelet_dead else ""
                node = None
                if kubelet_dead:
                    pytest.skip(f"T2 real pods unavailable: the kubelet does not start on this machine: {line}")
                raise
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
            cp.kubectl("wait", "--for=condition=Established", "crd/sabotjobs.sabot.io", "--timeout=30s")
            cluster = RealPodsCluster(cp=cp, node=node, image=IMAGE,
                                      timings={"controlplane": t_cp, **node.timings,
                                               "session_setup": time.monotonic() - t0})
            print(f"\n[realpods] setup: {', '.join(f'{k} {v:.1f}s' for k, v in cluster.timings.items())}",
                  file=sys.stderr)
            yield cluster
        finally:
            if node is not None:
                node.stop()
    left = realnode.leftovers()
    assert not left, f"the real-pods node left this behind: {left}"


@pytest.fixture(scope="module")
def operator(realpods_cluster):
    """The operator, in-process for the tests of one module, watching all namespaces.

    Module-scoped, so it is stopped before the next module runs: test_helm_on_real_pods.py installs the
    operator as a pod with the chart and must be the only operator then."""
    from kopf.testing import KopfRunner

    import kubernetes.config.kube_config as kube_config

    old = os.environ.get("KUBECONFIG")
    old_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"] = str(realpods_cluster.kubeconfig)
    # The kubernetes client reads $KUBECONFIG when first imported, which may have been earlier.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(realpods_cluster.kubeconfig)
    try:
        with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "sabot_operator.handlers"],
                        timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output[-5000:]
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old_default
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture
def namespace(realpods_cluster):
    with fresh_namespace(realpods_cluster, "t2-") as name:
        yield name
