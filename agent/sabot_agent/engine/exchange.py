"""The exchange between stages: producers keep their outputs, consumers pull what they own.

A producer writes each task's output into its own partition store, split into the exchange's
partitions (hash: by the native seeded hash of the key columns; broadcast and gather: one partition;
forward: the partition of its own index), then seals the stage: the store records per partition the
rows, bytes and checksum it holds. Outputs stay there until the job ends, so a consumer that comes
back (recovery) can fetch them again.

A consumer of partition p asks every producer of the stage for its seal (`stage_status`, a long poll
with a deadline), then fetches p from each producer that holds rows of it with DoGet (its own outputs
straight from its store) and checks the rows and checksum against the producer's seal: a partition
that does not match raises, so a lost or altered message never becomes a result. The seal brings the
consumer's partitions along when they are small (INLINE_BYTES in all): a DoGet of a few rows cost
1.5-5 ms between agents, most of a small stage's exchange.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from sabot_agent.client import ShuffleError
from sabot_agent.store import PartitionStore
from sabot_agent.tables import concat_tables
from sabot_agent.tickets import PartitionKey, PutMetadata, shuffle_id

# a long poll for a producer's seal waits at most this long per call
STATUS_POLL_SECONDS = 2.0
# a peer that stopped answering is asked again this often while it may be replaced
RECOVERY_POLL_SECONDS = 0.2
# the marker every agent seals when its stages are done (it keeps serving its outputs until all are)
DONE_STAGE = "done"
# batches of a partition are merged into messages of about this size before they are stored: one
# Flight message costs tens of microseconds, so small ones would dominate a DoGet
MESSAGE_BYTES = 1 << 20
# a producer sends a consumer's partitions with its seal when they hold at most this many bytes in all
INLINE_BYTES = 256 << 10


class ExchangeError(RuntimeError):
    """A partition that cannot be had: a producer that never sealed, or data that does not match its seal."""


def stage_shuffle_id(job: str, attempt: int, stage: int | str) -> str:
    return shuffle_id(job, attempt, f"stage-{stage}")


def done_marker(job: str, attempt: int) -> str:
    return stage_shuffle_id(job, attempt, DONE_STAGE)


def seal_done(store: PartitionStore, job: str, attempt: int, agent_index: int, part: dict | None) -> None:
    """Seal this agent's done marker: its stages are over; `part` (rows, bytes, checksum of the result
    part it staged) travels in the seal under the agent's own index, for agent 0 to publish."""
    marker = done_marker(job, attempt)
    store.register(marker)
    store.seal(marker, agent_index, attempt, pa.schema([]), {agent_index: part} if part else None)


class JobAlreadyFinished(Exception):
    """This run published the job's result while this agent (a replacement) was still working: nothing
    it could compute is needed any more."""


@dataclass(frozen=True)
class Recovery:
    """How an agent treats a peer that stops answering. `replaceable`: a supervisor (`sabot run`,
    the operator) replaces a failed agent with one of the same index and address, so a peer that stops
    answering is waited for until `timeout` instead of failing the job; `finished` tells whether this
    run already published its result (then a replacement stops waiting: its work is not needed)."""

    replaceable: bool = False
    finished: Callable[[], bool] = lambda: False

    def wait_for(self, peer: int, what: str, error: Exception, deadline: float, timeout: float) -> None:
        """After a failed call to `peer`: pause before asking again, or raise when asking again is pointless."""
        if not self.replaceable:
            raise ExchangeError(f"agent {peer} stopped answering while {what}: {error}") from None
        if self.finished():
            raise JobAlreadyFinished()
        if time.monotonic() >= deadline:
            raise ExchangeError(f"agent {peer} stopped answering while {what} and was not replaced within {timeout:g}s: {error}") from None
        time.sleep(RECOVERY_POLL_SECONDS)


def collect_done(client, job: str, attempt: int, agent_count: int, timeout: float, recovery: Recovery) -> dict[int, dict]:
    """Agent 0: wait for every other agent's done marker and return the result parts they staged
    (agent -> claim; an agent that staged none is absent). A peer being replaced is waited for: its
    replacement stages its part again and seals its own marker."""
    marker = done_marker(job, attempt)
    deadline = time.monotonic() + timeout
    parts: dict[int, dict] = {}
    for peer in range(1, agent_count):
        while True:
            try:
                answer = client.stage_status(peer, marker, [peer], STATUS_POLL_SECONDS)
            except ShuffleError as exc:
                recovery.wait_for(peer, "agent 0 waited for it to finish", exc, deadline, timeout)
                continue
            if answer.get("sealed"):
                claim = answer["partitions"][str(peer)]
                if claim["bytes"]:
                    parts[peer] = claim
                break
            if time.monotonic() >= deadline:
                raise ExchangeError(f"agent {peer} did not finish within {timeout:g}s")
    return parts


