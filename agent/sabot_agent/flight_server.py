"""The agent's Arrow Flight server: it serves, read-only, the stage outputs this agent produced.

- DoGet `"<shuffle_id_hash>:<partition_id>"` streams the sealed batches of one partition (memory and
  spill files), in the order they were written.
- DoAction `stage_status` {shuffle_id, producer, partitions, wait} answers with the producer's seal of
  that stage output — rows, bytes and checksum of each asked partition, and the schema — as soon as it
  is sealed, waiting at most `wait` seconds (a long poll). `health` answers with the agent's phase;
  `stats` with the store's totals.
- Nothing writes into an agent from outside: its store holds only what its own tasks produced, so
  there is no DoPut. ListFlights lists the partitions held.

Malformed requests (tickets, action bodies) are answered with a FlightServerError "invalid argument:
<what is wrong>" (not pyarrow's ArrowInvalid, which carries the server's traceback); an unknown
shuffle with NOT_FOUND. The server keeps serving after any of them.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pyarrow as pa
import pyarrow.flight as flight

from sabot_agent.engine.exchange import schema_to_text
from sabot_agent.metrics import AgentMetrics
from sabot_agent.store import PartitionStore, StoreError, UnknownShuffleError
from sabot_agent.tickets import MAX_PARTITION_ID, PartitionKey, TicketError

# a stage_status long poll holds a server thread at most this long
MAX_STATUS_WAIT_SECONDS = 5.0
MAX_STATUS_PARTITIONS = 65536

ACTIONS = {
    "stage_status": "a producer's seal of a stage output, waiting up to `wait` seconds: JSON {shuffle_id, producer, partitions, wait}",
    "stats": "partition store totals as JSON",
    "health": "liveness of this agent as JSON",
}


class ShuffleFlightServer(flight.FlightServerBase):
    def __init__(self, location: str, store: PartitionStore, metrics: AgentMetrics, health: Callable[[], dict]):
        super().__init__(location)
        self.store = store
        self.metrics = metrics
        self._health = health
        self._advertised = location

    def _timed(self, method: str, body: Callable):
        started = time.monotonic()
        try:
            result = body()
        except TicketError as exc:
            self.metrics.flight_request(method, "invalid", time.monotonic() - started)
            raise flight.FlightServerError(f"invalid argument: {exc}") from None
        except UnknownShuffleError as exc:
            self.metrics.flight_request(method, "not_found", time.monotonic() - started)
            raise pa.ArrowKeyError(str(exc)) from None
        except StoreError as exc:
            self.metrics.flight_request(method, "rejected", time.monotonic() - started)
            raise flight.FlightServerError(str(exc)) from None
        except Exception:
            self.metrics.flight_request(method, "error", time.monotonic() - started)
            raise
        self.metrics.flight_request(method, "ok", time.monotonic() - started)
        return result

    def do_get(self, context, ticket):
        def get():
            key = PartitionKey.decode(ticket.ticket)
            schema = self.store.schema(key)
            batches = list(self.store.read(key))
            self.metrics.shuffle("out", "do_get", sum(b.num_rows for b in batches), sum(b.nbytes for b in batches), len(batches))
            # a table stream is written by Arrow C++ without a Python call per message
            return flight.RecordBatchStream(pa.Table.from_batches(batches, schema=schema))

        return self._timed("DoGet", get)

    def do_put(self, context, descriptor, reader, writer):
        self.metrics.flight_request("DoPut", "refused", 0.0)
        raise flight.FlightServerError("DoPut is not served: an agent's partitions hold only what its own tasks produced")

    def list_actions(self, context):
        return list(ACTIONS.items())

    def do_action(self, context, action):
        def run():
            body = action.body.to_pybytes() if action.body is not None else b""
            if action.type == "stage_status":
                request = _json_body(body, {"shuffle_id": _is_text, "producer": _is_count, "partitions": _is_partition_list, "wait": _is_seconds})
                answer = self._stage_status(request["shuffle_id"], request["producer"], request["partitions"], request["wait"])
            elif action.type == "stats":
                _json_body(body or b"{}", {})
                answer = {name: value for name, value in self.store.stats().items() if name != "commits"}
            elif action.type == "health":
                _json_body(body or b"{}", {})
                answer = self._health()
            else:
                raise TicketError(f"unknown action {action.type!r}; known: {', '.join(ACTIONS)}")
            return [flight.Result(json.dumps(answer).encode())]

        return self._timed(f"DoAction:{action.type}" if action.type in ACTIONS else "DoAction:unknown", run)

    def _stage_status(self, shuffle_id: str, producer: int, partitions: list[int], wait: float) -> dict:
        found = self.store.sealed(shuffle_id, producer, wait)
        if found is None:
            return {"sealed": False}
        schema, claims = found
        empty = {"rows": 0, "bytes": 0, "checksum": 0}
        return {"sealed": True, "schema": schema_to_text(schema), "partitions": {str(p): claims.get(p, empty) for p in partitions}}

    def list_flights(self, context, criteria):
        def listing():
            infos = []
            for info in self.store.partition_infos():
                key = PartitionKey.for_shuffle(info["shuffle_id"], info["partition"])
                descriptor = flight.FlightDescriptor.for_command(key.encode())
                endpoint = flight.FlightEndpoint(flight.Ticket(key.encode()), [self._advertised])
                infos.append(flight.FlightInfo(self.store.schema(key), descriptor, [endpoint], info["rows"], info["bytes"]))
            return infos

        return iter(self._timed("ListFlights", listing))

    def set_advertised_location(self, location: str) -> None:
        self._advertised = location


_MAX_COUNT = 2**63 - 1


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_count(value: Any, maximum: int = _MAX_COUNT) -> bool:
    """An integer in [0, maximum]; JSON true/false are not integers here."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_STATUS_WAIT_SECONDS


def _is_partition_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= MAX_STATUS_PARTITIONS and all(_is_count(p, MAX_PARTITION_ID) for p in value)


_EXPECTED = {
    _is_text: "a non-empty string",
    _is_count: "an integer >= 0",
    _is_seconds: f"a number of seconds in [0, {MAX_STATUS_WAIT_SECONDS:g}]",
    _is_partition_list: f"a list of at most {MAX_STATUS_PARTITIONS} partition ids",
}


def _json_body(body: bytes, fields: dict[str, Callable[[Any], bool]]) -> dict:
    """A JSON object with exactly these fields, each passing its check; TicketError says what is not."""
    try:
        request = json.loads(body)
    except ValueError as exc:  # also a body that is not UTF-8
        raise TicketError(f"action body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise TicketError(f"action body must be a JSON object with {', '.join(fields) or 'no fields'}")
    missing = [name for name in fields if name not in request]
    if missing:
        raise TicketError(f"action body is missing {', '.join(missing)}")
    unknown = sorted(set(request) - set(fields))
    if unknown:
        raise TicketError(f"action body has unknown field(s) {', '.join(unknown)}")
    for name, check in fields.items():
        if not check(request[name]):
            raise TicketError(f"action body field {name} must be {_EXPECTED[check]}, got {json.dumps(request[name])[:80]}")
    return request
