"""The operator's Kubernetes I/O (official `kubernetes` client): every call bounded and idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from . import builders, crd

# Every request has a deadline, so a stuck connection cannot stall a job's reconcile loop.
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds


def api_client() -> kubernetes.client.ApiClient:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status `old` into `new` (lists are replaced whole; null removes)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    patch.update({key: value for key, value in new.items() if old.get(key) != value})
    return patch


@dataclass
class Cluster:
    client: kubernetes.client.ApiClient

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.client)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.client)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=builders.pod_selector(job_name), _request_timeout=REQUEST_TIMEOUT)
        return [self.client.sanitize_for_serialization(pod) for pod in pods.items]

    def patch_status(self, job: dict[str, Any], new_status: dict[str, Any]) -> None:
        """Write status only if the job is unchanged since it was read (409 otherwise: read again)."""
        patch = status_patch(job.get("status") or {}, new_status)
        if not patch:
            return
        meta = job["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
        self.custom.patch_namespaced_custom_object_status(crd.GROUP, crd.VERSION, meta["namespace"], crd.PLURAL, meta["name"], body, _request_timeout=REQUEST_TIMEOUT)

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create a child; an existing one (409) counts as done. True when this call created it."""
        namespace, kind = manifest["metadata"]["namespace"], manifest["kind"]
        create = {"Pod": self.core.create_namespaced_pod, "Service": self.core.create_namespaced_service, "ConfigMap": self.core.create_namespaced_config_map}[kind]
        try:
            create(namespace, manifest, _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as error:
            if error.status != 409:
                raise
        if kind == "ConfigMap":
            # The plan follows the spec of the attempt being started (it may have been edited while
            # the job was suspended); pods and the headless service are fixed by name and labels.
            self.core.replace_namespaced_config_map(manifest["metadata"]["name"], namespace, manifest, _request_timeout=REQUEST_TIMEOUT)
        return False

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            # Foreground: the job goes only after its pods, service and plan are gone.
            self.custom.delete_namespaced_custom_object(crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name, propagation_policy="Foreground", _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise
