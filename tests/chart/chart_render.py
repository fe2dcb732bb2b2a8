"""Rendering helpers shared by the chart tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import subprocess
from pathlib import Path

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


def helm_template(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
         "--kube-version", KUBE_VERSION, *args],
        capture_output=True, text=True, check=check, timeout=120,
    )


def render(helm: str, values: Path) -> list[dict]:
    result = helm_template(helm, "--values", str(values))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
