"""One agent: Flight + HTTP servers, and the job.

The job: describe the inputs (every file's footer), plan the job file (every agent derives the same
distributed plan) while dialling every peer until it answers, run the plan's stages in order on the task slots
(engine.stages), write this agent's part of the result (agent 0 alone when the result is one ordered
file), report a JSON result with per-stage progress. Stage outputs stay in the partition store
until the job ends.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from sabot_agent import failpoints
from sabot_agent.client import ShuffleClient, location_of
from sabot_agent.engine.exchange import (ExchangeReader, JobAlreadyFinished, Recovery, await_done, await_peers_told, collect_done, done_marker,
                                         seal_done)
from sabot_agent.engine.stages import StageProgress, StageRunner
from sabot_agent.flight_server import ShuffleFlightServer
from sabot_agent.http_server import AgentHttpServer
from sabot_agent.inputs import DescribedInputs, InputInfo
from sabot_agent.jobspec import JobSpec
from sabot_agent.metrics import AgentMetrics
from sabot_agent.output import Part, ResultLocation, part_name
from sabot_agent.plan.job import QueryRefused, plan_fingerprint, plan_job_inputs
from sabot_agent.plan.physical import DistributedPlan
from sabot_agent.security import AgentTLS
from sabot_agent.store import PartitionStore
from sabot_agent.tables import concat_tables

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
    tls: AgentTLS | None = None  # mutual TLS between the agents; None: plaintext
    run_id: str = ""  # this run of the job; a replacement agent gets the same
    replaceable: bool = False  # a supervisor replaces failed agents: wait for a lost peer instead of failing


class JobFailed(RuntimeError):
    """The job failed in a phase; the message is the one-line reason."""


class JobRefused(JobFailed):
    """The planner refused the job over its inputs' schemas, before anything ran; the message names the field."""


