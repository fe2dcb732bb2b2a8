"""Real Flight on loopback between real processes: the partition store, the shuffle client and /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import child_env, native_or_skip
from sabot_agent.client import PutResult, ShuffleClient, ShuffleError, coalesce
from sabot_agent.store import combine_checksums
from sabot_agent.tickets import PartitionKey, shuffle_id

SHUFFLE = shuffle_id("flight-test", 0, "stage")


def sample_table(rows: int, seed: int = 0) -> pa.Table:
    generator = np.random.default_rng(seed)
    keys = generator.integers(0, 1000, rows)
    return pa.table(
        {
            "key": pa.array(keys, mask=keys % 17 == 0),
            "name": pa.array([f"name-{k}" for k in keys]),
            "value": generator.random(rows),
        }
    )


def checksum_of(table: pa.Table) -> int:
    native = native_or_skip()
    return combine_checksums(native.batch_checksum(batch) for batch in table.to_batches() if batch.num_rows)


def sorted_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([("key", "ascending"), ("name", "ascending"), ("value", "ascending")])


def make_client(*peers: str) -> ShuffleClient:
    return ShuffleClient(list(peers), native_or_skip().batch_checksum)


def test_put_then_get_round_trip_across_processes(serve_agent):
    server = serve_agent("owner")
    table = sample_table(20_000)
    with make_client(server.peer) as client:
        sent = client.put_partition(SHUFFLE, 3, table.to_batches(max_chunksize=1000), producer=0, attempt=0)
        client.commit(0, SHUFFLE, 0, 0, {3: sent})
        received = client.fetch(0, SHUFFLE, 3)
    assert sent.rows == received.num_rows == 20_000
    assert checksum_of(received) == checksum_of(table) == sent.checksum
    assert sorted_rows(received).equals(sorted_rows(table))


PRODUCER_SCRIPT = """
import json, sys
import numpy as np, pyarrow as pa, sabot_native
from sabot_agent.client import ShuffleClient
peer, shuffle, producer = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(producer)
table = pa.table({"producer": np.full(5000, producer), "value": rng.integers(0, 100, 5000)})
with ShuffleClient([peer], sabot_native.batch_checksum) as client:
    result = client.put_partition(shuffle, 0, table.to_batches(max_chunksize=700), producer=producer, attempt=0)
    client.commit(0, shuffle, producer, 0, {0: result})
