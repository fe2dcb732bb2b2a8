"""The agent's Arrow Flight server: DoPut appends to the partition store, DoGet streams committed
batches, DoAction commits/drops/reports, ListFlights lists partitions. A malformed or unknown ticket is
answered with a Flight error that says what is wrong; the server keeps serving."""

from __future__ import annotations

import json
import time
from typing import Callable

import pyarrow as pa
import pyarrow.flight as flight

from sabot_agent.metrics import AgentMetrics
from sabot_agent.store import PartitionStore, StoreError, UnknownShuffleError
from sabot_agent.tickets import PartitionKey, PutMetadata, TicketError

ACTIONS = {
    "commit": "producer finished: JSON {shuffle_id, producer, attempt, partitions: {id: {rows, bytes, checksum}}}",
    "drop_shuffle": "forget a shuffle and delete its spill files: JSON {shuffle_id}",
    "stats": "partition store statistics as JSON",
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
            raise pa.ArrowInvalid(str(exc)) from None
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

    def do_put(self, context, descriptor, reader, writer):
        def put():
            key = PartitionKey.decode(descriptor.command or b"")
            rows = nbytes = messages = 0
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if chunk.data is None:
                    raise TicketError("DoPut message without a record batch")
                meta = PutMetadata.decode(chunk.app_metadata.to_pybytes() if chunk.app_metadata is not None else None)
                size = chunk.data.nbytes  # computed once: RecordBatch.nbytes walks every buffer
                if self.store.append(key, meta, chunk.data, size):
                    rows += chunk.data.num_rows
                    nbytes += size
                    messages += 1
            self.metrics.shuffle("in", "do_put", rows, nbytes, messages)

        self._timed("DoPut", put)

    def do_get(self, context, ticket):
        def get():
            key = PartitionKey.decode(ticket.ticket)
            schema = self.store.schema(key)
            batches = list(self.store.read(key))
            self.metrics.shuffle("out", "do_get", sum(b.num_rows for b in batches), sum(b.nbytes for b in batches), len(batches))
            return flight.GeneratorStream(schema, iter(batches))

        return self._timed("DoGet", get)

    def list_actions(self, context):
        return list(ACTIONS.items())

    def do_action(self, context, action):
        def run():
            body = action.body.to_pybytes() if action.body is not None else b""
            if action.type == "commit":
                request = _json_body(body, ("shuffle_id", "producer", "attempt", "partitions"))
                partitions = {int(pid): claim for pid, claim in request["partitions"].items()}
                self.store.commit(request["shuffle_id"], int(request["producer"]), int(request["attempt"]), partitions)
                answer = {"committed": True}
            elif action.type == "drop_shuffle":
                request = _json_body(body, ("shuffle_id",))
                answer = {"dropped": self.store.drop_shuffle(request["shuffle_id"])}
            elif action.type == "stats":
                answer = self.store.stats()
            elif action.type == "health":
                answer = self._health()
            else:
                raise TicketError(f"unknown action {action.type!r}; known: {', '.join(ACTIONS)}")
            return [flight.Result(json.dumps(answer).encode())]

        return self._timed(f"DoAction:{action.type}" if action.type in ACTIONS else "DoAction:unknown", run)

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


def _json_body(body: bytes, required: tuple[str, ...]) -> dict:
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise TicketError(f"action body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise TicketError("action body must be a JSON object")
    missing = [name for name in required if name not in request]
    if missing:
        raise TicketError(f"action body is missing {', '.join(missing)}")
    return request
