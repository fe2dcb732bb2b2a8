"""The operator's Kubernetes I/O (official `kubernetes` client): every call bounded and idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from . import builders, crd

# Every request has a deadline, so a stuck connection cannot stall a job's reconcile loop.
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds
# Kind of a child -> the resource's name in the core API's method names (create_namespaced_<...>).
CHILD_RESOURCES = {"Pod": "pod", "Service": "service", "ConfigMap": "config_map"}


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

    def _call(self, verb: str, kind: str):
        return getattr(self.core, f"{verb}_namespaced_{CHILD_RESOURCES[kind]}")

    def list_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=builders.pod_selector(job_name), _request_timeout=REQUEST_TIMEOUT)
        return [self.client.sanitize_for_serialization(pod) for pod in pods.items]

    def get_children(self, namespace: str, job_name: str) -> dict[str, dict[str, Any]]:
        """The job's shared children (ConfigMap, Service) by kind; absent ones are left out."""
        found = {}
        for kind, name in builders.shared_child_names(job_name).items():
            try:
                found[kind] = self.client.sanitize_for_serialization(self._call("read", kind)(name, namespace, _request_timeout=REQUEST_TIMEOUT))
            except ApiException as error:
                if error.status != 404:
                    raise
        return found

    def patch_status(self, job: dict[str, Any], new_status: dict[str, Any]) -> None:
        """Write status only if the job is unchanged since it was read (409 otherwise: read again)."""
        patch = status_patch(job.get("status") or {}, new_status)
        if not patch:
            return
        meta = job["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}
        self.custom.patch_namespaced_custom_object_status(crd.GROUP, crd.VERSION, meta["namespace"], crd.PLURAL, meta["name"], body, _request_timeout=REQUEST_TIMEOUT)

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create a child; an existing one (409) counts as done, and the next pass checks what it
        holds (status.reconcile replaces a stale one). True when this call created it."""
        try:
            self._call("create", manifest["kind"])(manifest["metadata"]["namespace"], manifest, _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as error:
            if error.status != 409:
                raise
        return False

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child; a missing one (404) counts as done."""
        try:
            self._call("delete", kind)(name, namespace, _request_timeout=REQUEST_TIMEOUT)
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
