"""Agent-to-agent shuffle throughput vs raw pyarrow Flight DoPut on loopback, measured in the same run.

Cases (one JSON line each: bench, case, value, unit, reference, ratio, goal):
  raw_doput_64k    pyarrow Flight DoPut of 64K-row batches to a server process that drains them
  agent_64k        ShuffleClient -> sabot-agent partition store (kept, checksummed, committed), 64K-row input
                   goal: >= 0.70 of raw_doput_64k
  agent_2k         the same data as 2K-row input batches (the client coalesces to >= 1 MB messages)
                   goal: >= 0.80 of agent_64k

    python bench/shuffle_throughput.py [--megabytes 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "agent"))

from sabot_agent.client import ShuffleClient  # noqa: E402
from sabot_agent.local import free_ports  # noqa: E402
from sabot_agent.runner import MAX_CONCURRENT_PUTS  # noqa: E402
from sabot_agent.tickets import shuffle_id  # noqa: E402

RAW_SERVER = """
import sys, pyarrow.flight as flight
class Drain(flight.FlightServerBase):
    def do_put(self, context, descriptor, reader, writer):
        for _ in reader:
            pass
server = Drain(f"grpc+tcp://127.0.0.1:{sys.argv[1]}")
print("ready", flush=True)
server.serve()
"""


def batches(total_bytes: int, rows_per_batch: int) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(0)
    rows = total_bytes // 32  # 4 columns x 8 bytes
    table = pa.table(
        {
            "key": rng.integers(0, 1 << 40, rows),
            "a": rng.integers(0, 1000, rows),
            "b": rng.random(rows),
            "c": rng.random(rows),
        }
    )
    return table.combine_chunks().to_batches(max_chunksize=rows_per_batch)


def env_with_paths() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(REPO, "agent"), os.path.join(REPO, "native"), env.get("PYTHONPATH")]))
    return env


def start(command: list[str], ready_marker: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_paths(), start_new_session=True
    )
    for line in process.stdout:
        if ready_marker in line:
            return process
    raise RuntimeError(f"{command[:4]} did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def raw_doput(port: int, data: list[pa.RecordBatch]) -> float:
    client = flight.connect(f"grpc+tcp://127.0.0.1:{port}")
    started = time.perf_counter()
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(b"raw"), data[0].schema)
    for batch in data:
        writer.write_batch(batch)
    writer.close()
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def agent_shuffle(peer: str, data: list[pa.RecordBatch], run: int, checksum) -> float:
    stage = shuffle_id("bench", run, "throughput")
    partitions = 8
    per_partition = [data[p::partitions] for p in range(partitions)]
    with ShuffleClient([peer], checksum) as client:
        client.action(0, "health")  # connection established outside the timed region
        started = time.perf_counter()
        results = client.put_partitions(stage, dict(enumerate(per_partition)), producer=0, attempt=0, concurrency=MAX_CONCURRENT_PUTS)
        client.commit(0, stage, 0, 0, results)
        seconds = time.perf_counter() - started
        client.action(0, "drop_shuffle", {"shuffle_id": stage})
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import sabot_native

    total = args.megabytes << 20
    large, small = batches(total, 64 * 1024), batches(total, 2 * 1024)
    nbytes = sum(batch.nbytes for batch in large)
    raw_port, flight_port, http_port = free_ports(3)
    raw = start([sys.executable, "-c", RAW_SERVER, str(raw_port)], "ready")
    with tempfile.TemporaryDirectory() as spill:
        agent = start(
            [sys.executable, "-m", "sabot_agent", "--serve", "--flight-port", str(flight_port), "--http-port", str(http_port),
             "--memory-budget", f"{4 * args.megabytes}Mi", "--spill-dir", spill],
            "listening",
        )  # fmt: skip
        peer = f"127.0.0.1:{flight_port}"
        runs = iter(range(1 << 30))  # every agent run gets a fresh shuffle id

        def median_seconds(measure) -> float:
            measure()  # warm-up: connection set-up and first-touch page faults of fresh buffers are not throughput
            return statistics.median(measure() for _ in range(args.repeats))

        try:
            raw_seconds = median_seconds(lambda: raw_doput(raw_port, large))
            large_seconds = median_seconds(lambda: agent_shuffle(peer, large, next(runs), sabot_native.batch_checksum))
            small_seconds = median_seconds(lambda: agent_shuffle(peer, small, next(runs), sabot_native.batch_checksum))
        finally:
            stop(agent)
            stop(raw)
    raw_rate, large_rate, small_rate = (nbytes / seconds / 1e9 for seconds in (raw_seconds, large_seconds, small_seconds))
    lines = [
        {
            "bench": "shuffle_throughput",
            "case": "raw_doput_64k",
            "value": raw_rate,
            "unit": "GB/s",
            "reference": None,
            "ratio": None,
            "goal": None,
        },
        {
            "bench": "shuffle_throughput",
            "case": "agent_64k",
            "value": large_rate,
            "unit": "GB/s",
            "reference": raw_rate,
            "ratio": large_rate / raw_rate,
            "goal": 0.70,
        },
        {
            "bench": "shuffle_throughput",
            "case": "agent_2k",
            "value": small_rate,
            "unit": "GB/s",
            "reference": large_rate,
            "ratio": small_rate / large_rate,
            "goal": 0.80,
        },
    ]
    for line in lines:
        print(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in line.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
