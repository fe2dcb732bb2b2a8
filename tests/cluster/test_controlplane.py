"""The T1 harness works for real: API server storage, scheduler + kwok, garbage
collector and serviceaccount controllers of the controller-manager."""
from __future__ import annotations

import json

import pytest
from helpers import kget, wait_for

pytestmark = pytest.mark.cluster


def test_configmap_roundtrip(kube_cluster, namespace):
    kube_cluster.kubectl(
        "create", "configmap", "roundtrip", "-n", namespace,
        "--from-literal=answer=42", "--from-literal=shuffle=flight",
    )
    cm = kget(kube_cluster, "configmap", "roundtrip", "-n", namespace)
    assert cm["data"] == {"answer": "42", "shuffle": "flight"}
    assert cm["metadata"]["namespace"] == namespace
    assert cm["metadata"]["uid"]  # persisted by the API server (etcd-assigned identity)


def test_new_namespace_gets_default_serviceaccount(kube_cluster, namespace):
    sa = kget(kube_cluster, "serviceaccount", "default", "-n", namespace)
    assert sa["metadata"]["name"] == "default"
    assert sa["metadata"]["namespace"] == namespace
    # The root CA publisher (also controller-manager) puts the cluster CA in every namespace.
    def root_ca():
        r = kube_cluster.kubectl("get", "configmap", "kube-root-ca.crt", "-n", namespace,
                                 "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    ca = wait_for(root_ca, what="kube-root-ca.crt", timeout=30)
    assert "BEGIN CERTIFICATE" in ca["data"]["ca.crt"]


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
spec:
  containers:
  - name: main
    image: sabot-agent:does-not-exist
    command: ["sleep", "infinity"]
"""


def test_pod_is_scheduled_to_fake_node_and_runs(kube_cluster, namespace):
    kube_cluster.kubectl("apply", "-f", "-", input=POD.format(name="p1", ns=namespace))

    def running():
        pod = kget(kube_cluster, "pod", "p1", "-n", namespace)
        return pod if pod.get("status", {}).get("phase") == "Running" else None

    pod = wait_for(running, timeout=30, what="pod p1 Running")
    assert pod["spec"]["nodeName"] == "kwok-node-0"  # bound by kube-scheduler
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds.get("PodScheduled") == "True"
    assert conds.get("Ready") == "True"
    assert pod["status"]["podIP"]


def test_garbage_collector_deletes_owned_objects(kube_cluster, namespace):
    kube_cluster.kubectl("create", "configmap", "parent", "-n", namespace, "--from-literal=a=b")
    parent_uid = kget(kube_cluster, "configmap", "parent", "-n", namespace)["metadata"]["uid"]
    child = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "child", "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
                                 "uid": parent_uid}],
        },
        "data": {"c": "d"},
    }
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps(child))
    assert kget(kube_cluster, "configmap", "child", "-n", namespace)["metadata"][
        "ownerReferences"][0]["uid"] == parent_uid

    kube_cluster.kubectl("delete", "configmap", "parent", "-n", namespace, "--wait=false")

    def child_gone():
        r = kube_cluster.kubectl("get", "configmap", "child", "-n", namespace, check=False)
        return r.returncode != 0 and "NotFound" in r.stderr

    wait_for(child_gone, timeout=30, interval=0.5, what="garbage collection of child")
    # The unrelated default objects in the namespace are untouched.
    assert kube_cluster.kubectl("get", "serviceaccount", "default", "-n", namespace).returncode == 0


def test_fake_node_is_ready(kube_cluster):
    node = kget(kube_cluster, "node", "kwok-node-0")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    assert node["status"]["allocatable"]["pods"] == "110"
