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
  agent_64k_mtls   agent_64k with mutual TLS between producer and consumer (the default between a job's
                   agents; certificates as `sabot run` issues them); goal: >= 0.80 of agent_64k. The
                   line also names the TLS version and cipher suite the agents' gRPC negotiated, read from
                   the server's ServerHello by a relay on the consumer's connection.

    python bench/shuffle_throughput.py [--megabytes 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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
from sabot_agent.local import local_certificates, write_certificates  # noqa: E402
from sabot_agent.security import AgentTLS  # noqa: E402
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


def agent_pull(peer: str, executor, tls: AgentTLS | None = None) -> float:
    """A consumer (agent 1 of 2) pulling every partition of the producer's output, verified as an agent
    verifies: the checksum of each partition morsel-parallel on the agent's executor."""
    import sabot_native

    client = ShuffleClient([peer, "127.0.0.1:9"], tls=tls)
    store = PartitionStore(None, "/nonexistent", sabot_native.batch_checksum)
    reader = ExchangeReader(JOB, 0, 1, store, client, lambda table: sabot_native.batch_checksum(table, executor), lambda stage: [0],
                            lambda stage: list(range(PARTITIONS)), 60.0)  # fmt: skip
    reader.schema(0)  # connection and seal outside the timed region
    started = time.perf_counter()
    for partition in range(PARTITIONS):
        reader.read(0, partition)
    seconds = time.perf_counter() - started
    client.close()
    return seconds


# TLS cipher suites by their IANA code (RFC 8446 for TLS 1.3; the ECDHE-ECDSA AEAD suites of TLS 1.2)
CIPHER_SUITES = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256",
                 0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305"}  # fmt: skip
TLS_VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def server_hello(data: bytes) -> str:
    """"<version> <cipher suite>" from the first TLS record a server sends (its ServerHello, not encrypted)."""
    assert data[0] == 0x16 and data[5] == 0x02, "not a TLS ServerHello"
    body = data[9:]
    at = 2 + 32  # legacy_version, random
    at += 1 + body[at]  # legacy_session_id
    suite = int.from_bytes(body[at:at + 2], "big")
    at += 3  # cipher_suite, legacy_compression_method
    version, end = int.from_bytes(body[0:2], "big"), at + 2 + int.from_bytes(body[at:at + 2], "big")
    at += 2
    while at < end:  # extensions: supported_versions (43) carries TLS 1.3
        kind, length = int.from_bytes(body[at:at + 2], "big"), int.from_bytes(body[at + 2:at + 4], "big")
        if kind == 43:
            version = int.from_bytes(body[at + 4:at + 6], "big")
        at += 4 + length
    return f"{TLS_VERSIONS.get(version, hex(version))} {CIPHER_SUITES.get(suite, hex(suite))}"


def negotiated_cipher(peer: str, tls: AgentTLS) -> str:
    """What the agents' own gRPC client and server negotiate: the consumer's health call goes through a
    relay on loopback that forwards bytes both ways and reads the server's first record."""
    host, port = peer.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def pump(source: socket.socket, sink: socket.socket, record: bool) -> None:
        while chunk := source.recv(1 << 16):
            if record and sum(map(len, seen)) < 5 + 4096:
                seen.append(chunk)
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)

    def relay() -> None:
        client, _ = listener.accept()
        server = socket.create_connection((host, int(port)))
        threading.Thread(target=pump, args=(client, server, False), daemon=True).start()
        pump(server, client, True)

    threading.Thread(target=relay, daemon=True).start()
    consumer = ShuffleClient([f"127.0.0.1:{listener.getsockname()[1]}", "127.0.0.1:9"], tls=tls)
    consumer.action(0, "health")
    consumer.close()
    listener.close()
    return server_hello(b"".join(seen))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    # this process consumes as an agent does: with the agent's allocator settings (see retain_freed_memory)
    retain_freed_memory()
    import sabot_native

    executor = sabot_native.MorselExecutor(threads=sabot_native.default_thread_count())  # as an agent's
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
        # agent 0 (the producer) and agent 1 (the consumer) of a job, with certificates as `sabot run` issues them
        files = write_certificates(str(Path(spill) / "tls"), local_certificates(JOB, 0, 2))
        producer_files, consumer_files = files[0], files[1]
        consumer_tls = AgentTLS.load(*consumer_files[1::2])
        with Producer(Path(spill) / "a", rows=rows, batch_rows=64 * 1024, partitions=PARTITIONS, wait_sealed=True) as producer:
            large = median_seconds(lambda: agent_pull(producer.peer, executor))
        with Producer(Path(spill) / "b", rows=rows, batch_rows=2 * 1024, partitions=PARTITIONS, wait_sealed=True) as producer:
            small = median_seconds(lambda: agent_pull(producer.peer, executor))
        with Producer(Path(spill) / "c", rows=rows, batch_rows=64 * 1024, partitions=PARTITIONS, wait_sealed=True,
                      tls=producer_files[1::2]) as producer:  # fmt: skip
            secure = median_seconds(lambda: agent_pull(producer.peer, executor, consumer_tls))
            cipher = negotiated_cipher(producer.peer, consumer_tls)
    rates = {name: nbytes / seconds / 1e9 for name, seconds in
             (("doput", doput), ("doget", doget), ("large", large), ("small", small), ("secure", secure))}  # fmt: skip
    lines = [
        {"case": "raw_doput_64k", "value": rates["doput"], "reference": None, "ratio": None, "goal": None},
        {"case": "raw_doget_64k", "value": rates["doget"], "reference": None, "ratio": None, "goal": None},
        {"case": "agent_64k", "value": rates["large"], "reference": rates["doput"], "ratio": rates["large"] / rates["doput"], "goal": 0.70,
         "ratio_to_doget": rates["large"] / rates["doget"]},
        {"case": "agent_2k", "value": rates["small"], "reference": rates["large"], "ratio": rates["small"] / rates["large"], "goal": 0.80},
        {"case": "agent_64k_mtls", "value": rates["secure"], "reference": rates["large"], "ratio": rates["secure"] / rates["large"],
         "goal": 0.80, "cipher": cipher},
    ]  # fmt: skip
    for line in lines:
        line = {"bench": "shuffle_throughput", **line, "unit": "GB/s"}
        print(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in line.items()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