print(json.dumps({"rows": result.rows, "checksum": result.checksum}))
"""


def test_many_producer_processes_append_to_one_partition(serve_agent):
    server = serve_agent("owner")
    producers = [
        subprocess.Popen([sys.executable, "-c", PRODUCER_SCRIPT, server.peer, SHUFFLE, str(index)], stdout=subprocess.PIPE, env=child_env())
        for index in range(4)
    ]
    reports = []
    for producer in producers:
        out, _ = producer.communicate(timeout=60)
        assert producer.returncode == 0
        reports.append(json.loads(out))
    with make_client(server.peer) as client:
        received = client.fetch(0, SHUFFLE, 0)
        stats = client.action(0, "stats")
    assert received.num_rows == 4 * 5000
    assert sorted(received.column("producer").unique().to_pylist()) == [0, 1, 2, 3]
    assert checksum_of(received) == combine_checksums(report["checksum"] for report in reports)
    assert stats["commits"][SHUFFLE] == [0, 1, 2, 3]


def test_retried_put_is_stored_once(serve_agent):
    server = serve_agent("owner")
    table = sample_table(3000)
    with make_client(server.peer) as first, make_client(server.peer) as retry:
        sent = first.put_partition(SHUFFLE, 1, [table.to_batches()[0]], producer=5, attempt=0)
        # a fresh client starts at the same sequence number: exactly what a retried DoPut resends
        again = retry.put_partition(SHUFFLE, 1, [table.to_batches()[0]], producer=5, attempt=0)
        assert again.checksum == sent.checksum
        first.commit(0, SHUFFLE, 5, 0, {1: sent})
        received = first.fetch(0, SHUFFLE, 1)
        stats = first.action(0, "stats")
    assert received.num_rows == 3000
    assert stats["duplicate_messages"] == 1 and stats["rows"] == 3000


def test_commit_with_wrong_counts_is_rejected(serve_agent):
    server = serve_agent("owner")
    with make_client(server.peer) as client:
        sent = client.put_partition(SHUFFLE, 0, sample_table(100).to_batches(), producer=0, attempt=0)
        sent.rows += 1
        with pytest.raises(ShuffleError, match="producer sent 101 rows .* 100 rows .* arrived"):
            client.commit(0, SHUFFLE, 0, 0, {0: sent})
        # nothing was committed, so nothing is readable
        assert client.fetch(0, SHUFFLE, 0).num_rows == 0


def test_spill_and_read_back_identical(serve_agent):
    server = serve_agent("small", "--memory-budget", "1Mi")
    table = sample_table(200_000, seed=3)  # about 4.5 MB: several times the budget
    with make_client(server.peer) as client:
        results = {}
        for partition in range(3):
            part = table.slice(partition * 60_000, 60_000 if partition < 2 else 80_000)
            results[partition] = client.put_partition(SHUFFLE, partition, part.to_batches(max_chunksize=20_000), producer=0, attempt=0)
        client.commit(0, SHUFFLE, 0, 0, results)
        stats = client.action(0, "stats")
        received = pa.concat_tables([client.fetch(0, SHUFFLE, partition) for partition in range(3)])
    assert stats["spilled_bytes"] > 2 * (1 << 20) and stats["spill_files"] >= 1
    assert stats["memory_bytes"] <= 1 << 20
    assert sorted_rows(received).equals(sorted_rows(table))
    assert checksum_of(received) == checksum_of(table)
    assert any(server.spill_dir.rglob("*.arrow"))
    with make_client(server.peer) as client:
        assert client.action(0, "drop_shuffle", {"shuffle_id": SHUFFLE}) == {"dropped": True}
    assert not any(server.spill_dir.rglob("*.arrow"))


def test_malformed_and_unknown_tickets_get_clear_errors_and_the_server_keeps_serving(serve_agent):
    server = serve_agent("owner")
    connection = flight.connect(f"grpc+tcp://{server.peer}")
    with pytest.raises(pa.ArrowException, match="malformed ticket 'garbage'"):
        connection.do_get(flight.Ticket(b"garbage")).read_all()
    with pytest.raises(pa.ArrowException, match="unknown shuffle hash 42"):
        connection.do_get(flight.Ticket(b"42:0")).read_all()
    schema = pa.schema([("x", pa.int64())])
    writer, _ = connection.do_put(flight.FlightDescriptor.for_command(b"12:notanumber"), schema)
    with pytest.raises(pa.ArrowException, match="both parts must be decimal integers"):
        writer.write_batch(pa.record_batch([pa.array([1])], schema=schema))
        writer.close()
    writer, _ = connection.do_put(flight.FlightDescriptor.for_command(PartitionKey.for_shuffle(SHUFFLE, 0).encode()), schema)
    with pytest.raises(pa.ArrowException, match="without app_metadata"):
        writer.write_batch(pa.record_batch([pa.array([1])], schema=schema))
        writer.close()
    with pytest.raises(pa.ArrowException, match="unknown action 'explode'"):
        list(connection.do_action(flight.Action("explode", b"")))
    # still serving: a valid round trip works afterwards
    with make_client(server.peer) as client:
        sent = client.put_partition(SHUFFLE, 0, sample_table(10).to_batches(), producer=0, attempt=0)
        client.commit(0, SHUFFLE, 0, 0, {0: sent})
        assert client.fetch(0, SHUFFLE, 0).num_rows == 10
        infos = list(connection.list_flights())
    assert [(info.total_records, info.descriptor.command) for info in infos] == [(10, PartitionKey.for_shuffle(SHUFFLE, 0).encode())]
    assert server.process.poll() is None


def test_unreachable_peer_raises_after_bounded_retries():
    native_or_skip()
    client = ShuffleClient(["127.0.0.1:9"], native_or_skip().batch_checksum, max_attempts=2, backoff_seconds=0.01, call_timeout=2)
    with pytest.raises(ShuffleError, match="failed after 2 attempts"):
        client.put_partition(SHUFFLE, 0, sample_table(10).to_batches(), producer=0, attempt=0)
    with pytest.raises(ShuffleError, match="peers not reachable"):
        client.wait_ready(0.3)


def test_coalescing_builds_messages_of_at_least_the_target_size():
    table = sample_table(50_000)
    messages = list(coalesce(table.to_batches(max_chunksize=500), 256 * 1024))
    assert all(message.nbytes >= 256 * 1024 for message in messages[:-1])
    assert len(messages) < 100 and pa.Table.from_batches(messages).equals(table.combine_chunks())


def test_http_endpoints_and_metrics(serve_agent):
    server = serve_agent("owner")
    table = sample_table(5000)
    with make_client(server.peer) as client:
        sent = client.put_partition(SHUFFLE, 2, table.to_batches(), producer=0, attempt=0)
        client.commit(0, SHUFFLE, 0, 0, {2: sent})
        client.fetch(0, SHUFFLE, 2)
        with pytest.raises(ShuffleError):
            client.fetch(0, "no-such/attempt-0/stage", 2)
    assert server.http_get("/healthz") == (200, b"ok\n")
    assert server.http_get("/readyz")[0] == 200
    status, body = server.http_get("/status")
    assert status == 200 and json.loads(body)["phase"] == "starting"
    assert server.http_get("/nope")[0] == 404
    status, exposition = server.http_get("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= {"job", "agent", "direction", "rpc", "method", "status", "reason"}
            samples[(sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("job", "agent"))))] = sample.value
    assert samples[("sabot_shuffle_rows_total", (("direction", "in"), ("rpc", "do_put")))] == 5000
    assert samples[("sabot_shuffle_rows_total", (("direction", "out"), ("rpc", "do_get")))] == 5000
    assert samples[("sabot_flight_requests_total", (("method", "DoGet"), ("status", "not_found")))] == 1
    assert samples[("sabot_flight_requests_total", (("method", "DoAction:commit"), ("status", "ok")))] == 1
    assert samples[("sabot_store_batches", ())] >= 1 and samples[("sabot_slots", ())] == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus): exposition checked with prometheus_client's parser only")
    check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_partitions_this_agent_owns_go_straight_into_its_own_store(tmp_path, serve_agent):
    """Own partitions skip the loopback DoPut but pass the same append/commit checks; others still use Flight."""
    from sabot_agent.store import PartitionStore, StoreError

    native = native_or_skip()
    remote = serve_agent("remote")
    store = PartitionStore(None, str(tmp_path / "spill"), native.batch_checksum)
    store.register(SHUFFLE)
    table = sample_table(10_000)
    # Peer 1's address is dead: only the local store can take what is sent to it.
    with ShuffleClient([remote.peer, "127.0.0.1:9"], native.batch_checksum, local_store=(1, store)) as client:
        own = client.put_partition(SHUFFLE, 1, table.to_batches(max_chunksize=2000), producer=1, attempt=0)
        with pytest.raises(StoreError, match="producer sent 1 rows"):
            client.commit(1, SHUFFLE, 1, 0, {1: PutResult(rows=1, bytes=own.bytes, messages=1, checksum=own.checksum)})
        client.commit(1, SHUFFLE, 1, 0, {1: own})
        remote_put = client.put_partition(SHUFFLE, 0, table.to_batches(), producer=1, attempt=0)
        client.commit(0, SHUFFLE, 1, 0, {0: remote_put})
        assert client.fetch(0, SHUFFLE, 0).num_rows == 10_000
    local = store.read_table(SHUFFLE, [1])
    assert checksum_of(local) == checksum_of(table) == own.checksum
    assert sorted_rows(local).equals(sorted_rows(table))
