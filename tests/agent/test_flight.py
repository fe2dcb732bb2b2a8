"""Real Flight on loopback between real processes: a producer agent keeps its sealed stage outputs,
consumers pull them (stage_status, DoGet) and verify them against the seal; /metrics and /status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange_support import JOB, Producer, sample_table
from helpers import require_native, stop_process
from sabot_agent.client import ShuffleClient, ShuffleError
from sabot_agent.engine.exchange import ExchangeError, ExchangeReader, StageOutput, stage_shuffle_id
from sabot_agent.jobspec import validate_job
from sabot_agent.runner import Agent, AgentConfig
from sabot_agent.store import PartitionStore, combine_checksums

PARTITIONS = 4


def checksum_of(table: pa.Table) -> int:
    native = require_native()
    return combine_checksums(native.batch_checksum(batch) for batch in table.to_batches() if batch.num_rows)


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([("key", "ascending"), ("name", "ascending"), ("value", "ascending")])


@pytest.fixture
def producer(tmp_path):
    require_native()
    started: list[Producer] = []

    def start(rows: int = 20_000, delay: float = 0.0, memory_budget: int = 0):
        started.append(Producer(tmp_path / f"spill-{len(started)}", rows=rows, partitions=PARTITIONS, delay=delay, memory_budget=memory_budget))
        return started[-1].process, started[-1].peer, started[-1].http_port

    yield start
    for process in started:
        process.stop()


def reader_of(peer: str, timeout: float = 30.0) -> ExchangeReader:
    """A consumer at index 1 of 2 whose only producer of stage 0 is agent 0 at `peer`."""
    native = require_native()
    client = ShuffleClient([peer, "127.0.0.1:9"], max_attempts=2, backoff_seconds=0.01, call_timeout=10)
    store = PartitionStore(None, "/nonexistent", native.batch_checksum)
    return ExchangeReader(JOB, 0, 1, store, client, native.batch_checksum, lambda stage: [0], lambda stage: list(range(PARTITIONS)), timeout)


def test_failed_fetches_and_rows_an_agent_keeps_for_itself_are_counted(tmp_path):
    """One agent runs a two-stage job in this process: the shuffled rows it reads back from its own
    store count as rpc="local" (none as do_get); then its client fails to fetch, and
    sabot_fetch_failures counts every failed attempt (2 refused connections, 1 unknown shuffle)."""
    require_native()
    rows = 2000
    job = validate_job({
        "apiVersion": "sabot.io/v1alpha1", "kind": "SabotJob", "metadata": {"name": "counted"},
        "spec": {"agents": 1, "pipeline": {
            "inputs": {"d": {"generate": {"rows": rows, "columns": {"k": {"type": "int64", "distinct": 50}, "v": {"type": "float64"}}}}},
            "shuffle": {"partitions": 4},
            "aggregate": {"input": "d", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum"}]},
            "output": {"format": "parquet", "path": str(tmp_path / "out")},
        }},
    })  # fmt: skip
    cpu_count = pa.cpu_count()
    agent = Agent(AgentConfig(threads=1, spill_dir=str(tmp_path / "spill"), run_id="counted"), job)
    agent.config.peers = [f"127.0.0.1:{agent.flight_port}"]
    agent.start()
    try:
        result = agent.run()
        assert result["status"] == "Succeeded" and result["rows_shuffled"] > 0
        registry = agent.metrics.registry

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"job": "counted", "agent": "0", **labels})

        assert sample("sabot_shuffle_rows_total", direction="in", rpc="local") == result["rows_shuffled"]  # all read back from its store
        assert sample("sabot_shuffle_rows_total", direction="in", rpc="do_get") is None
        assert sample("sabot_fetch_failures_total") == 0
        # per-stage series (the stage label is bounded: a handful per job) agree with the JSON result
        for stage in result["stages"]:
            labels = {"stage": str(stage["stage"])}
            assert sample("sabot_stage_rows_total", direction="in", **labels) == stage["rows_in"]
            assert sample("sabot_stage_rows_total", direction="out", **labels) == stage["rows_out"]
            assert sample("sabot_stage_tasks_total", **labels) == stage["tasks_done"] == stage["tasks"] > 0
            assert sample("sabot_stage_seconds_total", **labels) > 0
        refused = ShuffleClient(["127.0.0.1:9"], metrics=agent.metrics, max_attempts=2, backoff_seconds=0.01, call_timeout=2)
        with pytest.raises(ShuffleError, match="failed after 2 attempts"):
            refused.fetch(0, stage_shuffle_id("counted", 0, 0), 0)
        assert sample("sabot_fetch_failures_total") == 2
        with pytest.raises(ShuffleError, match="unknown shuffle"):
            ShuffleClient(agent.config.peers, metrics=agent.metrics).fetch(0, "no-such/attempt-0/stage", 0)
        assert sample("sabot_fetch_failures_total") == 3
    finally:
        agent.stop()
        pa.set_cpu_count(cpu_count)


def test_sealed_partitions_round_trip_across_processes(producer):
    _, peer, _ = producer()
    reader = reader_of(peer)
    parts = [reader.read(0, partition) for partition in range(PARTITIONS)]
    table = sample_table(20_000)
    assert sum(part.num_rows for part in parts) == 20_000 and all(part.num_rows for part in parts)
    assert checksum_of(pa.concat_tables(parts)) == checksum_of(table)
    assert sorted_rows(pa.concat_tables(parts)).equals(sorted_rows(table))
    # a key lands in exactly one partition
    keys = [set(part.column("key").drop_null().to_pylist()) for part in parts]
    assert all(not (keys[a] & keys[b]) for a in range(PARTITIONS) for b in range(a + 1, PARTITIONS))


def test_a_consumer_waits_for_the_seal_with_a_long_poll(producer):
    _, peer, _ = producer(rows=5000, delay=1.5)
    client = ShuffleClient([peer])
    shuffle = stage_shuffle_id(JOB, 0, 0)
    started = time.monotonic()
    assert client.stage_status(0, shuffle, [0], 0.2) == {"sealed": False}
    assert time.monotonic() - started >= 0.2
    answer = client.stage_status(0, shuffle, [0, 1, 2, 3], 5.0)
    assert answer["sealed"] and sum(claim["rows"] for claim in answer["partitions"].values()) == 5000
    assert reader_of(peer).read(0, 2).num_rows == answer["partitions"]["2"]["rows"]


def test_small_partitions_come_with_the_seal_and_are_checked_like_fetched_ones(producer, monkeypatch):
    _, peer, _ = producer(rows=3000)
    client = ShuffleClient([peer])
    shuffle = stage_shuffle_id(JOB, 0, 0)
    answer = client.stage_status(0, shuffle, list(range(PARTITIONS)), 5.0, inline_bytes=1 << 20)
    assert answer["inlined"] == [p for p in range(PARTITIONS) if answer["partitions"][str(p)]["rows"]] and len(answer["inlined"]) > 1
    fetched = {p: client.fetch(0, shuffle, p) for p in answer["inlined"]}
    assert all(answer["tables"][p].equals(fetched[p]) for p in answer["inlined"])
    # within the limit, partitions are sent in the order asked until the next would not fit
    first = answer["partitions"][str(answer["inlined"][0])]["bytes"]
    assert client.stage_status(0, shuffle, answer["inlined"], 5.0, inline_bytes=first)["inlined"] == answer["inlined"][:1]
    assert client.stage_status(0, shuffle, answer["inlined"], 5.0)["inlined"] == []

    # a consumer reads them without a DoGet, and checks them against the seal
    monkeypatch.setattr(ShuffleClient, "fetch", lambda *args: pytest.fail("a partition sent with its seal was fetched again"))
    reader = reader_of(peer)
    parts = [reader.read(0, partition) for partition in range(PARTITIONS)]
    assert checksum_of(pa.concat_tables(parts)) == checksum_of(sample_table(3000))
    reader = reader_of(peer)
    reader.read(0, 0)  # takes the seal (with every partition) and partition 0
    seal = reader._seals[(0, 0)]
    partition = next(iter(seal.inlined))
    seal.inlined[partition] = seal.inlined[partition].slice(1)  # what a lost row would look like
    with pytest.raises(ExchangeError, match="rows arrived"):
        reader.read(0, partition)


def test_spilled_outputs_are_served_identical(producer, tmp_path):
    process, peer, _ = producer(rows=200_000, memory_budget=1 << 20)
    parts = [reader_of(peer).read(0, partition) for partition in range(PARTITIONS)]
    stats = ShuffleClient([peer]).action(0, "stats")
    assert stats["spilled_bytes"] > 2 * (1 << 20) and stats["spill_files"] >= 1 and stats["memory_bytes"] <= 1 << 20
    received = pa.concat_tables(parts)
    assert checksum_of(received) == checksum_of(sample_table(200_000))
    assert any((tmp_path / "spill-0").rglob("*.arrow"))


def test_a_partition_that_does_not_match_its_seal_raises(tmp_path):
    native = require_native()
    store = PartitionStore(None, str(tmp_path / "spill"), native.batch_checksum)
    output = StageOutput(store, stage_shuffle_id(JOB, 0, 0), 0, 0, 1, "gather", [], None, 0)
    output.write(sample_table(100))
    output.seal(sample_table(0).schema)
    reader = ExchangeReader(JOB, 0, 0, store, None, native.batch_checksum, lambda stage: [0], lambda stage: [0], 5.0)
    assert reader.read(0, 0).num_rows == 100
    reader._seals[(0, 0)].claims[0]["checksum"] ^= 1  # what a lost or altered message would look like
    with pytest.raises(ExchangeError, match="checksum mismatch"):
        reader.read(0, 0)


def test_malformed_and_unknown_requests_get_clear_errors_and_the_server_keeps_serving(producer):
    process, peer, _ = producer(rows=100)
    connection = flight.connect(f"grpc+tcp://{peer}")
    with pytest.raises(pa.ArrowException, match="malformed ticket 'garbage'"):
        connection.do_get(flight.Ticket(b"garbage")).read_all()
    with pytest.raises(pa.ArrowException, match="unknown shuffle hash 42"):
        connection.do_get(flight.Ticket(b"42:0")).read_all()
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(pa.ArrowException):  # nothing writes into an agent from outside
        writer, _ = connection.do_put(flight.FlightDescriptor.for_command(b"1:0"), schema)
        writer.write_batch(pa.record_batch([pa.array([1])], schema=schema))
        writer.close()
    with pytest.raises(pa.ArrowException, match="unknown action 'commit'"):
        list(connection.do_action(flight.Action("commit", b"{}")))
    assert reader_of(peer).read(0, 0).num_rows >= 0 and process.poll() is None
    assert sum(reader_of(peer).read(0, p).num_rows for p in range(PARTITIONS)) == 100


def test_an_unreachable_peer_raises_after_bounded_retries():
    client = ShuffleClient(["127.0.0.1:9"], max_attempts=2, backoff_seconds=0.01, call_timeout=2)
    with pytest.raises(ShuffleError, match="failed after 2 attempts"):
        client.fetch(0, stage_shuffle_id(JOB, 0, 0), 0)
    with pytest.raises(ShuffleError, match="peers not reachable"):
        client.wait_ready(0.3)


def test_waiting_for_peers_skips_this_agent_and_stops_when_told():
    """An agent never calls its own server (peer 0 here is unreachable and not probed); planning
    failing meanwhile stops the dialling at once instead of after --startup-timeout."""
    assert ShuffleClient(["127.0.0.1:9"]).wait_ready(30.0, skip=0) is True
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert ShuffleClient(["127.0.0.1:9", "127.0.0.1:9"]).wait_ready(30.0, skip=0, stop=stop) is False
    assert time.monotonic() - started < 5.0


def test_a_consumer_names_a_producer_that_stopped_answering(producer):
    process, peer, _ = producer(rows=100, delay=60)
    reader = reader_of(peer, timeout=60)
    stop_process(process, grace=0)
    started = time.monotonic()
    with pytest.raises(ExchangeError, match="agent 0 stopped answering while this agent waited for its stage 0"):
        reader.read(0, 0)
    assert time.monotonic() - started < 10


def test_http_endpoints_and_metrics(producer):
    import urllib.request

    _, peer, http_port = producer(rows=5000)
    reader_of(peer).read(0, 1)
    with pytest.raises(ShuffleError):
        ShuffleClient([peer]).fetch(0, "no-such/attempt-0/stage", 2)

    def get(path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    assert get("/healthz") == (200, b"ok\n")
    assert get("/readyz")[0] == 200
    status, body = get("/status")
    assert status == 200 and json.loads(body)["phase"] == "starting"
    assert get("/nope")[0] == 404
    status, exposition = get("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= {"job", "agent", "direction", "rpc", "method", "status", "stage"}
            samples[(sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("job", "agent"))))] = sample.value
    served = [samples.get(("sabot_shuffle_rows_total", (("direction", "out"), ("rpc", rpc))), 0) for rpc in ("do_get", "stage_status")]
    assert sum(served) > 0  # small partitions are served with their seal
    assert samples[("sabot_flight_requests_total", (("method", "DoGet"), ("status", "not_found")))] == 1
    assert samples[("sabot_flight_requests_total", (("method", "DoAction:stage_status"), ("status", "ok")))] >= 1
    assert samples[("sabot_fetch_failures_total", ())] == 0
    assert samples[("sabot_store_batches", ())] >= 1 and samples[("sabot_slots", ())] == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus): exposition checked with prometheus_client's parser only")
    check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
