"""Write the input of examples/groupby-parquet.yaml: 4 Parquet files of generated sales rows.

    python examples/make_sales_parquet.py [--rows N] [--files F] [--out examples/data/sales]

Uses the agent's seeded generator, so the data is the same on every machine.
"""

import argparse
import os
import sys

import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent"))

from sabot_agent.inputs import read_share  # noqa: E402
from sabot_agent.jobspec import GeneratedColumn, InputSpec, generated_schema  # noqa: E402
import pyarrow as pa  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sales"))
    args = parser.parse_args()
    spec = InputSpec(
        name="sales",
        rows=args.rows,
        seed=7,
        columns=(
            GeneratedColumn("region_id", "int64", 1000, 0.0),
            GeneratedColumn("amount", "float64", 10000, 0.02),
        ),
    )
    os.makedirs(args.out, exist_ok=True)
    for index in range(args.files):
        table = pa.Table.from_batches(list(read_share(spec, index, args.files)), schema=generated_schema(spec))
        path = os.path.join(args.out, f"sales-{index:03d}.parquet")
        pq.write_table(table, path + ".tmp", row_group_size=50_000)
        os.replace(path + ".tmp", path)
    print(f"wrote {args.rows} rows in {args.files} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
