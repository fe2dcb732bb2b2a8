"""The operator's Kubernetes I/O (official `kubernetes` client): every call bounded and idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from . import builders, crd

# Every request has a deadline, so a stuck connection cannot stall a job's reconcile loop.
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds
# Kind of a child -> (API class, the resource's name in its method names: create_namespaced_<...>).
CHILD_RESOURCES = {
    "Pod": ("CoreV1Api", "pod"),
    "Service": ("CoreV1Api", "service"),
    "ConfigMap": ("CoreV1Api", "config_map"),
    "Secret": ("CoreV1Api", "secret"),
    "NetworkPolicy": ("NetworkingV1Api", "network_policy"),
}
CERT_MANAGER_GROUP, CERT_MANAGER_VERSION = builders.CERT_MANAGER_API_VERSION.split("/")
CERTIFICATES = "certificates"


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
        """The client method `verb` of a child kind, taking the arguments core methods take."""
        if kind == "Certificate":  # a custom resource: group, version, namespace and plural come first
            custom = getattr(self.custom, f"{verb}_namespaced_custom_object")
            if verb == "create":
                return lambda namespace, body, **options: custom(CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, namespace, CERTIFICATES, body, **options)
            return lambda name, namespace, **options: custom(CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, namespace, CERTIFICATES, name, **options)
        api, resource = CHILD_RESOURCES[kind]
        return getattr(getattr(kubernetes.client, api)(self.client), f"{verb}_namespaced_{resource}")

    def list_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=builders.pod_selector(job_name), _request_timeout=REQUEST_TIMEOUT)
        return [self.client.sanitize_for_serialization(pod) for pod in pods.items]

    def get_children(self, namespace: str, job: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        """The job's children besides its pods, by (kind, name); absent ones are left out: the
        ConfigMap, Service and NetworkPolicy by name, the operator's TLS Secrets by label, and
        cert-manager Certificates by label when the job uses cert-manager (only then does the
        cluster need to have their API, and the operator the right to read it)."""
        job_name = job["metadata"]["name"]
        found = {}
        for kind, name in (("ConfigMap", builders.plan_name(job_name)), ("Service", builders.service_name(job_name)),
                           ("NetworkPolicy", builders.network_policy_name(job_name))):  # fmt: skip
            try:
                found[kind, name] = self.client.sanitize_for_serialization(self._call("read", kind)(name, namespace, _request_timeout=REQUEST_TIMEOUT))
            except ApiException as error:
                if error.status != 404:
                    raise
        selector = builders.pod_selector(job_name)
        for secret in self._metadata_of(f"/api/v1/namespaces/{namespace}/secrets", selector):
            found["Secret", secret["metadata"]["name"]] = secret
        if builders.uses_cert_manager(job["spec"]):
            listed = self.custom.list_namespaced_custom_object(CERT_MANAGER_GROUP, CERT_MANAGER_VERSION, namespace, CERTIFICATES,
                                                               label_selector=selector, _request_timeout=REQUEST_TIMEOUT)  # fmt: skip
            for certificate in listed["items"]:
                found["Certificate", certificate["metadata"]["name"]] = certificate
        return found

    def _metadata_of(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        """The objects a list request finds, metadata only (PartialObjectMetadataList): the operator
        decides on Secrets by their labels and annotations and never reads their keys back."""
        listed = self.client.call_api(
            path, "GET", query_params=[("labelSelector", label_selector)], response_type="object", auth_settings=["BearerToken"],
            header_params={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"},
            _return_http_data_only=True, _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        return listed.get("items") or []  # an empty PartialObjectMetadataList has "items": null

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
