"""The chart installed by helm on a real kube-apiserver (the T1 control plane of hack/cluster, see
tests/README.md): the API server accepts every object (the CRD with its CEL rules, RBAC, Deployment,
Services), the operator's ServiceAccount may do what the operator does and nothing more, the
examples are accepted as SabotJobs, and `helm uninstall` keeps the CRD.

Skips naming the missing piece when the control plane's binaries cannot be had
(SABOT_E2E_NO_BUILD=1: skip instead of building them)."""
from __future__ import annotations

import subprocess
import time

import pytest

from chart_render import CHART, EXAMPLES
from helpers import control_plane

RELEASE, NAMESPACE = "sabot", "sabot-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:sabot-sabot-operator"
# (verb, resource) pairs the operator's code and kopf use; the chart's RBAC must allow each.
OPERATOR_NEEDS = [
    *[(verb, "sabotjobs.sabot.io") for verb in ("get", "list", "watch", "patch", "update", "delete")],
    *[(verb, "sabotjobs.sabot.io/status") for verb in ("get", "patch", "update")],
    ("update", "sabotjobs.sabot.io/finalizers"),
    *[(verb, "pods") for verb in ("create", "get", "list", "watch", "patch", "delete")],
    *[(verb, "services") for verb in ("create", "get", "list", "watch", "delete")],
    *[(verb, "configmaps") for verb in ("create", "get", "update", "delete")],
    ("create", "events"),
]
OPERATOR_MUST_NOT = [("get", "secrets"), ("create", "deployments.apps"), ("create", "sabotjobs.sabot.io"),
                     ("escalate", "roles.rbac.authorization.k8s.io"), ("delete", "namespaces")]


@pytest.fixture(scope="module")
def apiserver():
    """A control plane of its own, not the shared `kube_cluster`: helm refuses to install a CRD that
    other tiers created without helm's ownership labels, so the release must start from an empty one."""
    with control_plane(quiet=True) as plane:
        yield plane


def helm_run(helm: str, plane, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([helm, "--kubeconfig", str(plane.kubeconfig), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def kubectl_ok(plane, *args: str) -> str:
    result = plane.kubectl(*args, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def can_i(plane, verb: str, resource: str, namespace: str) -> bool:
    result = plane.kubectl("auth", "can-i", verb, resource, f"--as={OPERATOR}", "-n", namespace, check=False)
    return result.stdout.strip() == "yes"


def wait_established(plane) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = plane.kubectl("get", "crd", "sabotjobs.sabot.io", "-o",
                               "jsonpath={.status.conditions[?(@.type=='Established')].status}", check=False)
        if status.stdout.strip() == "True":
            return
        time.sleep(0.5)
    pytest.fail("CRD sabotjobs.sabot.io not Established after 30 s")


def test_cluster_wide_install_then_uninstall_keeps_the_crd(helm, apiserver):
    install = helm_run(helm, apiserver, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace")
    assert "watches SabotJobs in every namespace" in install.stdout  # NOTES.txt rendered
    wait_established(apiserver)
    kubectl_ok(apiserver, "create", "namespace", "jobs")
    for verb, resource in OPERATOR_NEEDS:
        assert can_i(apiserver, verb, resource, "jobs"), f"operator may not {verb} {resource}"
    for verb, resource in OPERATOR_MUST_NOT:
        assert not can_i(apiserver, verb, resource, "jobs"), f"operator may {verb} {resource}"
    for example in EXAMPLES:
        kubectl_ok(apiserver, "apply", "-n", "jobs", "-f", str(example))
    names = kubectl_ok(apiserver, "get", "sabotjobs", "-n", "jobs", "-o", "name").split()
    assert len(names) == len(EXAMPLES)

    helm_run(helm, apiserver, "uninstall", RELEASE, "--namespace", NAMESPACE)
    assert apiserver.kubectl("get", "crd", "sabotjobs.sabot.io", check=False).returncode == 0, "CRD deleted"
    assert apiserver.kubectl("get", "clusterrole", "sabot-sabot-operator", check=False).returncode != 0


def test_namespaced_install_grants_only_the_watched_namespaces(helm, apiserver):
    for namespace in ("team-a", "team-b", "team-c"):
        kubectl_ok(apiserver, "create", "namespace", namespace)
    # The CRD is kept from the previous test's release, or installed here when this test runs alone.
    crd_enabled = apiserver.kubectl("get", "crd", "sabotjobs.sabot.io", check=False).returncode != 0
    helm_run(helm, apiserver, "install", "scoped", str(CHART), "--namespace", "team-a",
             "--values", str(CHART / "ci" / "namespaced-values.yaml"), "--set", f"crds.enabled={str(crd_enabled).lower()}",
             "--set", "fullnameOverride=scoped-operator")
    scoped = "system:serviceaccount:team-a:scoped-operator"
    for namespace, allowed in (("team-a", True), ("team-b", True), ("team-c", False)):
        result = apiserver.kubectl("auth", "can-i", "create", "pods", f"--as={scoped}", "-n", namespace, check=False)
        assert (result.stdout.strip() == "yes") is allowed, namespace
    result = apiserver.kubectl("auth", "can-i", "watch", "customresourcedefinitions.apiextensions.k8s.io",
                               f"--as={scoped}", check=False)
    assert result.stdout.strip() == "yes"
