"""Object storage I/O: agents reading and writing Parquet on the local S3 server (SeaweedFS,
hack/s3/s3server.py, on loopback) relative to the same files on local disk, measured in one run. A
report: no goal.

Data: --rows rows (an int64 key and two float64 columns of random values, which Parquet barely
compresses: ~25 bytes a row, so the default 12 M rows are ~300 MB) in FILES Parquet files, written once
to a local directory and uploaded byte for byte to a bucket. "Local disk" is mostly the page cache
here (the files were just written, and nothing drops them); SeaweedFS keeps its data on the same disk.

Cases (one JSON line each: bench, case, value, unit, reference, ratio, goal; value on S3, reference
on local disk, both MB/s, ratio = S3 / local):
  raw_read    pyarrow.fs reads every input file whole, one stream per file (S3FileSystem vs LocalFileSystem)
  raw_write   the same bytes written as new files/objects
  job_read    `sabot run`, 2 agents, a group-by into 1 000 rows (its output is negligible): input MB / job seconds
  job_scan    `sabot run`, 2 agents, a filter keeping 3/4 of the rows, written as Parquet:
              (input + output MB) / job seconds; `output_mb` goes along
Job seconds: the slowest agent's, without its connect phase (benchlib.job_phases); the run's `phases`
(slowest agent, seconds) go along, the S3 run's and the local one's. Medians of --repeats, S3 and
local timed in turns after one unmeasured run of each.

    python bench/s3_io.py [--rows 12000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
for folder in (REPO / "bench", REPO / "tests", REPO / "hack" / "s3"):
    sys.path.insert(0, str(folder))
import s3server  # noqa: E402
from benchlib import interleaved_median_seconds, job_phases, report  # noqa: E402
from engine_support import job_document, sabot_run  # noqa: E402

FILES = 8  # 4 per agent: agent i of N reads the files at positions i modulo N
ROW_GROUP_ROWS = 1 << 20
AGENTS = 2
MB = 1e6
JOBS = {
    "job_read": "SELECT key % 1000 AS g, count(*) AS n, sum(amount) AS total, max(price) AS top FROM sales GROUP BY key % 1000",
    "job_scan": "SELECT key, amount, price FROM sales WHERE amount < 0.75",
}


def write_input(directory: Path, rows: int) -> list[Path]:
    rng = np.random.default_rng(7)
    directory.mkdir()
    per_file = -(-rows // FILES)
    paths = []
    for index in range(FILES):
        count = min(per_file, rows - index * per_file)
        table = pa.table({"key": rng.integers(0, 1 << 20, count), "amount": rng.random(count), "price": rng.random(count)})
        paths.append(directory / f"part-{index:03d}.parquet")
        pq.write_table(table, paths[-1], row_group_size=ROW_GROUP_ROWS)
    return paths


def read_all(filesystem: pafs.FileSystem, paths: list[str]) -> int:
    total = 0
    for path in paths:
        with filesystem.open_input_stream(path) as stream:
            total += len(stream.read())
    return total


def write_all(filesystem: pafs.FileSystem, directory: str, blobs: list[bytes]) -> None:
    for index, blob in enumerate(blobs):
        with filesystem.open_output_stream(f"{directory}/blob-{index:03d}") as sink:
            sink.write(blob)


class Location:
    """Where a job's input and output live: a local directory, or a bucket of the S3 server."""

    def __init__(self, filesystem: pafs.FileSystem, base: str, uri: str, storage: dict | None = None):
        self.filesystem, self.base, self.uri, self.storage = filesystem, base, uri, storage

    def job(self, case: str, workdir: Path) -> dict:
        doc = job_document(f"s3-io-{case.replace('_', '-')}", {"sales": {"format": "parquet", "path": f"{self.uri}/in/"}}, workdir,
                           agents=AGENTS, sql=JOBS[case])  # fmt: skip
        doc["spec"]["pipeline"]["output"] = {"format": "parquet", "path": f"{self.uri}/{case}/", "mode": "overwrite"}
        if self.storage:
            doc["spec"]["storage"] = self.storage
        return doc

    def output_bytes(self, case: str) -> int:
        with self.filesystem.open_input_stream(f"{self.base}/{case}/_SUCCESS") as handle:
            return sum(part["bytes"] for part in json.loads(handle.read())["parts"])