def await_done(client, job: str, attempt: int, agent_index: int, timeout: float, recovery: Recovery) -> None:
    """A non-zero agent: keep serving this agent's stage outputs until agent 0's done marker, sealed
    only after every agent sealed theirs and the result is published, says the job is over. The poll
    asks for the marker's entry of this agent, which tells agent 0 that this agent knows. Agent 0
    gone: the wait ends once the result is published (it died after publishing) or, without
    replacements, at once (agent 0 failed: its own exit code tells)."""
    marker = done_marker(job, attempt)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.stage_status(0, marker, [agent_index], STATUS_POLL_SECONDS, attempts=1).get("sealed"):
                return
        except ShuffleError as exc:
            if not recovery.replaceable:
                return
            try:
                recovery.wait_for(0, "this agent waited for the job to end", exc, deadline, timeout)
            except JobAlreadyFinished:
                return
            continue
        if time.monotonic() >= deadline:
            raise ExchangeError(f"agent 0 did not finish within {timeout:g}s")


def await_peers_told(told: Callable[[int, float], bool], client, agent_count: int, timeout: float) -> None:
    """Agent 0, once its done marker is sealed: keep serving it until every peer has been told (agent
    0 answered the peer's poll of the marker: `told(peer, wait)`) or has stopped answering, or until
    `timeout`; the result is published either way."""
    deadline = time.monotonic() + timeout
    for peer in range(1, agent_count):
        while time.monotonic() < deadline and not told(peer, RECOVERY_POLL_SECONDS):
            try:
                client.action(peer, "health", timeout=STATUS_POLL_SECONDS, attempts=1)
            except ShuffleError:
                break


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


class StageOutput:
    """One stage's output of this agent, written task by task, then sealed."""

    def __init__(self, store: PartitionStore, shuffle: str, producer: int, attempt: int, partitions: int, kind: str,
                 keys: list[str], partition_batch: Callable, own_partition: int):  # fmt: skip
        self.store = store
        self.shuffle = shuffle
        self.producer = producer
        self.attempt = attempt
        self.partitions = partitions
        self.kind = kind
        self.keys = keys
        self._partition_batch = partition_batch
        self._own_partition = own_partition
        self._lock = threading.Lock()
        self._sequences: dict[int, int] = {}
        self._pending: dict[int, list[pa.RecordBatch]] = {}
        self._pending_bytes: dict[int, int] = {}
        self.schema: pa.Schema | None = None
        self.rows = 0
        self.bytes = 0
        store.register(shuffle)

    def write(self, table: pa.Table) -> None:
        with self._lock:
            if self.schema is None:
                self.schema = table.schema
        if table.num_rows == 0:
            return
        if self.kind == "hash":
            for batch in _batches(table):
                for partition, part in enumerate(self._partition_batch(batch, self.keys, self.partitions)):
                    if part.num_rows:
                        self._append(partition, part)
        else:
            partition = self._own_partition if self.kind == "forward" else 0
            for batch in _batches(table):
                self._append(partition, batch)

    def _append(self, partition: int, batch: pa.RecordBatch) -> None:
        """Queue a batch for its partition; store the partition's queue once it makes a message."""
        with self._lock:
            self._pending.setdefault(partition, []).append(batch)
            self._pending_bytes[partition] = self._pending_bytes.get(partition, 0) + batch.nbytes
            if self._pending_bytes[partition] < MESSAGE_BYTES:
                return
            batches = self._pending.pop(partition)
            del self._pending_bytes[partition]
        self._store(partition, batches)

    def _store(self, partition: int, batches: list[pa.RecordBatch]) -> None:
        message = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
        with self._lock:
            sequence = self._sequences.get(partition, 0)
            self._sequences[partition] = sequence + 1
            self.rows += message.num_rows
            self.bytes += message.nbytes
        key = PartitionKey.for_shuffle(self.shuffle, partition)
        self.store.append(key, PutMetadata(self.shuffle, self.producer, self.attempt, sequence), message)

    def seal(self, schema: pa.Schema) -> dict[int, dict]:
        with self._lock:
            pending, self._pending, self._pending_bytes = self._pending, {}, {}
        for partition, batches in sorted(pending.items()):
            self._store(partition, batches)
        return self.store.seal(self.shuffle, self.producer, self.attempt, self.schema or schema)


def _batches(table: pa.Table) -> list[pa.RecordBatch]:
    return [batch for batch in table.to_batches() if batch.num_rows]


@dataclass
class _Seal:
    schema: pa.Schema
    claims: dict[int, dict]
    instance: str = ""  # the producer process that sealed: a replacement seals anew
    inlined: dict[int, pa.Table] = field(default_factory=dict)  # partitions sent with the seal, until read


