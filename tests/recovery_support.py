"""The recovery job of the tests and the benchmark: a hash join feeding an aggregation (three stages and
two hash exchanges) over Parquet files, the failpoints that lose an agent at each point of it, and the
duckdb reference. `sabot run` (tests/agent/test_recovery.py) and real pods (tests/realpods/test_chaos.py)
run the same matrix."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine_support import duckdb_rows

QUERY = """
SELECT d.grp, count(*) AS n, sum(f.amount) AS total, count(DISTINCT f.cust) AS customers
FROM facts f JOIN dims d ON f.key = d.key
WHERE f.amount > 10
GROUP BY d.grp
ORDER BY d.grp
"""

# (failpoint without its marker, what the agent was doing when it was lost)
CASES = [
    ("1:task:0:kill", "reading and mapping its input share"),
    ("2:sealed:0:kill", "after sealing its first stage output"),
    ("1:serving:kill", "while serving a partition to a peer"),
    ("2:task:1:kill", "while reading the join's other side (stage 1)"),
    ("0:task:2:kill", "agent 0 while reducing the aggregation"),
    ("1:written:kill", "after staging its result part"),
    ("2:done:kill", "while waiting for the job to end"),
    ("0:done:kill", "agent 0 after publishing the result"),
    ("1:task:1:stop", "hung (SIGSTOP) in the middle of a stage"),
    ("2:sealed:1:term", "SIGTERM (a drain) after sealing its join output"),
]
TWO_AT_ONCE = ["1:task:1:kill", "2:task:1:kill"]


def write_recovery_data(root: Path, files: int = 6, rows_per_file: int = 100_000) -> Path:
    """Facts in `files` files and a dimension too big to replicate (a real hash exchange on both sides).
    Amounts are decimals, so the sums are exact whatever order a recovered run adds them in, and the
    result's checksum is that of an undisturbed run."""
    rng = np.random.default_rng(7)
    (root / "facts").mkdir(parents=True)
    for index in range(files):
        pq.write_table(pa.table({
            "key": rng.integers(0, 400_000, rows_per_file), "cust": rng.integers(0, 5_000, rows_per_file),
            "amount": pa.array([Decimal(int(cents)).scaleb(-2) for cents in rng.integers(0, 10_000, rows_per_file)], pa.decimal128(12, 2)),
        }), root / "facts" / f"part-{index}.parquet", row_group_size=25_000)  # fmt: skip
    keys = np.arange(400_000)
    (root / "dims").mkdir()
    pq.write_table(pa.table({"key": keys, "grp": keys % 37, "pad": keys * 3}), root / "dims" / "part-0.parquet", row_group_size=100_000)
    return root


def recovery_inputs(root: Path) -> dict:
    return {name: {"format": "parquet", "path": str(root / name)} for name in ("facts", "dims")}


def reference_rows(root: Path) -> list[tuple]:
    return duckdb_rows(QUERY, {name: root / name for name in ("facts", "dims")})