def run_job(location: Location, case: str, workdir: Path) -> tuple[float, dict, int]:
    """(job seconds, the slowest agent's phases, output rows) of one `sabot run`."""
    completed, summary = sabot_run(location.job(case, workdir), workdir)
    if completed.returncode != 0 or summary is None:
        raise RuntimeError(f"{case} on {location.uri}: sabot run failed: {completed.stderr.strip().splitlines()[-3:]}")
    seconds, phases = job_phases(summary)
    return seconds, phases, summary["rows_out"]


def median_run(runs: list[tuple[float, dict, int]]) -> tuple[float, dict]:
    seconds, phases, _ = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return seconds, {name: round(value, 3) for name, value in phases.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        weed = s3server.ensure_weed()
    except s3server.MissingPrerequisite as exc:
        print(f"s3_io: no S3 server: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sabot-s3-io-") as tmp, s3server.S3Server(weed) as server:
        workdir = Path(tmp)
        (workdir / "local").mkdir()
        files = write_input(workdir / "local" / "in", args.rows)
        bucket = server.create_bucket("s3-io")
        s3 = server.filesystem()
        pafs.copy_files(str(files[0].parent), f"{bucket}/in", destination_filesystem=s3)
        # the agents take the keys from the environment, the endpoint from spec.storage.s3
        os.environ.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_EC2_METADATA_DISABLED="true")
        local = Location(pafs.LocalFileSystem(), str(workdir / "local"), str(workdir / "local"))
        remote = Location(s3, bucket, f"s3://{bucket}", {"s3": {"endpoint": server.url, "region": server.region}})
        input_mb = sum(path.stat().st_size for path in files) / MB

        names = [path.name for path in files]
        read_s3, read_local = interleaved_median_seconds(
            [lambda: read_all(s3, [f"{bucket}/in/{name}" for name in names]), lambda: read_all(local.filesystem, [str(path) for path in files])],
            repeats=args.repeats)  # fmt: skip
        report("s3_io", f"raw_read_{args.rows}_rows", input_mb / read_s3, "MB/s", input_mb / read_local, None, input_mb=round(input_mb, 1))
        blobs = [path.read_bytes() for path in files]
        (workdir / "raw").mkdir()
        write_s3, write_local = interleaved_median_seconds(
            [lambda: write_all(s3, f"{bucket}/raw", blobs), lambda: write_all(local.filesystem, str(workdir / "raw"), blobs)],
            repeats=args.repeats)  # fmt: skip
        report("s3_io", f"raw_write_{args.rows}_rows", input_mb / write_s3, "MB/s", input_mb / write_local, None, input_mb=round(input_mb, 1))
        del blobs

        for case in JOBS:
            for location in (remote, local):
                run_job(location, case, workdir)  # unmeasured: first start of the processes, caches
            runs = {remote: [], local: []}
            for _ in range(args.repeats):
                for location in (remote, local):
                    runs[location].append(run_job(location, case, workdir))
            rows = {run[2] for location_runs in runs.values() for run in location_runs}
            if len(rows) != 1:
                raise RuntimeError(f"{case}: the runs disagree on the result's rows: {sorted(rows)}")
            (s3_seconds, s3_phases), (local_seconds, local_phases) = median_run(runs[remote]), median_run(runs[local])
            output_mb = {location: location.output_bytes(case) / MB for location in (remote, local)}
            moved = {location: input_mb + (output_mb[location] if case == "job_scan" else 0) for location in (remote, local)}
            report("s3_io", f"{case}_{args.rows}_rows", moved[remote] / s3_seconds, "MB/s", moved[local] / local_seconds, None,
                   seconds={"s3": round(s3_seconds, 3), "local": round(local_seconds, 3)},
                   output_mb=round(output_mb[remote], 1), phases={"s3": s3_phases, "local": local_phases})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
