"""A filtered group-by with sums of decimal expressions (TPC-H Q1's shape) over TPC-H SF1 `lineitem`
as tpchgen-cli writes it (string_view, decimal128, date32), 2 agents vs duckdb with 2 threads on the
same files.

    python bench/realdata_groupby.py [--scale 1] [--agents 2] [--repeats 5] [--data DIR]

Sabot's time is the slowest agent's job time (planning, connecting, every stage, writing the result),
without starting the agent processes; duckdb's is the query on the same Parquet files. The result is
checked against duckdb's. One JSON line: value (Sabot s), reference (duckdb s), ratio = value /
reference; goal <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from engine_support import assert_same_rows, tpch_query  # noqa: E402
from tpch import duckdb_seconds, sabot_seconds, tpch_data  # noqa: E402

GOAL = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    data = tpch_data(args.scale, args.data)
    sql = tpch_query(1)
    reference, expected = duckdb_seconds(sql, data, args.repeats)
    with tempfile.TemporaryDirectory() as workdir:
        value, wall, rows = sabot_seconds(1, sql, data, args.agents, args.repeats, Path(workdir))
    assert_same_rows(rows, expected, ordered=True)
    print(json.dumps({"bench": "realdata_groupby", "case": f"q1_shape_sf{args.scale:g}", "value": round(value, 4), "unit": "s",
                      "reference": round(reference, 4), "ratio": round(value / reference, 3), "goal": GOAL, "wall": round(wall, 3),
                      "agents": args.agents}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
