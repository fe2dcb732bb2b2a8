"""Rendering helpers shared by the chart tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sabot-operator"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
SOURCE_CRD = REPO / "crds" / "sabotjob.yaml"
CHART_CRD = CHART / "files" / "crds" / "sabotjob.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
RELEASE = "sabot"
RELEASE_NAMESPACE = "sabot-system"
KUBE_VERSION = "1.33.0"


def ensure_tool(script: str, env_skip: str) -> str:
    """Run hack/<script> (builds or installs once, then cached) and return the path it prints, or skip.

    With <env_skip>=1 in the environment nothing is built: the test skips unless the tool is cached.
    """
    command = [str(REPO / "hack" / script)]
    if os.environ.get(env_skip) == "1":
        command.append("--check")
    result = subprocess.run(command, capture_output=True, text=True, timeout=3000)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "not cached"
        pytest.skip(f"{script}: {reason}" + (f" ({env_skip}=1)" if len(command) > 1 else ""))
    return result.stdout.strip().splitlines()[-1]


def crd_options() -> list[str]:
    """The chart cannot render its CRD before crds/sabotjob.yaml exists and is copied into it."""
    return [] if CHART_CRD.exists() else ["--set", "crds.enabled=false"]


def helm_template(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
         "--kube-version", KUBE_VERSION, *crd_options(), *args],
        capture_output=True, text=True, check=check, timeout=120,
    )


def render(helm: str, values: Path) -> list[dict]:
    result = helm_template(helm, "--values", str(values))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
