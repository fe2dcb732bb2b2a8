"""The restricted Pod Security Standard (Kubernetes 1.33), as checks on a PodSpec dict.

``restricted_violations(pod_spec)`` returns one message per violated control (empty: compliant).
Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted).
hostNetwork is a violation unless ``allow_host_network`` is set: agents may opt into it
(SabotJob spec.hostNetwork), which admission then only allows in namespaces with the privileged level.
"""
from __future__ import annotations

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}
ALLOWED_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod_spec: dict):
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(key) or []:
            yield f"{key}[{container.get('name')}]", container


def restricted_violations(pod_spec: dict, allow_host_network: bool = False) -> list[str]:
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}

    for field in ("hostPID", "hostIPC") + (() if allow_host_network else ("hostNetwork",)):
        if pod_spec.get(field):
            problems.append(f"spec.{field} is true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)} not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    if (pod_sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("pod appArmorProfile is Unconfined")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")

    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        problems.append(f"pod seccompProfile is {pod_seccomp}")
    selinux = pod_sc.get("seLinuxOptions") or {}
    if selinux.get("type") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append("pod seLinuxOptions not allowed")

    for where, container in _containers(pod_spec):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities.drop does not contain ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{where}: capabilities.add {sorted(added)}")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            problems.append(f"{where}: runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ALLOWED_SECCOMP:
            problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault or Localhost")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"{where}: procMount {sc.get('procMount')}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{where}: appArmorProfile is Unconfined")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}: seLinuxOptions not allowed")
        for port in container.get("ports") or []:
            if port.get("hostPort") and not allow_host_network:
                problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems


def pod_specs(manifests: list[dict]):
    """(kind/name, PodSpec) of every Pod and every workload's pod template in a list of manifests."""
    for doc in manifests:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        if kind == "Pod":
            yield f"{kind}/{name}", doc["spec"]
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield f"{kind}/{name}", doc["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
