"""Per-stage progress in `sabot run --json` (the same records /status and the live view show): every
stage of the plan on every agent, with rows scanned, rows and Arrow bytes in and out, and what one
stage's exchange output delivers is what the next stage reads."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from engine_support import job_document, sabot_run

ROWS = 40_000
FILES = 4


def write_inputs(directory) -> None:
    directory.mkdir()
    for part in range(FILES):
        start = part * (ROWS // FILES)
        keys = [f"key-{(start + i) % 997}-ü" for i in range(ROWS // FILES)]
        pq.write_table(pa.table({"k": keys, "v": pa.array(range(start, start + ROWS // FILES), pa.int64())}), directory / f"p{part}.parquet",
                       row_group_size=2_000)  # fmt: skip


def test_every_stage_reports_rows_and_bytes_and_the_exchange_delivers_what_was_written(tmp_path):
    write_inputs(tmp_path / "t")
    job = job_document("progress", {"t": {"format": "parquet", "path": str(tmp_path / "t")}}, tmp_path / "out", agents=2,
                       sql="SELECT k, sum(v) AS total, count(*) AS n FROM t GROUP BY k")  # fmt: skip
    completed, summary = sabot_run(job, tmp_path)
    assert completed.returncode == 0, completed.stderr
    agents = summary["agents"]
    assert len(agents) == 2
    stages = [[stage for stage in agent["stages"]] for agent in agents]
    assert [s["stage"] for s in stages[0]] == [s["stage"] for s in stages[1]] == [0, 1]
    scan = [agent_stages[0] for agent_stages in stages]
    final = [agent_stages[1] for agent_stages in stages]
    # stage 0 scans the input, shared out between the agents, and exchanges partial states by key
    assert sum(s["rows_scanned"] for s in scan) == ROWS and all(s["rows_scanned"] > 0 for s in scan)
    assert all(s["exchanged"] and s["state"] == "done" for s in scan)
    assert all(s["rows_out"] > 0 and s["bytes_out"] > 0 for s in scan)
    # stage 1 reads exactly what stage 0 wrote (rows exactly; Arrow bytes up to per-partition overhead)
    assert sum(s["rows_in"] for s in final) == sum(s["rows_out"] for s in scan)
    written, read = sum(s["bytes_out"] for s in scan), sum(s["bytes_in"] for s in final)
    assert abs(read - written) <= 0.1 * written, (read, written)
    assert sum(s["rows_out"] for s in final) == 997 == summary["rows_out"]
    assert all(not s["exchanged"] and s["rows_scanned"] == 0 for s in final)
    assert all(s["seconds"] > 0 for s in scan + final)