class ExchangeReader:
    """Reads partitions of upstream stages for this agent's tasks.

    With replaceable peers, a producer that stops answering (or answers with data that does not match
    the seal it gave) is asked again for its seal until it answers: a replacement of the same index
    recomputes its outputs and seals them, and the partition is fetched from it against that new seal.
    The same producer instance answering with mismatching data is an error, never retried."""

    def __init__(self, job: str, attempt: int, agent_index: int, store: PartitionStore, client, checksum: Callable,
                 producers: Callable[[int], list[int]], wanted: Callable[[int], list[int]], timeout: float,
                 on_fetch: Callable[[int, int, int, str], None] | None = None, recovery: Recovery = Recovery(),
                 plan_fingerprint: str = ""):  # fmt: skip
        self.job = job
        self.plan_fingerprint = plan_fingerprint  # producers must name the same in their seals ("": not checked)
        self.attempt = attempt
        self.agent_index = agent_index
        self.store = store
        self.client = client
        self._checksum = checksum
        self._producers = producers
        self._wanted = wanted
        self.timeout = timeout
        self._on_fetch = on_fetch
        self._recovery = recovery
        self._seals: dict[tuple[int, int], _Seal] = {}
        self._lock = threading.Lock()

    def shuffle(self, stage: int) -> str:
        return stage_shuffle_id(self.job, self.attempt, stage)

    def _seal(self, stage: int, producer: int, stale: _Seal | None = None) -> _Seal:
        """The producer's seal of its output of a stage; with `stale`, a seal given after that one."""
        with self._lock:
            known = self._seals.get((stage, producer))
        if known is not None and known is not stale:
            return known
        shuffle = self.shuffle(stage)
        deadline = time.monotonic() + self.timeout
        while True:
            if producer == self.agent_index:
                found = self.store.sealed(shuffle, producer, max(0.0, deadline - time.monotonic()))
                seal = _Seal(*found) if found is not None else None
            else:
                try:
                    answer = self.client.stage_status(producer, shuffle, self._wanted(stage), STATUS_POLL_SECONDS, inline_bytes=INLINE_BYTES)
                except ShuffleError as exc:
                    self._recovery.wait_for(producer, f"this agent waited for its stage {stage}", exc, deadline, self.timeout)
                    continue
                seal = None
                if answer.get("sealed"):
                    self._check_plan(producer, answer.get("plan", ""))
                    claims = {int(pid): claim for pid, claim in answer["partitions"].items()}
                    seal = _Seal(schema_from_text(answer["schema"]), claims, answer.get("instance", ""), answer.get("tables", {}))
            if seal is not None:
                with self._lock:
                    self._seals[(stage, producer)] = seal
                return seal
            if time.monotonic() >= deadline:
                raise ExchangeError(f"agent {producer} did not finish stage {stage} within {self.timeout:g}s")

    def _check_plan(self, producer: int, theirs: str) -> None:
        if self.plan_fingerprint and theirs != self.plan_fingerprint:
            raise ExchangeError(
                f"agent {producer} planned this job differently (plan {theirs or 'unknown'}, this agent's {self.plan_fingerprint}): "
                "the agents saw different input files or run different versions"
            )

    def schema(self, stage: int) -> pa.Schema:
        return self._seal(stage, self._producers(stage)[0]).schema

    def read(self, stage: int, partition: int) -> pa.Table:
        """Partition `partition` of a stage's output, from every producer."""
        tables = []
        schema = None
        for producer in self._producers(stage):
            seal = self._seal(stage, producer)
            schema = schema or seal.schema
            table = self._read_from(stage, producer, partition, seal)
            if table is not None:
                tables.append(table)
        if not tables:
            return (schema or self.schema(stage)).empty_table()
        return concat_tables(tables)

    def _read_from(self, stage: int, producer: int, partition: int, seal: _Seal) -> pa.Table | None:
        """The producer's part of the partition (None: it holds no rows of it), verified against its
        seal; fetched again from a replacement when the producer is lost on the way."""
        deadline = time.monotonic() + self.timeout
        while True:
            claim = seal.claims.get(partition)
            if not claim or claim["rows"] == 0:
                return None
            try:
                return self._fetch(stage, producer, partition, claim, seal)
            except (ShuffleError, ExchangeError) as exc:
                if producer == self.agent_index or not self._recovery.replaceable:
                    raise ExchangeError(str(exc)) from None
                fresh = self._seal(stage, producer, stale=seal)
                if fresh.instance == seal.instance:
                    if isinstance(exc, ExchangeError):
                        raise  # the producer that sealed it sent other data: never retried
                    self._recovery.wait_for(producer, f"this agent fetched its stage {stage}", exc, deadline, self.timeout)
                seal = fresh

    def _fetch(self, stage: int, producer: int, partition: int, claim: dict, seal: _Seal) -> pa.Table:
        shuffle = self.shuffle(stage)
        with self._lock:
            inlined = seal.inlined.pop(partition, None)
        if producer == self.agent_index:
            table, source = self.store.read_table(shuffle, [partition]), "local"
        elif inlined is not None:
            table, source = inlined, "stage_status"
        else:
            table, source = self.client.fetch(producer, shuffle, partition), "do_get"
        rows = table.num_rows
        checksum = self._checksum(table)  # of the whole table: the sum over its batches, computed morsel-parallel
        if rows != claim["rows"] or checksum != claim["checksum"]:
            raise ExchangeError(
                f"partition {partition} of stage {stage} from agent {producer}: {rows} rows arrived, the producer sealed {claim['rows']}"
                + ("" if rows != claim["rows"] else " (checksum mismatch)")
            )
        if self._on_fetch is not None:
            self._on_fetch(stage, rows, table.nbytes, source)
        return table
