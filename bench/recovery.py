"""Recovery benchmark: time from one agent's SIGKILL to job success, agent-level recovery vs rerunning
the whole attempt, measured in one run (local mode, 3 agents, a hash join feeding an aggregation).

The plan: stage 0 scans the dimension (1 M rows, hash exchange), stage 1 scans the 10 M facts and
joins them (most of the work), stage 2 aggregates. Agent 1 is killed at one of two points:

  after_join   once it sealed its join output (failpoint `1:sealed:1:kill`): its peers have done theirs;
               a replacement redoes its share of stages 0-1, a rerun everything. The goal's case.
  join_start   as its join stage starts (`1:task:1:kill`): almost no work is lost, so this measures
               what recovery costs over a rerun when there is nothing to save (no goal).

  recovery   the agent is killed and replaced; the others keep their work. Figure: seconds from the
             kill (the failpoint's marker file) to the end of `sabot run`.
  reference  what a whole-attempt rerun costs for the same kill: seconds from the kill until the run
             fails (recovery.maxAgentReplacements: 0), plus a complete undisturbed run (the new attempt).

One JSON line per point (bench, case, value, unit, reference, ratio, goal); goal (after_join):
recovery <= 0.5x of the rerun.

    python bench/recovery.py [--rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchlib import report  # noqa: E402
from engine_support import job_document  # noqa: E402

from sabot_agent.failpoints import FAILPOINT_ENV  # noqa: E402

QUERY = "SELECT d.grp, count(*) AS n, sum(f.amount) AS total FROM facts f JOIN dims d ON f.key = d.key GROUP BY d.grp"


KILL_POINTS = [  # (case, failpoint, goal)
    ("after_join", "1:sealed:1:kill", "<= 0.5x of a whole-attempt rerun"),
    ("join_start", "1:task:1:kill", "none (nothing to save: the cost of recovering)"),
]


def job_file(directory: Path, rows: int, replacements: int) -> Path:
    dims = max(rows // 10, 1)
    inputs = {
        "facts": {"generate": {"rows": rows, "seed": 1, "columns": {"key": {"type": "int64", "distinct": dims}, "amount": {"type": "float64"}}}},
        "dims": {"generate": {"rows": dims, "seed": 2, "columns": {"key": {"type": "int64", "distinct": dims},
                                                                  "grp": {"type": "int64", "distinct": 100}}}},
    }  # fmt: skip
    doc = job_document("recovery-bench", inputs, directory / "out", agents=3, sql=QUERY)
    doc["spec"]["recovery"] = {"maxAgentReplacements": replacements}
    doc["spec"]["pipeline"]["output"]["mode"] = "overwrite"
    path = directory / f"job-{replacements}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(job: Path, failpoint: str | None, marker: Path) -> tuple[int, float, float | None]:
    """(exit code, the run's end, the kill's time or None) in time.time() seconds."""
    marker.unlink(missing_ok=True)
    env = dict(os.environ)
    if failpoint:
        env[FAILPOINT_ENV] = f"{failpoint}:{marker}"
    completed = subprocess.run([sys.executable, "-m", "sabot_agent.cli", "run", str(job), "--json"], capture_output=True, text=True, env=env)
    ended = time.time()
    killed = marker.stat().st_mtime if marker.exists() else None
    return completed.returncode, ended, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sabot-recovery-bench-") as tmp:
        directory = Path(tmp)
        recovering, failing = job_file(directory, args.rows, 3), job_file(directory, args.rows, 0)
        marker = directory / "killed"
        for point, failpoint, goal in KILL_POINTS:
            recoveries, reruns = [], []
            for _ in range(args.repeats):
                code, ended, killed = run(recovering, failpoint, marker)
                assert code == 0 and killed is not None, "the recovering run did not succeed after the kill"
                recoveries.append(ended - killed)
                code, failed_at, killed = run(failing, failpoint, marker)
                assert code == 1 and killed is not None, "the run without replacements did not fail"
                started = time.time()
                code, ended, _ = run(recovering, None, marker)
                assert code == 0, "the undisturbed run failed"
                reruns.append((failed_at - killed) + (ended - started))
            recovery, rerun = statistics.median(recoveries), statistics.median(reruns)
            report("recovery", f"kill_1_of_3_agents_{point}_{args.rows}_rows", recovery, "s", rerun, goal, higher_is_better=False)


if __name__ == "__main__":
    main()
