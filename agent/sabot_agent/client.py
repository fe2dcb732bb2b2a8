"""Shuffle client: pooled Flight connections per peer, bounded retries with backoff and jitter,
small batches coalesced into >= 1 MB messages. Every failure raises — an error never becomes an
empty result."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.flight as flight

from sabot_agent.store import PartitionStore, combine_checksums
from sabot_agent.tickets import PartitionKey, PutMetadata

DEFAULT_MESSAGE_BYTES = 1 << 20
# a single batch far above the message size is sliced so that messages stay pipelined
MAX_MESSAGE_FACTOR = 8

# transient transport failures worth retrying; anything else (invalid ticket, rejected commit) is final
_RETRYABLE = (flight.FlightUnavailableError, flight.FlightTimedOutError, flight.FlightInternalError, ConnectionError)


class ShuffleError(RuntimeError):
    """A shuffle RPC failed for good (after retries, or with a non-retryable error)."""


@dataclass
class PutResult:
    rows: int = 0
    bytes: int = 0
    messages: int = 0
    checksum: int = 0

    def add(self, other: "PutResult") -> None:
        self.rows += other.rows
        self.bytes += other.bytes
        self.messages += other.messages
        self.checksum = combine_checksums([self.checksum, other.checksum])

    def as_claim(self) -> dict:
        return {"rows": self.rows, "bytes": self.bytes, "checksum": self.checksum}


def coalesce(batches: Iterable[pa.RecordBatch], target_bytes: int) -> Iterator[pa.RecordBatch]:
    """Regroup batches into messages of at least target_bytes (the last may be smaller) and at most
    about MAX_MESSAGE_FACTOR times that; empty batches are dropped. All batches share one schema (they
    are one DoPut stream)."""
    pending: list[pa.RecordBatch] = []
    pending_bytes = 0
    max_bytes = target_bytes * MAX_MESSAGE_FACTOR
    row_width: int | None = -1  # bytes per row when every column is fixed-width; -1: not known yet
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if row_width == -1:
            row_width = fixed_row_width(batch.schema)
        size = batch.num_rows * row_width if row_width is not None else batch.nbytes
        if size > max_bytes:
            rows_per_slice = max(1, batch.num_rows * target_bytes * 2 // max(1, size))
            pieces = [batch.slice(offset, rows_per_slice) for offset in range(0, batch.num_rows, rows_per_slice)]
        else:
            pieces = [batch]
        for piece in pieces:
            pending.append(piece)
            if piece is batch:
                pending_bytes += size
            else:
                pending_bytes += piece.num_rows * row_width if row_width is not None else piece.nbytes
            if pending_bytes >= target_bytes:
                yield _merge(pending)
                pending, pending_bytes = [], 0
    if pending:
        yield _merge(pending)


def fixed_row_width(schema: pa.Schema) -> int | None:
    """Bytes per row of a schema whose columns are all fixed-width (not bool), else None.

    coalesce sizes fixed-width batches as rows x width (validity bitmaps ignored: it only groups batches
    into ~target-sized messages) because RecordBatch.nbytes walks every buffer's referenced range, ~10 us
    per call, which dominated coalescing 2K-row batches. Variable-width schemas use nbytes."""
    total = 0
    for field in schema:
        kind = field.type
        if not (pa.types.is_primitive(kind) or pa.types.is_fixed_size_binary(kind)) or pa.types.is_boolean(kind):
            return None
        total += kind.bit_width // 8
    return total


def _merge(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    # one copy into contiguous buffers (concat_batches is ~15x faster than Table.combine_chunks here)
    return pa.concat_batches(batches)


def location_of(peer: str) -> str:
    return peer if "://" in peer else f"grpc+tcp://{peer}"


class ShuffleClient:
    def __init__(
        self,
        peers: list[str],
        checksum: Callable[[pa.RecordBatch], int],
        *,
        metrics=None,
        message_bytes: int = DEFAULT_MESSAGE_BYTES,
        max_attempts: int = 4,
        backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 2.0,
        call_timeout: float = 120.0,
        local_store: tuple[int, "PartitionStore"] | None = None,
    ):
        """`local_store` = (this agent's peer index, its store): partitions this agent owns itself go
        straight into its store, through the same append/commit checks, instead of a loopback DoPut."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.peers = list(peers)
        self._checksum = checksum
        self._metrics = metrics
        self.message_bytes = message_bytes
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.call_timeout = call_timeout
        self._lock = threading.Lock()
        self._pool: dict[int, flight.FlightClient] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._local_index, self._local_store = local_store if local_store is not None else (None, None)

    def _connection(self, peer_index: int) -> flight.FlightClient:
        with self._lock:
            connection = self._pool.get(peer_index)
            if connection is None:
                connection = self._pool[peer_index] = flight.FlightClient(location_of(self.peers[peer_index]))
            return connection

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

    def _options(self) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(timeout=self.call_timeout)

    def _with_retries(self, peer_index: int, what: str, call: Callable[[flight.FlightClient], object]):
        last_error: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.max_backoff_seconds, self.backoff_seconds * (2 ** (attempt - 1)))
                time.sleep(delay * (0.5 + random.random()))  # backoff with jitter between retries
            try:
                return call(self._connection(peer_index))
            except _RETRYABLE as exc:
                last_error = exc
                if self._metrics is not None:
                    self._metrics.fetch_failure(type(exc).__name__)
                self._drop_connection(peer_index)
            except (flight.FlightError, pa.ArrowException) as exc:
                if self._metrics is not None:
                    self._metrics.fetch_failure(type(exc).__name__)
                raise ShuffleError(f"{what} on peer {peer_index} ({self.peers[peer_index]}) failed: {_first_line(exc)}") from exc
        raise ShuffleError(
            f"{what} on peer {peer_index} ({self.peers[peer_index]}) failed after {self.max_attempts} attempts: {_first_line(last_error)}"
        ) from last_error

    def owner(self, partition_id: int) -> int:
        return partition_id % len(self.peers)

    def put_partition(
        self,
        shuffle_id: str,
        partition_id: int,
        batches: Iterable[pa.RecordBatch],
        producer: int,
        attempt: int,
        peer_index: int | None = None,
    ) -> PutResult:
        """Send batches of one partition to its owner in one DoPut; a retry resends the same sequence numbers."""
        messages = list(coalesce(batches, self.message_bytes))
        result = PutResult()
        if not messages:
            return result
        with self._lock:
            first_sequence = self._sequences.get((shuffle_id, partition_id), 0)
            self._sequences[(shuffle_id, partition_id)] = first_sequence + len(messages)
        metadata = [pa.py_buffer(PutMetadata(shuffle_id, producer, attempt, first_sequence + i).encode()) for i in range(len(messages))]
        key = PartitionKey.for_shuffle(shuffle_id, partition_id)
        target = self.owner(partition_id) if peer_index is None else peer_index

        if target == self._local_index:
            for i, message in enumerate(messages):
                self._local_store.append(key, PutMetadata(shuffle_id, producer, attempt, first_sequence + i), message, message.nbytes)
            rpc = "local"
        else:
            metadata = [pa.py_buffer(PutMetadata(shuffle_id, producer, attempt, first_sequence + i).encode()) for i in range(len(messages))]
            descriptor = flight.FlightDescriptor.for_command(key.encode())

            def send(connection: flight.FlightClient) -> None:
                writer, _ = connection.do_put(descriptor, messages[0].schema, options=self._options())
                with writer:
                    for message, meta in zip(messages, metadata):
                        writer.write_with_metadata(message, meta)
                    writer.done_writing()

            self._with_retries(target, f"DoPut of partition {partition_id} of {shuffle_id!r}", send)
            rpc = "do_put"
        for message in messages:
            result.add(PutResult(message.num_rows, message.nbytes, 1, self._checksum(message)))
        if self._metrics is not None:
            self._metrics.shuffle("out", rpc, result.rows, result.bytes, result.messages)
        return result

    def put_partitions(
        self, shuffle_id: str, by_partition: dict[int, list[pa.RecordBatch]], producer: int, attempt: int, concurrency: int = 4
    ) -> dict[int, PutResult]:
        """put_partition for many partitions, `concurrency` DoPuts in flight (checksums and I/O run without the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="put") as pool:
            futures = {
                pid: pool.submit(self.put_partition, shuffle_id, pid, batches, producer, attempt) for pid, batches in by_partition.items()
            }
            return {pid: future.result() for pid, future in futures.items()}

    def fetch(self, peer_index: int, shuffle_id: str, partition_id: int) -> pa.Table:
        """Every committed batch of a partition from a peer (DoGet); raises on any error."""
        ticket = flight.Ticket(PartitionKey.for_shuffle(shuffle_id, partition_id).encode())

        def get(connection: flight.FlightClient) -> pa.Table:
            return connection.do_get(ticket, options=self._options()).read_all()

        table = self._with_retries(peer_index, f"DoGet of partition {partition_id} of {shuffle_id!r}", get)
        if self._metrics is not None:
            self._metrics.shuffle("in", "do_get", table.num_rows, table.nbytes, len(table.to_batches()))
        return table

    def action(self, peer_index: int, action_type: str, body: dict | None = None) -> dict:
        payload = json.dumps(body or {}).encode()

        def run(connection: flight.FlightClient) -> dict:
            results = list(connection.do_action(flight.Action(action_type, payload), options=self._options()))
            if len(results) != 1:
                raise ShuffleError(f"action {action_type} returned {len(results)} results, expected 1")
            return json.loads(results[0].body.to_pybytes())

        return self._with_retries(peer_index, f"action {action_type}", run)

    def commit(self, peer_index: int, shuffle_id: str, producer: int, attempt: int, partitions: dict[int, PutResult]) -> None:
        body = {
            "shuffle_id": shuffle_id,
            "producer": producer,
            "attempt": attempt,
            "partitions": {str(pid): result.as_claim() for pid, result in partitions.items()},
        }
        if peer_index == self._local_index:
            self._local_store.commit(shuffle_id, producer, attempt, {pid: result.as_claim() for pid, result in partitions.items()})
        else:
            self.action(peer_index, "commit", body)

    def probe(self, peer_index: int, timeout: float = 2.0) -> str | None:
        """One health call without retries: None when the peer answers, else why not."""
        try:
            list(self._connection(peer_index).do_action(flight.Action("health", b""), options=flight.FlightCallOptions(timeout=timeout)))
            return None
        except (flight.FlightError, pa.ArrowException, ConnectionError) as exc:
            self._drop_connection(peer_index)
            return _first_line(exc)

    def wait_ready(self, timeout: float) -> None:
        """Poll every peer's health action until all answer, or raise naming the ones that did not."""
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.peers)))
        last_errors: dict[int, str] = {}
        while pending:
            for peer_index in sorted(pending):
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
            if pending:
                time.sleep(0.01)  # poll interval between health probes: the start skew between agents


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else "unknown error"
    return text.splitlines()[0] if text else type(exc).__name__
