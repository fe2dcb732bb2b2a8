"""`spec.volumes`: PersistentVolumeClaims mounted into every agent, for inputs and outputs that are
files rather than object storage.

A cluster job's result needs a location every agent sees (agent 0 publishes it by moving each agent's
staged part into place), so an output claim is a shared one, e.g. ReadWriteMany. This module holds the
field's schema and CEL rules (crd.py puts them in the CRD), the claims' pod volumes and mounts
(builders.agent_pod), and the check the operator alone makes (validation.spec_problems): every local
input and output path lies on such a volume. Without one, an agent reads its container's own files and
writes into its own pod, where the result vanishes with the pod. CEL cannot resolve relative paths or
`..`, so this check is no CRD rule.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import Any, Callable

from sabot_agent.jobspec import field_path

# The agent container's own mounts (builders.agent_pod). A claim mounted at, above or inside one
# would hide it or be hidden by it.
JOB_DIR = "/etc/sabot"
SPILL_DIR = "/var/lib/sabot/spill"
TLS_DIR = "/etc/sabot-tls"
TMP_DIR = "/tmp"  # HOME, TMPDIR and the working directory of the image: relative paths resolve here
AGENT_MOUNTS = (JOB_DIR, SPILL_DIR, TLS_DIR, TMP_DIR)

MAX_VOLUMES = 16
# The builder's own pod volumes are plan, spill, tmp and tls; a claim's is this prefix and its name,
# so the two never clash, and the pod volume name stays a DNS label.
POD_VOLUME_PREFIX = "volume-"
MAX_NAME_LENGTH = 63 - len(POD_VOLUME_PREFIX)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Absolute and normalized (no empty, "." or ".." segment, no trailing "/"), so that "lies inside" is a
# prefix test, in CEL too. Bounded well below path lengths: the CEL rules compare every pair.
MOUNT_PATH_PATTERN = r"^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$"
MAX_MOUNT_PATH_LENGTH = 1024

SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_VOLUMES,
    "description": "PersistentVolumeClaims mounted into every agent: local input and output paths must lie on one "
    "(an output on a claim every agent mounts, e.g. ReadWriteMany, and not readOnly)",
    "items": {
        "type": "object",
        "required": ["name", "mountPath", "persistentVolumeClaim"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": DNS_LABEL_PATTERN,
                     "description": "a DNS label, unique in the job"},
            "mountPath": {"type": "string", "maxLength": MAX_MOUNT_PATH_LENGTH, "pattern": MOUNT_PATH_PATTERN,
                          "description": f"absolute path in the agent container; not at, above or inside {', '.join(AGENT_MOUNTS)}"},
            "persistentVolumeClaim": {
                "type": "object",
                "required": ["claimName"],
                "properties": {
                    "claimName": {"type": "string", "minLength": 1, "maxLength": 253, "description": "a claim in the job's namespace"},
                    "readOnly": {"type": "boolean", "default": False, "description": "mount it read-only (inputs only)"},
                },
            },
        },
    },
}  # fmt: skip


def overlaps(a: str, b: str) -> bool:
    """Whether one of two normalized absolute paths is the other or lies inside it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _cel_overlaps(a: str, b: str) -> str:
    return f"({a} == {b} || {a}.startsWith({b} + '/') || {b}.startsWith({a} + '/'))"


def _mount_paths(volumes: list[dict]) -> list[str]:
    return [volume["mountPath"] for volume in volumes]


# (CEL, message, Python twin) of the rules on the spec.volumes list; crd.RULES wraps them. Every entry
# overlaps itself, so "exactly one" means "no other".
LIST_RULES: tuple[tuple[str, str, Callable[[list], bool]], ...] = (
    ("self.all(v, self.exists_one(w, w.name == v.name))",
     "volume names must be unique",
     lambda volumes: len({volume["name"] for volume in volumes}) == len(volumes)),
    ("self.all(v, self.exists_one(w, " + _cel_overlaps("w.mountPath", "v.mountPath") + "))",
     "mountPaths must not overlap: no volume may be mounted at or inside another one's mountPath",
     lambda volumes: all(sum(overlaps(a, b) for b in _mount_paths(volumes)) == 1 for a in _mount_paths(volumes))),
    ("self.all(v, " + " && ".join(f"!{_cel_overlaps('v.mountPath', repr(mount))}" for mount in AGENT_MOUNTS) + ")",
     f"a mountPath must not be at, above or inside the agent's own mounts {', '.join(AGENT_MOUNTS)}",
     lambda volumes: not any(overlaps(path, mount) for path in _mount_paths(volumes) for mount in AGENT_MOUNTS)),
)  # fmt: skip


def pod_claims(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, agent container mounts) of `spec.volumes`, one claim volume each."""
    pod_volumes, mounts = [], []
    for volume in spec.get("volumes", []):
        name = POD_VOLUME_PREFIX + volume["name"]
        claim = volume["persistentVolumeClaim"]
        read_only = claim.get("readOnly", False)
        pod_volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim["claimName"], "readOnly": read_only}})
        mounts.append({"name": name, "mountPath": volume["mountPath"], "readOnly": read_only})
    return pod_volumes, mounts


def container_path(path: str) -> str | None:
    """The absolute path in the agent container that a local input or output path names (no scheme, or
    file://, as sabot_agent.inputs.filesystem_and_path opens it: relative to the working directory);
    None for object storage and any other URI."""
    if path.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
    elif "://" in path:
        return None
    # normpath keeps a leading "//", which Linux reads as "/"
    return "/" + posixpath.normpath(posixpath.join(TMP_DIR, path)).lstrip("/")


def _volume_holding(path: str, volumes: list[dict]) -> dict | None:
    return next((volume for volume in volumes if path == volume["mountPath"] or path.startswith(volume["mountPath"] + "/")), None)


def _described(path: str, resolved: str) -> str:
    return path if path == resolved else f"{path} (in the agent: {resolved})"


def path_problems(spec: dict[str, Any]) -> list[str]:
    """One line per local input or output path that no volume of `spec.volumes` backs, and for an
    output on a readOnly volume."""
    volumes, pipeline = spec.get("volumes", []), spec["pipeline"]
    problems = []
    for name, source in pipeline["inputs"].items():
        resolved = container_path(source["path"]) if "path" in source else None
        if resolved is not None and _volume_holding(resolved, volumes) is None:
            problems.append(
                f"{field_path(['spec', 'pipeline', 'inputs', name, 'path'])}: {_described(source['path'], resolved)} is not on a volume: "
                "the agent pods cannot see files of the machine that applied the job; read from s3://... or mount a "
                "PersistentVolumeClaim holding them with spec.volumes"
            )
    output = pipeline["output"]["path"]
    resolved = container_path(output)
    if resolved is None:
        return problems
    volume = _volume_holding(resolved, volumes)
    if volume is None:
        problems.append(
            f"spec.pipeline.output.path: {_described(output, resolved)} is not on a volume: each agent would write it inside its "
            "own pod and it would vanish with the pods; write to s3://... or mount a PersistentVolumeClaim with spec.volumes"
        )
    elif volume["persistentVolumeClaim"].get("readOnly"):
        problems.append(f"spec.pipeline.output.path: {output} is on volume {volume['name']!r}, which is mounted readOnly")
    return problems