class Agent:
    def __init__(self, config: AgentConfig, job: JobSpec | None, described: DescribedInputs | None = None):
        import sabot_native  # the kernels are required; there is no Python fallback

        self.native = sabot_native
        self.config = config
        self.job = job
        self.described = described  # the job's inputs as its validation described them
        # this process among the agents that may hold this index in the attempt (a replacement is another)
        self.instance = uuid.uuid4().hex[:12]
        threads = config.threads or sabot_native.default_thread_count()
        pa.set_cpu_count(threads)
        self.executor = sabot_native.MorselExecutor(threads=threads)
        self.slots = sabot_native.TaskSlotManager(slots=config.slots)
        self.metrics = AgentMetrics(job.name if job else "none", config.agent_index)
        self.store = PartitionStore(
            config.memory_budget_bytes, os.path.join(config.spill_dir, f"agent-{config.agent_index}"), sabot_native.batch_checksum
        )
        self.status = {"agent": config.agent_index, "phase": "starting", "rows_in": 0, "rows_shuffled": 0, "rows_out": 0,
                       "bytes_fetched": 0, "stages": {}, "error": None}  # fmt: skip
        self._status_lock = threading.Lock()
        tls = config.tls is not None
        self.flight = ShuffleFlightServer(location_of(f"{config.bind_host}:{config.flight_port}", tls), self.store, self.metrics, self._health,
                                          agent_index=config.agent_index, agent_count=config.agent_count, tls=config.tls,
                                          instance=self.instance)  # fmt: skip
        self.flight_port = self.flight.port
        self.flight.set_advertised_location(location_of(f"{config.advertise_host}:{self.flight_port}", tls))
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
            snapshot = dict(self.status)
            snapshot["stages"] = [dict(progress) for _, progress in sorted(self.status["stages"].items())]
            return snapshot

    def _update(self, **values) -> None:
        with self._status_lock:
            self.status.update(values)

    def start(self) -> None:
        # the Flight server listens from construction on, so the agent is ready once HTTP answers
        self._serving = True
        self.http.start()

    def stop(self) -> None:
        self._serving = False
        self.http.stop()
        self.flight.shutdown()
        # outputs are served until the server stops (a peer may still ask for a done marker); then
        # their memory and spill files go
        for shuffle in list(self.store.stats()["commits"]):
            self.store.drop_shuffle(shuffle)
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
        client = ShuffleClient(config.peers, metrics=self.metrics, call_timeout=config.shuffle_timeout, tls=config.tls)
        result = ResultLocation(job.output, job.name, job.storage, run=config.run_id)
        recovery = Recovery(config.replaceable, lambda: result.published_by_this_run() is not None)
        # the peers are dialled while this agent plans (both take ~20 ms; the dialling mostly waits)
        stop_connecting = threading.Event()
        connecting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="connect")
        ready = connecting.submit(client.wait_ready, config.startup_timeout, config.agent_index, stop_connecting)
        try:
            if recovery.replaceable and recovery.finished():
                raise JobAlreadyFinished()  # a replacement started after the job ended
            plan, infos = self._phase(phases, "plan", plan_job_inputs, job, config.agent_count, config.slots, self.described)
            fingerprint = plan_fingerprint(plan, infos)
            self.flight.set_plan_fingerprint(fingerprint)
            self._phase(phases, "check output", result.check)
            self._phase(phases, "connect", ready.result)
            stages = self._stage_runner(plan, infos, client, recovery, fingerprint)
            tables = self._phase(phases, "stages", stages.run)
            output = concat_tables(tables) if tables else None
            checksum = self.native.batch_checksum(output, self.executor) if output is not None else 0  # the sum over its batches
            writes = output is not None and (config.agent_index == 0 or not plan.result.single)
            part = self._phase(phases, "write", result.write_part, output, config.attempt, config.agent_index, self.instance, checksum) if writes else None
            manifest = self._phase(phases, "finish", self._finish, client, result, part, recovery)
        except JobAlreadyFinished:
            return self._published_elsewhere(result.published_by_this_run(), phases, started)
        finally:
            stop_connecting.set()
            connecting.shutdown()
            client.close()
        rows_out = output.num_rows if output is not None else 0
        files = [f"{job.output.path.rstrip('/')}/{part.name}"] if part is not None else []
        return self._result(rows_out, checksum, files, manifest, phases, started)

    def _published_elsewhere(self, manifest: dict, phases: dict, started: float) -> dict:
        """This agent replaced one whose part the run had already published: report that part."""
        name = part_name(self.config.agent_index, self.job.output.format)
        part = next((p for p in manifest["parts"] if p["name"] == name), None)
        files = [f"{self.job.output.path.rstrip('/')}/{name}"] if part is not None else []
        rows, checksum = (part["rows"], part["checksum"]) if part is not None else (0, 0)
        return self._result(rows, int(checksum), files, manifest if self.config.agent_index == 0 else None, phases, started)

    def _result(self, rows_out: int, checksum: int, files: list[str], manifest: dict | None, phases: dict, started: float) -> dict:
        self._update(phase="done", rows_out=rows_out)
        status = self.snapshot()
        return {
            "agent": self.config.agent_index,
            "status": "Succeeded",
            "instance": self.instance,
            "rows_in": status["rows_in"],
            "rows_shuffled": status["rows_shuffled"],
            "rows_out": rows_out,
            "bytes_shuffled": status["bytes_fetched"],
            "spilled_bytes": self.store.stats()["spilled_bytes"],
            "phases": {name: round(seconds, 4) for name, seconds in phases.items()},
            "stages": status["stages"],
            "seconds": round(time.monotonic() - started, 4),
            "output_files": files,
            "checksum": checksum,
            **({"output": {"uri": self.job.output.path, "rows": manifest["rows"], "parts": len(manifest["parts"])}} if manifest else {}),
        }

    def _finish(self, client: ShuffleClient, result: ResultLocation, part: Part | None, recovery: Recovery) -> dict | None:
        """Agent 0 publishes the result once every agent staged its part (their done markers carry the
        parts), then seals its own marker; the others seal theirs and serve until agent 0's says the job is over."""
        job, config = self.job, self.config
        claim = part.claim() if part is not None else None
        failpoints.reached(config.agent_index, "written")
        if config.agent_index != 0:
            seal_done(self.store, job.name, config.attempt, config.agent_index, claim)
            failpoints.reached(config.agent_index, "done")
            await_done(client, job.name, config.attempt, config.agent_index, config.shuffle_timeout, recovery)
            return None
        parts = {0: claim} if claim else {}
        parts.update(collect_done(client, job.name, config.attempt, config.agent_count, config.shuffle_timeout, recovery))
        staged = [Part.from_claim(index, job.output.format, c) for index, c in sorted(parts.items())]
        manifest = result.publish(config.attempt, staged)
        seal_done(self.store, job.name, config.attempt, config.agent_index, claim)
        failpoints.reached(config.agent_index, "done")
        marker = done_marker(job.name, config.attempt)
        await_peers_told(lambda peer, wait: self.flight.wait_told(marker, peer, wait), client, config.agent_count, config.shuffle_timeout)
        return manifest

    def _phase(self, phases: dict, name: str, body, *args):
        """Run body(*args) as a named phase: timed, shown in /status, and any error becomes a one-line JobFailed."""
        self._update(phase=name)
        started = time.monotonic()
        try:
            return body(*args)
        except (JobFailed, JobAlreadyFinished):
            raise
        except QueryRefused as exc:
            raise JobRefused("; ".join(exc.problems)) from exc
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise JobFailed(f"agent {self.config.agent_index}: {name} failed: {text}") from exc
        finally:
            phases[name] = phases.get(name, 0.0) + time.monotonic() - started

    def _stage_runner(self, plan: DistributedPlan, infos: dict[str, InputInfo], client: ShuffleClient, recovery: Recovery,
                      fingerprint: str) -> StageRunner:
        config = self.config

        def producers(stage: int) -> list[int]:
            return [0] if plan.stage(stage).single else list(range(config.agent_count))

        def wanted(stage: int) -> list[int]:
            """The partitions of a stage's output this agent reads."""
            exchange = plan.stage(stage).output
            if exchange.kind == "hash":
                return [p for p in range(exchange.partitions) if p % config.agent_count == config.agent_index]
            return [config.agent_index] if exchange.kind == "forward" else [0]

        def checksum(table: pa.Table) -> int:
            return self.native.batch_checksum(table, self.executor)

        reader = ExchangeReader(self.job.name, config.attempt, config.agent_index, self.store, client, checksum,
                                producers, wanted, config.shuffle_timeout, on_fetch=self._fetched, recovery=recovery,
                                plan_fingerprint=fingerprint)  # fmt: skip
        return StageRunner(
            job=self.job, plan=plan, infos=infos, agent_index=config.agent_index, agent_count=config.agent_count, attempt=config.attempt,
            store=self.store, reader=reader, slots=self.slots, slot_count=config.slots, native=self.native, executor=self.executor,
            on_progress=self._stage_progress, metrics=self.metrics,
        )  # fmt: skip

    def _fetched(self, stage: int, rows: int, nbytes: int, source: str) -> None:
        """A partition read for a task: from a peer ("do_get", or "stage_status": sent with its seal)
        or from this agent's own store ("local")."""
        self.metrics.shuffle("in", source, rows, nbytes)
        if source != "local":
            with self._status_lock:
                self.status["bytes_fetched"] += nbytes

    def _stage_progress(self, progress: StageProgress) -> None:
        """Stage progress into /status; the agent's totals are sums over its stages."""
        with self._status_lock:
            stages = self.status["stages"]
            stages[progress.stage] = progress.as_dict()
            self.status["rows_in"] = sum(stage["rows_scanned"] for stage in stages.values())
            self.status["rows_shuffled"] = sum(stage["rows_out"] for stage in stages.values() if stage["exchanged"])
            if progress.state == "running":
                self.status["phase"] = f"stage {progress.stage}"
