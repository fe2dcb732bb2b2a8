"""The partition store: the stage outputs an agent produced, kept until the job ends.

Append-only: a partition's batches are keyed by (producer, attempt, sequence), so nothing is stored
twice, and nothing is ever overwritten. Sealing a stage output records, per partition, the rows,
bytes and checksum the store holds (the checksum is computed as each batch is appended); only sealed
outputs are read, and consumers verify what they fetch against the seal. Over the memory budget, the
largest in-memory partition is spilled to an Arrow IPC file; while a spill runs and memory is above
the hard limit, appends wait (back-pressure on the tasks that produce the batches).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa

from sabot_agent.tickets import PartitionKey, PutMetadata, fnv1a_64

CHECKSUM_MASK = (1 << 64) - 1
# appends block once memory exceeds the budget by this factor while a spill is still running
HARD_LIMIT_FACTOR = 1.5


class StoreError(RuntimeError):
    """A request the store refuses (unknown shuffle, a conflicting schema, a full spill directory, ...)."""


class UnknownShuffleError(StoreError):
    pass


class SpillError(StoreError):
    """A spill file could not be written; the message names the spill directory and why."""


def combine_checksums(checksums) -> int:
    """Checksum of a set of messages: the sum of their batch checksums modulo 2**64 (order-free)."""
    return sum(checksums) & CHECKSUM_MASK


@dataclass
class _Entry:
    producer: int
    attempt: int
    sequence: int
    rows: int
    nbytes: int
    checksum: int
    batch: pa.RecordBatch | None
    spill_path: str | None = None
    spill_index: int = -1


@dataclass
class _Partition:
    entries: list[_Entry] = field(default_factory=list)
    seen: set[tuple[int, int, int]] = field(default_factory=set)
    memory_bytes: int = 0


@dataclass
class _Commit:
    attempt: int
    partitions: dict[int, dict]


@dataclass
class _Shuffle:
    shuffle_id: str
    schema: pa.Schema | None = None
    partitions: dict[int, _Partition] = field(default_factory=dict)
    commits: dict[int, _Commit] = field(default_factory=dict)


@dataclass
class StoreCounters:
    spilled_bytes: int = 0
    spill_files: int = 0
    backpressure_seconds: float = 0.0
    duplicate_messages: int = 0


class PartitionStore:
    def __init__(self, memory_budget_bytes: int | None, spill_dir: str, checksum: Callable[[pa.RecordBatch], int]):
        self.memory_budget_bytes = memory_budget_bytes
        self.spill_dir = spill_dir
        self._checksum = checksum
        self._cond = threading.Condition()
        self._shuffles: dict[int, _Shuffle] = {}
        self._memory_bytes = 0
        self._spilling = False
        self._spill_counter = 0
        self.counters = StoreCounters()

    # -- writes -------------------------------------------------------------------------------------

    def register(self, shuffle_id: str) -> None:
        """Make a shuffle known (a DoGet of it then returns its sealed data, possibly none)."""
        with self._cond:
            self._shuffle_for(shuffle_id)

    def _shuffle_for(self, shuffle_id: str) -> _Shuffle:
        shuffle_hash = fnv1a_64(shuffle_id)
        shuffle = self._shuffles.get(shuffle_hash)
        if shuffle is None:
            shuffle = self._shuffles[shuffle_hash] = _Shuffle(shuffle_id)
        elif shuffle.shuffle_id != shuffle_id:
            raise StoreError(f"shuffle id {shuffle_id!r} collides with {shuffle.shuffle_id!r} (hash {shuffle_hash})")
        return shuffle

    def append(self, key: PartitionKey, meta: PutMetadata, batch: pa.RecordBatch, nbytes: int | None = None) -> bool:
        """Store one message; False when (producer, attempt, sequence) was stored before (a retry).

        The checksum of the message is computed here, as it is stored (the native kernel runs without
        the GIL at several GB/s), so a commit is verified against exactly what the store holds."""
        if fnv1a_64(meta.shuffle_id) != key.shuffle_hash:
            raise StoreError(f"descriptor hash {key.shuffle_hash} does not match shuffle id {meta.shuffle_id!r}")
        checksum = self._checksum(batch)
        if nbytes is None:
            nbytes = batch.nbytes
        with self._cond:
            self._wait_below_hard_limit()
            shuffle = self._shuffle_for(meta.shuffle_id)
            if shuffle.schema is None:
                shuffle.schema = batch.schema
            elif not shuffle.schema.equals(batch.schema):
                raise StoreError(
                    f"partition {key.partition_id} of {meta.shuffle_id!r}: schema {batch.schema} differs from the shuffle's {shuffle.schema}"
                )
            committed = shuffle.commits.get(meta.producer)
            if committed is not None and committed.attempt == meta.attempt:
                raise StoreError(f"producer {meta.producer} attempt {meta.attempt} already committed {meta.shuffle_id!r}")
            partition = shuffle.partitions.setdefault(key.partition_id, _Partition())
            identity = (meta.producer, meta.attempt, meta.sequence)
            if identity in partition.seen:
                self.counters.duplicate_messages += 1
                return False
            partition.seen.add(identity)
            partition.entries.append(_Entry(meta.producer, meta.attempt, meta.sequence, batch.num_rows, nbytes, checksum, batch))
            partition.memory_bytes += nbytes
            self._memory_bytes += nbytes
            must_spill = self._over_budget() and not self._spilling
            if must_spill:
                self._spilling = True
        if must_spill:
            try:
                self._spill_until_within_budget()
            finally:
                with self._cond:
                    self._spilling = False
                    self._cond.notify_all()
        return True

    def _over_budget(self) -> bool:
        return self.memory_budget_bytes is not None and self._memory_bytes > self.memory_budget_bytes

    def _wait_below_hard_limit(self) -> None:
        if self.memory_budget_bytes is None:
            return
        hard_limit = self.memory_budget_bytes * HARD_LIMIT_FACTOR
        started = time.monotonic()
        while self._spilling and self._memory_bytes > hard_limit:
            self._cond.wait()
        self.counters.backpressure_seconds += time.monotonic() - started

    def _spill_until_within_budget(self) -> None:
        while True:
            with self._cond:
                if not self._over_budget():
                    return
                victim = max(
                    ((shuffle, pid, partition) for shuffle in self._shuffles.values() for pid, partition in shuffle.partitions.items()),
                    key=lambda item: item[2].memory_bytes,
                    default=None,
                )
                if victim is None or victim[2].memory_bytes == 0:
                    return
                shuffle, partition_id, partition = victim
                pending = [entry for entry in partition.entries if entry.batch is not None]
                self._spill_counter += 1
                directory = os.path.join(self.spill_dir, str(fnv1a_64(shuffle.shuffle_id)))
                path = os.path.join(directory, f"{partition_id}-{self._spill_counter}.arrow")
                schema = shuffle.schema
            # the IPC write runs without the lock: readers still see the in-memory batches meanwhile
            try:
                os.makedirs(directory, exist_ok=True)
                with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    for entry in pending:
                        writer.write_batch(entry.batch)
            except OSError as exc:
                raise self._spill_failed(path, exc) from None
            with self._cond:
                freed = 0
                for index, entry in enumerate(pending):
                    entry.batch, entry.spill_path, entry.spill_index = None, path, index
                    freed += entry.nbytes
                partition.memory_bytes -= freed
                self._memory_bytes -= freed
                self.counters.spilled_bytes += freed
                self.counters.spill_files += 1

    def _spill_failed(self, path: str, exc: OSError) -> SpillError:
        """The error of a failed spill write. The partial file is removed: it holds nothing readable, and
        on a full disk the space it took lets the agent still write its failure reason."""
        try:
            os.remove(path)
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SpillError(f"spill directory {self.spill_dir} is full: {os.strerror(exc.errno)}")
        return SpillError(f"cannot write spill file {path}: {os.strerror(exc.errno) if exc.errno else exc}")

    def drop_shuffle(self, shuffle_id: str) -> bool:
        with self._cond:
            shuffle = self._shuffles.pop(fnv1a_64(shuffle_id), None)
            if shuffle is None:
                return False
            for partition in shuffle.partitions.values():
                self._memory_bytes -= partition.memory_bytes
            self._cond.notify_all()
        shutil.rmtree(os.path.join(self.spill_dir, str(fnv1a_64(shuffle_id))), ignore_errors=True)
        return True

    # -- reads --------------------------------------------------------------------------------------

    def _committed_entries(self, key: PartitionKey) -> tuple[_Shuffle, list[_Entry]]:
        with self._cond:
            shuffle = self._shuffles.get(key.shuffle_hash)
            if shuffle is None:
                raise UnknownShuffleError(f"unknown shuffle hash {key.shuffle_hash}: nothing was sealed for it here")
            partition = shuffle.partitions.get(key.partition_id, _Partition())
            attempts = {producer: commit.attempt for producer, commit in shuffle.commits.items()}
            entries = [entry for entry in partition.entries if attempts.get(entry.producer) == entry.attempt]
            return shuffle, entries

    def schema(self, key: PartitionKey) -> pa.Schema:
        shuffle, _ = self._committed_entries(key)
        return shuffle.schema if shuffle.schema is not None else pa.schema([])

    def read(self, key: PartitionKey) -> Iterator[pa.RecordBatch]:
        """Every committed batch of a partition, in memory or spilled, in arrival order."""
        _, entries = self._committed_entries(key)
        open_files: dict[str, pa.ipc.RecordBatchFileReader] = {}
        for entry in entries:
            batch = entry.batch
            if batch is None:
                reader = open_files.get(entry.spill_path)
                if reader is None:
                    reader = open_files[entry.spill_path] = pa.ipc.open_file(pa.memory_map(entry.spill_path, "r"))
                batch = reader.get_batch(entry.spill_index)
            yield batch

    def read_table(self, shuffle_id: str, partition_ids, schema: pa.Schema | None = None) -> pa.Table:
        batches = []
        for partition_id in partition_ids:
            batches.extend(self.read(PartitionKey.for_shuffle(shuffle_id, partition_id)))
        with self._cond:
            shuffle = self._shuffles.get(fnv1a_64(shuffle_id))
            known = shuffle.schema if shuffle is not None else None
        return pa.Table.from_batches(batches, schema=known or schema)

    # -- stage outputs: what a producer keeps of its own stage outputs for its consumers

    def seal(self, shuffle_id: str, producer: int, attempt: int, schema: pa.Schema, extra: dict[int, dict] | None = None) -> dict[int, dict]:
        """Commit everything `producer` appended to the shuffle: the claims (rows, bytes, checksum per
        partition) consumers verify what they fetch against. An output without rows keeps its schema.
        `extra` claims are recorded as given (a marker's facts about data held elsewhere)."""
        with self._cond:
            shuffle = self._shuffle_for(shuffle_id)
            if shuffle.schema is None:
                shuffle.schema = schema
            claims: dict[int, dict] = {}
            for partition_id, partition in shuffle.partitions.items():
                entries = [entry for entry in partition.entries if entry.producer == producer and entry.attempt == attempt]
                claims[partition_id] = {
                    "rows": sum(entry.rows for entry in entries),
                    "bytes": sum(entry.nbytes for entry in entries),
                    "checksum": combine_checksums(entry.checksum for entry in entries),
                }
            claims.update(extra or {})
            shuffle.commits[producer] = _Commit(attempt, claims)
            self._cond.notify_all()
            return claims

    def sealed(self, shuffle_id: str, producer: int, timeout: float) -> tuple[pa.Schema, dict[int, dict]] | None:
        """(schema, claims) once `producer` sealed the shuffle here, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                shuffle = self._shuffles.get(fnv1a_64(shuffle_id))
                commit = shuffle.commits.get(producer) if shuffle is not None and shuffle.shuffle_id == shuffle_id else None
                if commit is not None:
                    return shuffle.schema, commit.partitions
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def partition_infos(self) -> list[dict]:
        with self._cond:
            return [
                {
                    "shuffle_id": shuffle.shuffle_id,
                    "partition": partition_id,
                    "rows": sum(entry.rows for entry in partition.entries),
                    "bytes": sum(entry.nbytes for entry in partition.entries),
                    "batches": len(partition.entries),
                }
                for shuffle in self._shuffles.values()
                for partition_id, partition in sorted(shuffle.partitions.items())
            ]

    def stats(self) -> dict:
        with self._cond:
            partitions = [partition for shuffle in self._shuffles.values() for partition in shuffle.partitions.values()]
            return {
                "shuffles": len(self._shuffles),
                "partitions": len(partitions),
                "batches": sum(len(partition.entries) for partition in partitions),
                "rows": sum(entry.rows for partition in partitions for entry in partition.entries),
                "bytes": sum(entry.nbytes for partition in partitions for entry in partition.entries),
                "memory_bytes": self._memory_bytes,
                "memory_budget_bytes": self.memory_budget_bytes,
                "spilled_bytes": self.counters.spilled_bytes,
                "spill_files": self.counters.spill_files,
                "backpressure_seconds": self.counters.backpressure_seconds,
                "duplicate_messages": self.counters.duplicate_messages,
                "commits": {shuffle.shuffle_id: sorted(shuffle.commits) for shuffle in self._shuffles.values()},
            }
