"""Malformed Flight requests to a real `sabot-agent --serve`, sent with a plain pyarrow.flight client:
each is answered "invalid argument: <what is wrong>" (a FlightServerError, no server traceback, never an
internal error) and the server keeps serving."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from helpers import ServingAgent, require_native
from sabot_agent.tickets import PartitionKey, shuffle_id

SHUFFLE = shuffle_id("flight-input", 0, "stage")
STATUS = {"shuffle_id": SHUFFLE, "producer": 0, "partitions": [0, 1], "wait": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One agent for the module: every test also checks that the bad requests before it left it serving."""
    require_native()
    agent = ServingAgent(tmp_path_factory.mktemp("strict"), "strict")
    yield agent
    agent.stop()


@pytest.fixture
def connection(server):
    client = flight.connect(f"grpc+tcp://{server.peer}")
    yield client
    assert json.loads(list(client.do_action(flight.Action("health", b"")))[0].body.to_pybytes())
    assert server.process.poll() is None
    client.close()


def invalid_argument(call) -> str:
    with pytest.raises(flight.FlightServerError) as caught:
        call()
    message = str(caught.value)
    assert message.startswith("invalid argument: "), message
    assert "Traceback" not in message and not isinstance(caught.value, flight.FlightInternalError), message
    return message


@pytest.mark.parametrize(
    "ticket",
    [b" 12 : 3 ", b"+12:+1", b"012:1", b"1:01", b"-0:1", b"1:1\n", b"1:2:3", b"9223372036854775808:0", b"1:2147483648", b"1:-1", b"\xff:1"],
)
def test_malformed_tickets_are_invalid_arguments(connection, ticket):
    assert "malformed ticket" in invalid_argument(lambda: connection.do_get(flight.Ticket(ticket)).read_all())


def test_nothing_can_be_put_into_an_agent(connection):
    """An agent's store holds only its own tasks' outputs: DoPut is not served at all."""
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(flight.FlightServerError, match="DoPut is not served") as caught:
        writer, _ = connection.do_put(flight.FlightDescriptor.for_command(PartitionKey.for_shuffle(SHUFFLE, 0).encode()), schema)
        writer.write_batch(pa.record_batch([pa.array([1])], schema=schema))
        writer.close()
    assert "Traceback" not in str(caught.value)


def body(**changes) -> bytes:
    return json.dumps({**STATUS, **changes}).encode()


@pytest.mark.parametrize(
    "action, payload, expected",
    [
        ("stage_status", b"[]", "must be a JSON object"),
        ("stage_status", b"\xff", "not JSON"),
        ("stage_status", b"{", "not JSON"),
        ("stage_status", body(producer=True), "producer must be an integer >= 0, got true"),
        ("stage_status", body(producer=-1), "producer must be an integer >= 0, got -1"),
        ("stage_status", body(producer="0"), 'producer must be an integer >= 0, got "0"'),
        ("stage_status", body(producer=1.5), "producer must be an integer >= 0"),
        ("stage_status", body(shuffle_id=7), "shuffle_id must be a non-empty string"),
        ("stage_status", body(partitions={}), "partitions must be a list"),
        ("stage_status", body(partitions=[-1]), "partitions must be a list"),
        ("stage_status", body(partitions=["0"]), "partitions must be a list"),
        ("stage_status", body(partitions=[2**31]), "partitions must be a list"),
        ("stage_status", body(wait=-1), "wait must be a number of seconds"),
        ("stage_status", body(wait=3600), "wait must be a number of seconds"),
        ("stage_status", body(wait=True), "wait must be a number of seconds"),
        ("stage_status", body(extra=1), "unknown field(s) extra"),
        ("stage_status", body(inline_bytes=-1), "inline_bytes must be an integer in [0, 1048576], got -1"),
        ("stage_status", body(inline_bytes=1 << 21), "inline_bytes must be an integer in [0, 1048576]"),
        ("stage_status", body(inline_bytes="64"), 'inline_bytes must be an integer in [0, 1048576], got "64"'),
        ("stage_status", json.dumps({"shuffle_id": SHUFFLE}).encode(), "missing producer, partitions, wait"),
        ("stats", b"garbage", "not JSON"),
        ("stats", b'{"verbose": true}', "unknown field(s) verbose"),
        ("health", b"[1]", "must be a JSON object"),
        ("commit", b"{}", "unknown action 'commit'"),
        ("explode", b"", "unknown action 'explode'"),
    ],
)
def test_malformed_action_bodies_are_invalid_arguments(connection, action, payload, expected):
    assert expected in invalid_argument(lambda: list(connection.do_action(flight.Action(action, payload))))


def test_well_formed_requests_still_work(connection):
    results = list(connection.do_action(flight.Action("stage_status", body())))
    assert json.loads(results[0].body.to_pybytes()) == {"sealed": False}
    stats = json.loads(list(connection.do_action(flight.Action("stats", b"{}")))[0].body.to_pybytes())
    assert "commits" not in stats and stats["shuffles"] == 0
