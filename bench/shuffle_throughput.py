"""Agent-to-agent shuffle throughput vs raw pyarrow Flight on loopback, measured in the same run.

The shuffle pulls: a producer agent keeps its stage output hash-partitioned in its store, and a
consumer fetches every partition with DoGet and verifies rows and checksum against the producer's
seal (exchange.ExchangeReader). The references are plain pyarrow Flight transfers of the same bytes
between two processes.

Cases (one JSON line each: bench, case, value, unit, reference, ratio, goal):
  raw_doput_64k    pyarrow Flight DoPut of 64K-row batches to a server process that drains them
  raw_doget_64k    pyarrow Flight DoGet of the same batches from a server process that holds them
  agent_64k        a consumer pulls and verifies a producer agent's 8 partitions written from 64K-row
                   batches; goal: >= 0.70 of raw_doput_64k (reference), also reported against raw_doget
  agent_2k         the same data written as 2K-row batches (the producer merges them into >= 1 MiB
                   messages before storing); goal: >= 0.80 of agent_64k

    python bench/shuffle_throughput.py [--megabytes 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from exchange_support import JOB, Producer, sample_table  # noqa: E402
from helpers import child_env, stop_process  # noqa: E402
from sabot_agent.agent import retain_freed_memory  # noqa: E402
from sabot_agent.client import ShuffleClient  # noqa: E402
from sabot_agent.engine.exchange import ExchangeReader  # noqa: E402
from sabot_agent.store import PartitionStore  # noqa: E402

PARTITIONS = 8
ROW_BYTES = 40  # sample_table: an int64 key, a short string, a float64

RAW_SERVER = """
import sys, pyarrow as pa, pyarrow.flight as flight
sys.path.insert(0, sys.argv[3])
from exchange_support import sample_table
class Server(flight.FlightServerBase):
    table = sample_table(int(sys.argv[2]), batch_rows=64 * 1024)
    def do_put(self, context, descriptor, reader, writer):
        for _ in reader:
            pass
    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)
server = Server(f"grpc+tcp://127.0.0.1:{sys.argv[1]}")
print("ready", flush=True)
server.serve()
"""


def raw_server(rows: int) -> tuple[subprocess.Popen, int]:
    from sabot_agent.local import free_ports

    (port,) = free_ports(1)
    process = subprocess.Popen([sys.executable, "-c", RAW_SERVER, str(port), str(rows), str(REPO / "tests")], stdout=subprocess.PIPE,
                               text=True, env=child_env(), start_new_session=True)  # fmt: skip
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the raw Flight server did not start")
    return process, port


def raw_doput(port: int, table: pa.Table) -> float:
    client = flight.connect(f"grpc+tcp://127.0.0.1:{port}")
    started = time.perf_counter()
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(b"raw"), table.schema)
    writer.write_table(table)
    writer.close()
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def raw_doget(port: int) -> float:
    client = flight.connect(f"grpc+tcp://127.0.0.1:{port}")
    started = time.perf_counter()
    client.do_get(flight.Ticket(b"all")).read_all()
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def agent_pull(peer: str) -> float:
    """A consumer (agent 1 of 2) pulling every partition of the producer's output, verified."""
    import sabot_native

    client = ShuffleClient([peer, "127.0.0.1:9"])
    store = PartitionStore(None, "/nonexistent", sabot_native.batch_checksum)
    reader = ExchangeReader(JOB, 0, 1, store, client, sabot_native.batch_checksum, lambda stage: [0],
                            lambda stage: list(range(PARTITIONS)), 60.0)  # fmt: skip
    reader.schema(0)  # connection and seal outside the timed region
    started = time.perf_counter()
    for partition in range(PARTITIONS):
        reader.read(0, partition)
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    # this process consumes as an agent does: with the agent's allocator settings (see retain_freed_memory)
    retain_freed_memory()
    rows = (args.megabytes << 20) // ROW_BYTES
    table = sample_table(rows, batch_rows=64 * 1024)
    nbytes = table.nbytes

    def median_seconds(measure) -> float:
        measure()  # warm-up: connection set-up and first-touch page faults are not throughput
        return statistics.median(measure() for _ in range(args.repeats))

    server, port = raw_server(rows)
    try:
        doput = median_seconds(lambda: raw_doput(port, table))
        doget = median_seconds(lambda: raw_doget(port))
    finally:
        stop_process(server, grace=2)
    with tempfile.TemporaryDirectory() as spill:
        with Producer(Path(spill) / "a", rows=rows, batch_rows=64 * 1024, partitions=PARTITIONS, wait_sealed=True) as producer:
            large = median_seconds(lambda: agent_pull(producer.peer))
        with Producer(Path(spill) / "b", rows=rows, batch_rows=2 * 1024, partitions=PARTITIONS, wait_sealed=True) as producer:
            small = median_seconds(lambda: agent_pull(producer.peer))
    rates = {name: nbytes / seconds / 1e9 for name, seconds in (("doput", doput), ("doget", doget), ("large", large), ("small", small))}
    lines = [
        {"case": "raw_doput_64k", "value": rates["doput"], "reference": None, "ratio": None, "goal": None},
        {"case": "raw_doget_64k", "value": rates["doget"], "reference": None, "ratio": None, "goal": None},
        {"case": "agent_64k", "value": rates["large"], "reference": rates["doput"], "ratio": rates["large"] / rates["doput"], "goal": 0.70,
         "ratio_to_doget": rates["large"] / rates["doget"]},
        {"case": "agent_2k", "value": rates["small"], "reference": rates["large"], "ratio": rates["small"] / rates["large"], "goal": 0.80},
    ]  # fmt: skip
    for line in lines:
        line = {"bench": "shuffle_throughput", **line, "unit": "GB/s"}
        print(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in line.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
