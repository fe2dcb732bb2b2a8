"""The agent's Arrow Flight server: it serves, read-only, the stage outputs this agent produced.

- DoGet `"<shuffle_id_hash>:<partition_id>"` streams the sealed batches of one partition (memory and
  spill files), in the order they were written.
- DoAction `stage_status` {shuffle_id, producer, partitions, wait[, inline_bytes]} answers with the
  producer's seal of that stage output — rows, bytes and checksum of each asked partition, the schema,
  and the instance (the process) that sealed it — as soon as it is sealed, waiting at most `wait`
  seconds (a long poll). With `inline_bytes`, asked partitions of at most that many bytes in all come
  with the seal, each as a further result holding an IPC stream (`inlined` lists them in order): a
  consumer of small partitions needs no DoGet round trip. An agent answers only for its own outputs
  (producer = its index). `health` answers with the agent's phase; `stats` with the store's totals
  (no shuffle ids).
- ListFlights lists the partitions held (the job's agents only, like everything else here).
- Nothing writes into an agent from outside: its store holds only what its own tasks produced, so
  there is no DoPut. A middleware refuses DoPut and every other method not listed here (Handshake,
  GetFlightInfo, GetSchema, DoExchange) before any handler runs.

With TLS (security.AgentTLS) the server requires a client certificate from the job attempt's CA
(gRPC refuses any other during the handshake) and every call first checks the identity gRPC verified:
a certificate that names no agent of this job attempt is refused (FlightUnauthorizedError). pyarrow's
ServerMiddlewareFactory.start_call receives only the method and the headers, not the TLS identity, so
the check is the first step of every handler (`_serve`) rather than a middleware.

Every error a client sees is one line without a traceback: malformed requests (tickets, action
bodies) "invalid argument: <what is wrong>", an unknown shuffle "not found: ...", a refused caller
"unauthorized: ...", anything unexpected "internal error ..." (the traceback goes to the agent's
stderr). pyarrow attaches the server's Python traceback to any exception that is not a FlightError,
so handlers raise FlightErrors only. The server keeps serving after any of them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from typing import Any, Callable

import pyarrow as pa
import pyarrow.flight as flight

from sabot_agent import failpoints
from sabot_agent.engine.exchange import schema_to_text
from sabot_agent.metrics import AgentMetrics
from sabot_agent.security import AgentTLS
from sabot_agent.store import PartitionStore, UnknownShuffleError
from sabot_agent.tickets import MAX_PARTITION_ID, PartitionKey, TicketError

# a stage_status long poll holds a server thread at most this long
MAX_STATUS_WAIT_SECONDS = 5.0
MAX_STATUS_PARTITIONS = 65536
# partitions sent with a seal are at most this big in all
MAX_INLINE_BYTES = 1 << 20

ACTIONS = {
    "stage_status": "a producer's seal of a stage output, waiting up to `wait` seconds: JSON {shuffle_id, producer, partitions, wait}",
    "stats": "partition store totals as JSON",
    "health": "liveness of this agent as JSON",
}


# the Flight methods served; a call of any other is refused as the call starts
SERVED_METHODS = (flight.FlightMethod.DO_GET, flight.FlightMethod.DO_ACTION, flight.FlightMethod.LIST_ACTIONS, flight.FlightMethod.LIST_FLIGHTS)
NOT_SERVED_REASONS = {flight.FlightMethod.DO_PUT: "an agent's partitions hold only what its own tasks produced"}


def method_name(method: flight.FlightMethod) -> str:
    """DO_PUT -> DoPut, as the Flight protocol spells its RPCs."""
    return "".join(part.capitalize() for part in method.name.split("_"))


class Forbidden(Exception):
    """A well-formed request the calling agent may not make; the message says why, in one line."""


class ServedMethodsOnly(flight.ServerMiddlewareFactory):
    """Refuses the methods the agent does not serve. Refused as the call starts rather than by a
    handler: pyarrow sends the server's traceback with an error its GetSchema handler raises, even a
    FlightError (the error of a middleware is sent as it is)."""

    def __init__(self, metrics: AgentMetrics):
        self.metrics = metrics

    def start_call(self, info, headers):
        if info.method not in SERVED_METHODS:
            name = method_name(info.method)
            self.metrics.flight_request(name, "refused", 0.0)
            reason = NOT_SERVED_REASONS.get(info.method)
            raise flight.FlightServerError(f"{name} is not served" + (f": {reason}" if reason else ""))
        return None


class ShuffleFlightServer(flight.FlightServerBase):
    def __init__(self, location: str, store: PartitionStore, metrics: AgentMetrics, health: Callable[[], dict], *,
                 agent_index: int, agent_count: int, tls: AgentTLS | None, instance: str = ""):  # fmt: skip
        options = {}
        if tls is not None:
            options = {"tls_certificates": [flight.CertKeyPair(tls.certificate, tls.key)], "verify_client": True, "root_certificates": tls.ca}
        super().__init__(location, middleware={"served": ServedMethodsOnly(metrics)}, **options)
        self.store = store
        self.metrics = metrics
        self._health = health
        self._advertised = location
        self._agent_index = agent_index
        self._agent_count = agent_count
        self._tls = tls
        self._instance = instance  # named in every seal: a consumer tells a replacement's seal from the lost agent's
        # (shuffle, partition) pairs whose seal this server has answered: agent 0 learns from its done
        # marker's entry for a peer that the peer was told the job is over
        self._told: set[tuple[str, int]] = set()
        self._told_changed = threading.Condition()
        self._plan = ""  # the job's plan fingerprint (plan.job.plan_fingerprint), named in every seal

    def _serve(self, method: str, context, body: Callable):
        """Run a handler's body for an allowed caller, count it, and turn every failure into a one-line FlightError."""
        started = time.monotonic()

        def count(status: str) -> None:
            self.metrics.flight_request(method, status, time.monotonic() - started)

        if self._tls is not None and self._tls.caller(context.peer_identity(), self._agent_count) is None:
            count("unauthorized")
            raise flight.FlightUnauthorizedError("unauthorized: the client certificate names no agent of this job attempt")
        try:
            result = body()
        except TicketError as exc:
            count("invalid")
            raise flight.FlightServerError(f"invalid argument: {exc}") from None
        except Forbidden as exc:
            count("unauthorized")
            raise flight.FlightUnauthorizedError(f"unauthorized: {exc}") from None
        except UnknownShuffleError as exc:
            count("not_found")
            raise flight.FlightServerError(f"not found: {exc}") from None
        except Exception:
            count("error")
            print(f"sabot-agent: {method} failed:", file=sys.stderr, flush=True)
            traceback.print_exc(file=sys.stderr)
            raise flight.FlightServerError(f"internal error serving {method} (details in the agent's log)") from None
        count("ok")
        return result

    def do_get(self, context, ticket):
        def get():
            key = PartitionKey.decode(ticket.ticket)
            schema = self.store.schema(key)
            batches = self._served_batches(key, "do_get")
            # a table stream is written by Arrow C++ without a Python call per message
            return flight.RecordBatchStream(pa.Table.from_batches(batches, schema=schema))

        return self._serve("DoGet", context, get)

    def list_actions(self, context):
        return self._serve("ListActions", context, lambda: list(ACTIONS.items()))

    def do_action(self, context, action):
        def run():
            body = action.body.to_pybytes() if action.body is not None else b""
            if action.type == "stage_status":
                request = _json_body(body, {"shuffle_id": _is_text, "producer": _is_count, "partitions": _is_partition_list, "wait": _is_seconds},
                                     optional={"inline_bytes": _is_inline_bytes})  # fmt: skip
                answer, inlined = self._stage_status(request["shuffle_id"], request["producer"], request["partitions"], request["wait"],
                                                     request.get("inline_bytes", 0))  # fmt: skip
                return [flight.Result(json.dumps(answer).encode()), *(flight.Result(payload) for payload in inlined)]
            elif action.type == "stats":
                _json_body(body or b"{}", {})
                answer = {name: value for name, value in self.store.stats().items() if name != "commits"}
            elif action.type == "health":
                _json_body(body or b"{}", {})
                answer = self._health()
            else:
                raise TicketError(f"unknown action {action.type!r}; known: {', '.join(ACTIONS)}")
            return [flight.Result(json.dumps(answer).encode())]

        return self._serve(f"DoAction:{action.type}" if action.type in ACTIONS else "DoAction:unknown", context, run)

    def _stage_status(self, shuffle_id: str, producer: int, partitions: list[int], wait: float, inline_bytes: int) -> tuple[dict, list[pa.Buffer]]:
        """The seal as JSON, and the IPC streams of the partitions sent with it (the answer's `inlined`)."""
        if producer != self._agent_index:
            raise Forbidden(f"agent {self._agent_index} answers only for its own outputs (producer {self._agent_index})")
        found = self.store.sealed(shuffle_id, producer, wait)
        if found is None:
            return {"sealed": False}, []
        schema, claims = found
        with self._told_changed:
            self._told.update((shuffle_id, p) for p in partitions)
            self._told_changed.notify_all()
        empty = {"rows": 0, "bytes": 0, "checksum": 0}
        asked = {partition: claims.get(partition, empty) for partition in partitions}
        inlined, payloads = [], []
        for partition, claim in asked.items():
            if claim["rows"] and claim["bytes"] <= inline_bytes:
                inline_bytes -= claim["bytes"]
                inlined.append(partition)
                payloads.append(self._inlined_stream(PartitionKey.for_shuffle(shuffle_id, partition), schema))
        answer = {"sealed": True, "schema": schema_to_text(schema), "instance": self._instance, "plan": self._plan,
                  "partitions": {str(p): claim for p, claim in asked.items()}, "inlined": inlined}  # fmt: skip
        return answer, payloads

    def _inlined_stream(self, key: PartitionKey, schema: pa.Schema) -> pa.Buffer:
        """A partition's sealed batches as one IPC stream, sent with a seal."""
        batches = self._served_batches(key, "stage_status")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return sink.getvalue()

    def _served_batches(self, key: PartitionKey, rpc: str) -> list[pa.RecordBatch]:
        batches = list(self.store.read(key))
        failpoints.reached(self._agent_index, "serving")
        self.metrics.shuffle("out", rpc, sum(b.num_rows for b in batches), sum(b.nbytes for b in batches), len(batches))
        return batches

    def wait_told(self, shuffle_id: str, partition: int, timeout: float) -> bool:
        """Whether this server answered a poll of `partition` of a sealed output, waiting up to `timeout`."""
        with self._told_changed:
            return self._told_changed.wait_for(lambda: (shuffle_id, partition) in self._told, timeout)

    def list_flights(self, context, criteria):
        def listing():
            infos = []
            for info in self.store.partition_infos():
                key = PartitionKey.for_shuffle(info["shuffle_id"], info["partition"])
                descriptor = flight.FlightDescriptor.for_command(key.encode())
                endpoint = flight.FlightEndpoint(flight.Ticket(key.encode()), [self._advertised])
                infos.append(flight.FlightInfo(self.store.schema(key), descriptor, [endpoint], info["rows"], info["bytes"]))
            return infos

        return iter(self._serve("ListFlights", context, listing))

    def set_plan_fingerprint(self, fingerprint: str) -> None:
        self._plan = fingerprint

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


