"""The repository stands on its own and its tests can fail: nothing refers to files outside it, no test
skips for what the project itself provides, and the tiers can be collected together in any order."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import REPO

OUTSIDE = ("shared/design", "ARCHITECTURE.md", "../shared", "seed-lessons", "baselines.md")
THIS = "tests/test_repository.py"

# A skip may name a missing machine prerequisite (Go, root, Docker, a Debian package), never the
# project's own packages or files, which a checkout has (`make build` builds the native part).
OWN_ARTIFACT_SKIPS = [
    r"importorskip\(\s*[\"'](sabot_agent|sabot_operator|sabot_native)",
    r"skipif\(\s*not\s+(SOURCE_CRD|CHART_CRD|EXAMPLES|SCENARIOS)",
    r"pytest\.skip\(\s*f?[\"']sabot_native",
    r"not written yet|no examples|not built yet|\(issue \d+\)",
]


def repository_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted({path for path in listed.stdout.splitlines() if (REPO / path).is_file()})


def text_of(path: str) -> str | None:
    data = (REPO / path).read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def test_nothing_refers_to_files_outside_the_repository():
    found = []
    for path in repository_files():
        text = text_of(path)
        if text is None or path == THIS:
            continue
        found += [f"{path}:{number}: {line.strip()}" for number, line in enumerate(text.splitlines(), 1) if any(word in line for word in OUTSIDE)]
    assert found == []


def test_no_test_skips_for_what_the_project_provides():
    found = []
    for path in repository_files():
        if not (path.startswith("tests/") and path.endswith(".py")) or path == THIS:
            continue
        text = text_of(path) or ""
        found += [f"{path}: {match.group(0)}" for pattern in OWN_ARTIFACT_SKIPS for match in re.finditer(pattern, text)]
    assert found == []


TIERS = ["tests/agent", "tests/chart", "tests/cluster", "tests/e2e", "tests/engine", "tests/image", "tests/native", "tests/operator", "tests/realpods", "tests/s3"]


@pytest.mark.parametrize("order", [TIERS, TIERS[::-1]], ids=["forward", "reversed"])
def test_the_tiers_collect_together(order):
    """Test modules share helpers through tests/helpers.py, not `from conftest import`: with several
    conftest.py, which one that name meant depended on the order of the folders on the command line."""
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *order],
                               cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
