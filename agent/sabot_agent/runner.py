"""One agent: Flight + HTTP servers, and the job: read share -> map on task slots (native partial
aggregate + hash partition) -> DoPut partition p to peers[p mod N] -> commit to every peer -> wait for
every producer's commit -> reduce (native final aggregate, or hash join) -> atomic output part file."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sabot_agent.client import ShuffleClient
from sabot_agent.flight_server import ShuffleFlightServer
from sabot_agent.http_server import AgentHttpServer
from sabot_agent.inputs import read_share, resolve_schema
from sabot_agent.jobspec import JobSpec
from sabot_agent.metrics import AgentMetrics
from sabot_agent.store import PartitionStore, combine_checksums
from sabot_agent.tickets import shuffle_id

OUTPUT_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "ipc": "arrow"}
JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer", "full": "full outer"}
MAX_CONCURRENT_PUTS = 4
# while waiting for commits, producers that have not committed are probed this often; this many
# failed probes in a row fail the job instead of waiting for the shuffle timeout
PEER_PROBE_SECONDS = 2.0
PEER_PROBE_FAILURES = 2
# map with aggregation: chunks are pre-aggregated one by one when they reduce at least this much
PER_CHUNK_REDUCTION = 8
PER_CHUNK_SAMPLE_ROWS = 1 << 16


@dataclass
class AgentConfig:
    agent_index: int = 0
    agent_count: int = 1
    bind_host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    flight_port: int = 0
    http_port: int = 0
    slots: int = 1
    threads: int | None = None
    memory_budget_bytes: int | None = None
    spill_dir: str = "/tmp/sabot-spill"
    peers: list[str] = field(default_factory=list)
    attempt: int = 0
    startup_timeout: float = 60.0
    shuffle_timeout: float = 300.0


class JobFailed(RuntimeError):
    """The job failed in a phase; the message is the one-line reason."""


class Agent:
    def __init__(self, config: AgentConfig, job: JobSpec | None):
        import sabot_native  # the kernels are required; there is no Python fallback

        self.native = sabot_native
        self.config = config
        self.job = job
        threads = config.threads or sabot_native.default_thread_count()
        pa.set_cpu_count(threads)
        self.executor = sabot_native.MorselExecutor(threads=threads)
        self.slots = sabot_native.TaskSlotManager(slots=config.slots, executor=self.executor)
        self.metrics = AgentMetrics(job.name if job else "none", config.agent_index)
        self.store = PartitionStore(
            config.memory_budget_bytes, os.path.join(config.spill_dir, f"agent-{config.agent_index}"), sabot_native.batch_checksum
        )
        self.status = {
            "agent": config.agent_index,
            "phase": "starting",
            "rows_in": 0,
            "rows_mapped": 0,
            "rows_shuffled": 0,
            "rows_out": 0,
            "error": None,
        }
        self._status_lock = threading.Lock()
        self._bytes_sent = 0
        self.flight = ShuffleFlightServer(f"grpc+tcp://{config.bind_host}:{config.flight_port}", self.store, self.metrics, self._health)
        self.flight_port = self.flight.port
        self.flight.set_advertised_location(f"grpc+tcp://{config.advertise_host}:{self.flight_port}")
        self._serving = False
        self.http = AgentHttpServer(config.bind_host, config.http_port, self.metrics.registry, self.snapshot, lambda: self._serving)
        self.metrics.add_live_source(self._live_values)

    def _health(self) -> dict:
        return {"status": "ok", "agent": self.config.agent_index, "phase": self.status["phase"]}

    def _live_values(self) -> dict:
        executor = self.executor.stats()
        store = self.store.stats()
        return {
            "slots": self.slots.total,
            "slots_busy": self.slots.busy,
            "executor_threads": executor["threads"],
            "executor_queue_depth": executor["queue_depth"],
            "executor_morsels": executor["morsels_processed"],
            "store_bytes": store["bytes"],
            "store_memory_bytes": store["memory_bytes"],
            "store_batches": store["batches"],
            "store_partitions": store["partitions"],
            "spilled_bytes": store["spilled_bytes"],
            "backpressure_seconds": store["backpressure_seconds"],
        }

    def snapshot(self) -> dict:
        with self._status_lock:
            return dict(self.status)

    def _update(self, **values) -> None:
        with self._status_lock:
            for name, value in values.items():
                if name.startswith("rows_") and name != "rows_out":
                    self.status[name] += value
                else:
                    self.status[name] = value

    def start(self) -> None:
        # the Flight server listens from construction on, so the agent is ready once HTTP answers
        self._serving = True
        self.http.start()

    def stop(self) -> None:
        self._serving = False
        self.http.stop()
        self.flight.shutdown()
        self.slots.close()
        self.executor.shutdown()

    # -- the job ------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run the job; a failure is shown in /status as phase "failed" and raised as JobFailed."""
        try:
            return self._run()
        except JobFailed as exc:
            self._update(phase="failed", error=str(exc))
            raise

    def _run(self) -> dict:
        job, config = self.job, self.config
        if len(config.peers) != config.agent_count:
            raise JobFailed(f"peer list has {len(config.peers)} entries for {config.agent_count} agents")
        phases: dict[str, float] = {}
        started = time.monotonic()
        client = ShuffleClient(
            config.peers, self.native.batch_checksum, metrics=self.metrics, local_store=(config.agent_index, self.store)
        )
        try:
            self._phase(phases, "connect", client.wait_ready, config.startup_timeout)
            if job.aggregate is not None:
                output = self._run_aggregate(client, phases)
            else:
                output = self._run_join(client, phases)
            files = self._phase(phases, "write", write_output, output, job, config.agent_index)
        finally:
            client.close()
        self._update(phase="done", rows_out=output.num_rows)
        spilled = self.store.stats()["spilled_bytes"]
        for stage in list(self.store.stats()["commits"]):
            self.store.drop_shuffle(stage)
        status = self.snapshot()
        return {
            "agent": config.agent_index,
            "status": "Succeeded",
            "rows_in": status["rows_in"],
            "rows_mapped": status["rows_mapped"],
            "rows_shuffled": status["rows_shuffled"],
            "rows_out": output.num_rows,
            "bytes_shuffled": self._bytes_sent,
            "spilled_bytes": spilled,
            "phases": {name: round(seconds, 4) for name, seconds in phases.items()},
            "seconds": round(time.monotonic() - started, 4),
            "output_files": files,
            "checksum": combine_checksums(self.native.batch_checksum(batch) for batch in output.to_batches()),
        }

    def _phase(self, phases: dict, name: str, body, *args):
        """Run body(*args) as a named phase: timed, shown in /status, and any error becomes a one-line JobFailed."""
        self._update(phase=name)
        started = time.monotonic()
        try:
            return body(*args)
        except JobFailed:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise JobFailed(f"agent {self.config.agent_index}: {name} failed: {text}") from exc
        finally:
            phases[name] = phases.get(name, 0.0) + time.monotonic() - started

    def _read(self, input_name: str) -> pa.Table:
        spec = self.job.inputs[input_name]
        schema = resolve_schema(spec)
        table = pa.Table.from_batches(list(read_share(spec, self.config.agent_index, self.config.agent_count)), schema=schema)
        self._update(rows_in=table.num_rows)
        return table

    def _map(self, table: pa.Table, keys: list[str], task: str, aggregations=None) -> tuple[list[list[pa.RecordBatch]], pa.Schema]:
        """Split the table over the task slots; each task (pre-aggregates and) hash-partitions its piece."""
        native, partitions = self.native, self.job.partitions
        pieces = max(1, min(self.config.slots, table.num_rows))
        step = -(-table.num_rows // pieces) if table.num_rows else 0
        slices = [table.slice(offset, step) for offset in range(0, table.num_rows, step)] if step else []

        def map_task(piece: pa.Table) -> list[pa.RecordBatch]:
            with self.slots.acquire(task):
                if aggregations is not None:
                    # a state column equal to an earlier one is not shuffled (restored by the reducer)
                    piece = self._partial(piece, keys, aggregations).drop_columns(list(duplicate_states(aggregations)))
                # slices are never empty, so the combined piece is exactly one batch
                batch = piece.combine_chunks().to_batches()[0]
                return native.partition_batch(batch, keys, partitions, executor=self.executor)

        with ThreadPoolExecutor(max_workers=self.config.slots, thread_name_prefix="map") as pool:
            outputs = list(pool.map(map_task, slices))
        schema = table.schema
        if aggregations is not None:
            schema = native.aggregate_partial(table.schema.empty_table(), keys, aggregations, executor=self.executor).schema
            schema = pa.schema([field for field in schema if field.name not in duplicate_states(aggregations)])
        by_partition = [[output[p] for output in outputs if output[p].num_rows] for p in range(partitions)]
        self._update(rows_mapped=sum(batch.num_rows for batches in by_partition for batch in batches))
        return by_partition, schema

    def _partial(self, piece: pa.Table, keys: list[str], aggregations) -> pa.Table:
        """Partial aggregate of a piece. With few groups (a sample of the first chunk has at most
        1/PER_CHUNK_REDUCTION as many groups as rows), each chunk is pre-aggregated on its own and the
        small partials are concatenated: this skips copying the whole piece into one batch first, and the
        reducer merges the repeated groups anyway. Otherwise the piece is aggregated in one call, so no
        more partial rows than groups are shuffled."""
        native = self.native
        chunks = [chunk for chunk in piece.to_batches() if chunk.num_rows]
        if len(chunks) > 1:
            sample = chunks[0].slice(0, PER_CHUNK_SAMPLE_ROWS)
            groups = native.aggregate_partial(sample, keys, aggregations, executor=self.executor).num_rows
            if groups * PER_CHUNK_REDUCTION <= sample.num_rows:
                return pa.concat_tables([native.aggregate_partial(chunk, keys, aggregations, executor=self.executor) for chunk in chunks])
        return native.aggregate_partial(piece, keys, aggregations, executor=self.executor)

    def _push(self, client: ShuffleClient, stage: str, by_partition: list[list[pa.RecordBatch]]) -> None:
        """DoPut every partition to its owner, then commit to every peer what it was sent."""
        config = self.config

        sent = client.put_partitions(stage, dict(enumerate(by_partition)), config.agent_index, config.attempt, MAX_CONCURRENT_PUTS)
        results = [sent[pid] for pid in range(len(by_partition))]
        self._update(rows_shuffled=sum(result.rows for result in results))
        self._bytes_sent += sum(result.bytes for result in results)
        for peer in range(config.agent_count):
            owned = {pid: results[pid] for pid in range(len(results)) if pid % config.agent_count == peer}
            client.commit(peer, stage, config.agent_index, config.attempt, owned)

    def _owned_partitions(self) -> list[int]:
        return [pid for pid in range(self.job.partitions) if pid % self.config.agent_count == self.config.agent_index]

    def _wait(self, client: ShuffleClient, stage: str) -> None:
        """Wait for every producer's commit; a producer that stops answering fails the wait early."""
        next_probe = time.monotonic() + PEER_PROBE_SECONDS
        failures: dict[int, int] = {}

        def peer_failure(missing: list[int]) -> str | None:
            nonlocal next_probe
            if time.monotonic() < next_probe:
                return None
            next_probe = time.monotonic() + PEER_PROBE_SECONDS
            for peer in missing:
                error = client.probe(peer)
                failures[peer] = failures.get(peer, 0) + 1 if error else 0
                if failures[peer] >= PEER_PROBE_FAILURES:
                    return f"peer {peer} ({self.config.peers[peer]}) stopped answering before committing {stage!r}: {error}"
            return None

        self.store.wait_for_commits(stage, self.config.agent_count, self.config.shuffle_timeout, peer_failure)

    def _map_and_push(
        self, client: ShuffleClient, phases: dict, stage: str, input_name: str, keys: list[str], aggregations=None
    ) -> pa.Schema:
        """Read this agent's share of an input, map it, push every partition; returns the shuffled schema."""
        self.store.register(stage)
        table = self._phase(phases, "read", self._read, input_name)
        by_partition, schema = self._phase(phases, "map", self._map, table, keys, f"map:{input_name}", aggregations)
        self._phase(phases, "shuffle", self._push, client, stage, by_partition)
        return schema

    def _run_aggregate(self, client: ShuffleClient, phases: dict) -> pa.Table:
        aggregate = self.job.aggregate
        stage = shuffle_id(self.job.name, self.config.attempt, "aggregate")
        keys = list(aggregate.group_by)
        aggregations = [(item.column, item.function, item.output) for item in aggregate.aggregations]
        partial_schema = self._map_and_push(client, phases, stage, aggregate.input, keys, aggregations)
        self._phase(phases, "wait", self._wait, client, stage)

        def reduce() -> pa.Table:
            partials = restore_duplicate_states(self.store.read_table(stage, self._owned_partitions(), schema=partial_schema), aggregations)
            with self.slots.acquire("reduce:aggregate"):
                result = self.native.aggregate_final([partials], keys, aggregations, executor=self.executor)
            self._update(rows_out=result.num_rows)
            return result

        return self._phase(phases, "reduce", reduce)

    def _run_join(self, client: ShuffleClient, phases: dict) -> pa.Table:
        join = self.job.join
        keys = list(join.on)
        stages = {side: shuffle_id(self.job.name, self.config.attempt, f"join-{side}") for side in ("left", "right")}
        schemas = {
            side: self._map_and_push(client, phases, stages[side], input_name, keys)
            for side, input_name in (("left", join.left), ("right", join.right))
        }
        for stage in stages.values():
            self._phase(phases, "wait", self._wait, client, stage)

        def reduce() -> pa.Table:
            left = self.store.read_table(stages["left"], self._owned_partitions(), schema=schemas["left"])
            right = self.store.read_table(stages["right"], self._owned_partitions(), schema=schemas["right"])
            with self.slots.acquire("reduce:join"):
                result = left.join(right, keys=keys, join_type=JOIN_TYPES[join.how], right_suffix="_right")
            self._update(rows_out=result.num_rows)
            return result

        return self._phase(phases, "reduce", reduce)


# the partial state columns of each aggregate function and the primitive each one holds
_STATES = {"count": (("count", "count"),), "sum": (("sum", "sum"),), "min": (("min", "min"),), "max": (("max", "max"),),
           "mean": (("sum", "sum"), ("count", "count"))}  # fmt: skip


def duplicate_states(aggregations) -> dict[str, str]:
    """Partial state columns that hold the same values as an earlier one (e.g. the sum of `total: sum(v)`
    and of `average: mean(v)`): {duplicate: the earlier column}. They are dropped before the shuffle."""
    first: dict[tuple[str, str], str] = {}
    duplicates: dict[str, str] = {}
    for column, function, output in aggregations:
        for suffix, primitive in _STATES[function]:
            name = f"{output}__{suffix}"
            source = first.setdefault((column, primitive), name)
            if source != name:
                duplicates[name] = source
    return duplicates


def restore_duplicate_states(partials: pa.Table, aggregations) -> pa.Table:
    """Add back (zero-copy, as references) the state columns duplicate_states dropped."""
    duplicates = duplicate_states(aggregations)
    for name, source in duplicates.items():
        partials = partials.append_column(name, partials.column(source))
    return partials


def write_output(table: pa.Table, job: JobSpec, agent_index: int) -> list[str]:
    """Write this agent's part file via a temporary name and a rename, so readers never see half a file."""
    output = job.output
    if "://" in output.path:
        filesystem, base = pafs.FileSystem.from_uri(output.path)
    else:
        filesystem, base = pafs.LocalFileSystem(), os.path.abspath(output.path)
    base = base.rstrip("/")
    filesystem.create_dir(base, recursive=True)
    name = f"part-{agent_index:05d}.{OUTPUT_EXTENSIONS[output.format]}"
    temporary = f"{base}/.{name}.tmp-{os.getpid()}"
    final = f"{base}/{name}"
    try:
        with filesystem.open_output_stream(temporary) as sink:
            if output.format == "parquet":
                pq.write_table(table, sink)
            elif output.format == "csv":
                pa_csv.write_csv(table, sink)
            else:
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
        filesystem.move(temporary, final)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except OSError:
            pass
        raise
    return [final if "://" not in output.path else f"{output.path.rstrip('/')}/{name}"]