def _is_inline_bytes(value: Any) -> bool:
    return _is_count(value, MAX_INLINE_BYTES)


def _is_partition_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= MAX_STATUS_PARTITIONS and all(_is_count(p, MAX_PARTITION_ID) for p in value)


_EXPECTED = {
    _is_text: "a non-empty string",
    _is_count: "an integer >= 0",
    _is_seconds: f"a number of seconds in [0, {MAX_STATUS_WAIT_SECONDS:g}]",
    _is_partition_list: f"a list of at most {MAX_STATUS_PARTITIONS} partition ids",
    _is_inline_bytes: f"an integer in [0, {MAX_INLINE_BYTES}]",
}


def _json_body(body: bytes, fields: dict[str, Callable[[Any], bool]], optional: dict[str, Callable[[Any], bool]] | None = None) -> dict:
    """A JSON object with exactly these fields (and any of the `optional` ones), each passing its
    check; TicketError says what is not."""
    optional = optional or {}
    try:
        request = json.loads(body)
    except ValueError as exc:  # also a body that is not UTF-8
        raise TicketError(f"action body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise TicketError(f"action body must be a JSON object with {', '.join(fields) or 'no fields'}")
    missing = [name for name in fields if name not in request]
    if missing:
        raise TicketError(f"action body is missing {', '.join(missing)}")
    unknown = sorted(set(request) - set(fields) - set(optional))
    if unknown:
        raise TicketError(f"action body has unknown field(s) {', '.join(unknown)}")
    for name, check in {**fields, **optional}.items():
        if name in request and not check(request[name]):
            raise TicketError(f"action body field {name} must be {_EXPECTED[check]}, got {json.dumps(request[name])[:80]}")
    return request
