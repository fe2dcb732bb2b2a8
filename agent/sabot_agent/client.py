"""Shuffle client: pooled Flight connections to the peers, bounded retries with backoff and jitter,
and a deadline on every call. Every failure raises — an error never becomes an empty result.

With TLS (security.AgentTLS) every connection presents this agent's certificate and accepts only a
server whose certificate the job attempt's CA issued for the agent it dials (the peer's agent name,
checked by gRPC as the TLS host name whatever address is dialled)."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Callable

import pyarrow as pa
import pyarrow.flight as flight

from sabot_agent.security import AgentTLS
from sabot_agent.tickets import PartitionKey

# transient transport failures worth retrying; anything else (invalid ticket, unknown shuffle) is final
_RETRYABLE = (flight.FlightUnavailableError, flight.FlightTimedOutError, flight.FlightInternalError, ConnectionError)


class ShuffleError(RuntimeError):
    """A shuffle RPC failed for good (after retries, or with a non-retryable error)."""


def location_of(peer: str, tls: bool) -> str:
    return peer if "://" in peer else f"{'grpc+tls' if tls else 'grpc+tcp'}://{peer}"


class ShuffleClient:
    def __init__(
        self,
        peers: list[str],
        *,
        metrics=None,
        max_attempts: int = 4,
        backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 2.0,
        call_timeout: float = 120.0,
        tls: AgentTLS | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.peers = list(peers)
        self._metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.call_timeout = call_timeout
        self._tls = tls
        self._lock = threading.Lock()
        self._pool: dict[int, flight.FlightClient] = {}

    def _connection(self, peer_index: int) -> flight.FlightClient:
        with self._lock:
            connection = self._pool.get(peer_index)
            if connection is None:
                connection = self._pool[peer_index] = self._connect(peer_index)
            return connection

    def _connect(self, peer_index: int) -> flight.FlightClient:
        location = location_of(self.peers[peer_index], self._tls is not None)
        if self._tls is None:
            return flight.FlightClient(location)
        return flight.FlightClient(location, tls_root_certs=self._tls.ca, cert_chain=self._tls.certificate, private_key=self._tls.key,
                                   override_hostname=self._tls.peer_name(peer_index))  # fmt: skip

    def _drop_connection(self, peer_index: int) -> None:
        with self._lock:
            connection = self._pool.pop(peer_index, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._pool = list(self._pool.values()), {}
        for connection in connections:
            connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _options(self, timeout: float | None = None) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(timeout=timeout or self.call_timeout)

    def _with_retries(self, peer_index: int, what: str, call: Callable[[flight.FlightClient], object], attempts: int | None = None):
        last_error: Exception | None = None
        attempts = attempts or self.max_attempts
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))
                time.sleep(delay * (0.5 + random.random()))  # backoff with jitter between retries
            try:
                return call(self._connection(peer_index))
            except _RETRYABLE as exc:
                last_error = exc
                if self._metrics is not None:
                    self._metrics.fetch_failure()
                self._drop_connection(peer_index)
            except (flight.FlightError, pa.ArrowException) as exc:
                if self._metrics is not None:
                    self._metrics.fetch_failure()
                raise ShuffleError(f"{what} on peer {peer_index} ({self.peers[peer_index]}) failed: {_first_line(exc)}") from exc
        raise ShuffleError(
            f"{what} on peer {peer_index} ({self.peers[peer_index]}) failed after {attempts} attempts: {_first_line(last_error)}"
        ) from last_error

    def fetch(self, peer_index: int, shuffle_id: str, partition_id: int) -> pa.Table:
        """Every sealed batch of a partition from a peer (DoGet); raises on any error."""
        ticket = flight.Ticket(PartitionKey.for_shuffle(shuffle_id, partition_id).encode())

        def get(connection: flight.FlightClient) -> pa.Table:
            return connection.do_get(ticket, options=self._options()).read_all()

        return self._with_retries(peer_index, f"DoGet of partition {partition_id} of {shuffle_id!r}", get)

    def action(self, peer_index: int, action_type: str, body: dict | None = None, timeout: float | None = None, attempts: int | None = None) -> dict:
        def answer(results: list[flight.Result]) -> dict:
            if len(results) != 1:
                raise ShuffleError(f"action {action_type} returned {len(results)} results, expected 1")
            return json.loads(results[0].body.to_pybytes())

        return self._action(peer_index, action_type, body, timeout, attempts, answer)

    def _action(self, peer_index: int, action_type: str, body: dict | None, timeout: float | None, attempts: int | None,
                answer: Callable[[list[flight.Result]], dict]) -> dict:  # fmt: skip
        payload = json.dumps(body or {}).encode()

        def run(connection: flight.FlightClient) -> dict:
            return answer(list(connection.do_action(flight.Action(action_type, payload), options=self._options(timeout))))

        return self._with_retries(peer_index, f"action {action_type}", run, attempts)

    def stage_status(self, peer_index: int, shuffle_id: str, partitions: list[int], wait: float, attempts: int | None = None,
                     inline_bytes: int = 0) -> dict:  # fmt: skip
        """The peer's seal of its output of a stage for these partitions (a long poll of at most `wait`).
        With `inline_bytes`, `answer["tables"]` holds the partitions (of at most that many bytes in
        all) the peer sent with its seal: partition -> table."""
        body = {"shuffle_id": shuffle_id, "producer": peer_index, "partitions": partitions, "wait": wait}
        if inline_bytes:
            body["inline_bytes"] = inline_bytes

        def answer(results: list[flight.Result]) -> dict:
            seal = json.loads(results[0].body.to_pybytes()) if results else {}
            inlined = seal.get("inlined", [])
            if len(results) != 1 + len(inlined):
                raise ShuffleError(f"action stage_status returned {len(results)} results for {len(inlined)} partitions sent with the seal")
            if seal.get("sealed"):
                seal["tables"] = {partition: pa.ipc.open_stream(result.body).read_all() for partition, result in zip(inlined, results[1:])}
            return seal

        return self._action(peer_index, "stage_status", body, wait + self.call_timeout, attempts, answer)

    def wait_ready(self, timeout: float, skip: int | None = None, stop: threading.Event | None = None) -> bool:
        """Poll every peer's health action (but `skip`'s: an agent never calls itself) until all
        answer, or raise naming the ones that did not. Returns False, at once, when `stop` is set."""
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.peers))) - {skip}
        last_errors: dict[int, str] = {}
        stop = stop or threading.Event()
        while pending:
            for peer_index in sorted(pending):
                if stop.is_set():
                    return False
                try:
                    connection = self._connection(peer_index)
                    list(connection.do_action(flight.Action("health", b""), options=flight.FlightCallOptions(timeout=2.0)))
                    pending.discard(peer_index)
                except (flight.FlightError, pa.ArrowException, ConnectionError) as exc:
                    last_errors[peer_index] = _first_line(exc)
                    self._drop_connection(peer_index)
            if pending and time.monotonic() >= deadline:
                details = "; ".join(f"peer {i} ({self.peers[i]}): {last_errors.get(i, 'no answer')}" for i in sorted(pending))
                raise ShuffleError(f"peers not reachable after {timeout:g}s: {details}")
            if pending and stop.wait(0.01):  # poll interval between health probes: the start skew between agents
                return False
        return True


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else "unknown error"
    return text.splitlines()[0] if text else type(exc).__name__
