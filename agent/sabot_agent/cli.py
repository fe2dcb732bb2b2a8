"""`sabot`: run a SabotJob on this machine (`sabot run JOB.yaml`), check one (`sabot validate JOB.yaml`)
or show its distributed plan (`sabot explain JOB.yaml`). All three read every input's metadata and
plan the job first, so a bad file, column or query is one line (exit 2) before anything starts.

`sabot run` starts N agent processes — the same code the pods run — on free loopback ports, shows
their live progress, prints the first rows of the output and a metrics summary. With --json the last
stdout line is one JSON object: {"status", "rows_in", "rows_out", "output", "seconds", "agents",
"replacements"}. A killed or hung agent is replaced (sabot_agent.supervisor) and the job goes on;
each replacement is named on stderr and in "replacements".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid

from sabot_agent.jobspec import MAX_AGENTS, MAX_SLOTS, JobSpec, JobSpecError, load_job_file
from sabot_agent.settings import ArgumentParser, UsageError, integer_in, memory_quantity
from sabot_agent.supervisor import Outcome, supervise

PREVIEW_ROWS = 10


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sabot", description="Sabot: distributed Arrow shuffle jobs")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a SabotJob with local agent processes")
    run.add_argument("job", help="job file (a SabotJob manifest)")
    run.add_argument("--agents", type=integer_in(1, MAX_AGENTS), help="number of agents (default: spec.agents)")
    run.add_argument("--slots", type=integer_in(1, MAX_SLOTS), help="task slots per agent (default: spec.slotsPerAgent)")
    run.add_argument(
        "--threads", type=integer_in(1, MAX_SLOTS), help="executor threads per agent (default: cores / agents, at least 1)"
    )
    run.add_argument(
        "--memory-budget", type=memory_quantity, help="partition store memory per agent before spilling, e.g. 256Mi"
    )
    run.add_argument("--json", action="store_true", help="end with one JSON line describing the run")
    run.add_argument("--keep-workdir", action="store_true", help="keep agent logs and spill files")
    validate = commands.add_parser("validate", help="check a job file (inputs and query included) and exit")
    validate.add_argument("job")
    explain = commands.add_parser("explain", help="print the job's distributed plan: stages, exchanges, operators, estimates")
    explain.add_argument("job")
    explain.add_argument("--json", action="store_true",
                         help="print the plan in its serialized form (what every agent derives) with its fingerprint, as one JSON object")
    for command in (validate, explain):
        command.add_argument("--agents", type=integer_in(1, MAX_AGENTS), help="number of agents (default: spec.agents)")
        command.add_argument("--slots", type=integer_in(1, MAX_SLOTS), help="task slots per agent (default: spec.slotsPerAgent)")
    results = commands.add_parser("results", help="print the first rows of a published result")
    results.add_argument("job", help="a job file (its spec.pipeline.output), or the output location itself (a path or URI)")
    results.add_argument("--limit", type=integer_in(0, 10**9), default=PREVIEW_ROWS, help=f"rows to print (default {PREVIEW_ROWS})")
    results.add_argument("--cluster", action="store_true", help="the job file names a cluster job: read the location from its status (kubectl)")
    results.add_argument("--namespace", default=None, help="the cluster job's namespace (default: the job file's, else kubectl's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _rejected(f"error: {exc}", str(exc), "--json" in argv)
    if args.command == "results":
        return results(args)
    from sabot_agent.inputs import DescribedInputs
    from sabot_agent.plan.job import plan_job_inputs

    described = DescribedInputs()
    try:
        job = load_job_file(args.job, described.schema)
        agents = args.agents if args.agents is not None else job.agents
        slots = args.slots if args.slots is not None else job.slots_per_agent
        plan, infos = plan_job_inputs(job, agents, slots, described)
    except JobSpecError as exc:
        return _rejected(str(exc), "; ".join(exc.problems), getattr(args, "json", False))
    if args.command == "validate":
        print(f"{args.job}: valid SabotJob {job.name!r} ({len(plan.stages)} stages on {agents} agents)")
        return 0
    if args.command == "explain" and args.json:
        from sabot_agent.plan.job import plan_fingerprint

        print(json.dumps({"job": job.name, "agents": agents, "slots": slots, "fingerprint": plan_fingerprint(plan, infos),
                          "plan": json.loads(plan.to_json())}))  # fmt: skip
        return 0
    if args.command == "explain":
        from sabot_agent.plan.explain import explain

        print(f"{args.job}: SabotJob {job.name!r}")
        print(explain(plan, agents, slots))
        return 0
    from sabot_agent.output import OutputError, ResultLocation

    try:
        ResultLocation(job.output, job.name, job.storage).check()
    except OutputError as exc:
        return _rejected(f"spec.pipeline.output.path: {exc}", f"spec.pipeline.output.path: {exc}", args.json)
    return run(args, job)


def _rejected(message: str, reason: str, as_json: bool) -> int:
    """A usage or validation error, found before anything started: exit 2."""
    print(f"sabot: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"status": "Failed", "reason": reason, "rows_in": 0, "rows_out": 0, "output": None, "seconds": 0, "agents": []}))
    return 2


def run(args: argparse.Namespace, job: JobSpec) -> int:
    from sabot_agent.local import LocalCluster

    agents = args.agents if args.agents is not None else job.agents
    slots = args.slots if args.slots is not None else job.slots_per_agent
    threads = args.threads or job.threads_per_agent or max(1, len(os.sched_getaffinity(0)) // agents)
    workdir = tempfile.mkdtemp(prefix=f"sabot-{job.name}-")
    recovery = job.recovery
    cluster = LocalCluster(args.job, agents, slots, threads, args.memory_budget, workdir, run_id=uuid.uuid4().hex,
                           replaceable=recovery.max_agent_replacements > 0)  # fmt: skip
    progress = Progress(agents, sys.stderr)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    outcome = Outcome()
    try:
        cluster.start()
        progress.note(f"sabot: running {job.name!r} with {agents} agents x {slots} slots x {threads} threads (logs: {workdir})")
        outcome = supervise(cluster, progress, recovery)
    except KeyboardInterrupt:
        outcome.failure = "interrupted"
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)
    seconds = time.monotonic() - started
    progress.finish()
    failure = outcome.failure
    replacements = [replacement.as_dict() for replacement in outcome.replacements]
    if failure is None:
        try:
            results = [agent.result() for agent in cluster.agents]
        except RuntimeError as exc:
            failure = str(exc)
    if failure is not None:
        _remove_staged_parts(job)
        print(f"sabot: job {job.name!r} failed: {failure}", file=sys.stderr)
        if args.json:
            agents_json = [
                {"agent": agent.index, "status": _agent_state(agent, cluster.failed_index), "exit_code": agent.process.returncode}
                for agent in cluster.agents
            ]
            print(json.dumps({"status": "Failed", "reason": failure, "rows_in": 0, "rows_out": 0, "output": job.output.path,
                              "seconds": round(seconds, 3), "agents": agents_json, "replacements": replacements}))  # fmt: skip
        if args.keep_workdir or failure != "interrupted":
            print(f"sabot: agent logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        return 130 if failure == "interrupted" else 1
    if not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    progress.update([dict(result, phase="done") for result in results])
    summary = {
        "status": "Succeeded",
        "rows_in": sum(result["rows_in"] for result in results),
        "rows_out": sum(result["rows_out"] for result in results),
        "output": job.output.path,
        "seconds": round(seconds, 3),
        "agents": results,
        "replacements": replacements,
    }
    _print_report(job, summary, sys.stdout if not args.json else sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


def results(args: argparse.Namespace) -> int:
    """`sabot results`: the manifest summary and first rows of a published result, from a job file's
    output location, a location given directly, or (--cluster) the location in a cluster job's status."""
    from sabot_agent.jobspec import OutputSpec
    from sabot_agent.output import OutputError, ResultLocation

    try:
        if os.path.isfile(args.job):
            job = load_job_file(args.job)
            output, name, storage = job.output, job.name, job.storage
            if args.cluster:
                output = OutputSpec(job.output.format, _cluster_output_uri(job, args.namespace))
        else:
            if args.cluster:
                raise JobSpecError([f"{args.job}: --cluster needs the job file"])
            output, name, storage = OutputSpec("parquet", args.job), "", None
        location = ResultLocation(output, name, storage) if storage is not None else ResultLocation(output, name)
        manifest, table = location.read(args.limit)
    except (JobSpecError, OutputError) as exc:
        print(f"sabot: {exc}", file=sys.stderr)
        return 2
    print(f"{output.path}: job {manifest['job']!r} attempt {manifest['attempt']}, {manifest['rows']:,} rows in {len(manifest['parts'])} "
          f"parts, published {manifest['published']}")  # fmt: skip
    if table.num_rows:
        print(_table_text(table))
    return 0


def _cluster_output_uri(job: JobSpec, namespace: str | None) -> str:
    """status.output.uri of the cluster job, read with kubectl (whose context and credentials apply)."""
    import subprocess

    namespace = namespace or job.raw.get("metadata", {}).get("namespace")
    command = ["kubectl", "get", "sabotjob", job.name, "-o", "jsonpath={.status.output.uri}"] + (["-n", namespace] if namespace else [])
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise JobSpecError([f"cannot run kubectl: {exc.strerror}"]) from None
    if completed.returncode != 0:
        raise JobSpecError([f"kubectl get sabotjob {job.name}: {completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else 'failed'}"])
    if not completed.stdout.strip():
        raise JobSpecError([f"sabotjob {job.name} has no published result in its status yet"])
    return completed.stdout.strip()


def _agent_state(agent, failed_index: int | None) -> str:
    if agent.index == failed_index:
        return "Failed"
    return "Succeeded" if agent.process.returncode == 0 else "Stopped"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _remove_staged_parts(job: JobSpec) -> None:
    """A failed run leaves nothing in the output location: the parts its agents staged go (nothing was
    published, since agent 0 publishes only after every agent succeeded)."""
    from sabot_agent.output import OutputError, ResultLocation

    try:
        ResultLocation(job.output, job.name, job.storage).remove_staging(attempt=0)
    except OutputError:
        pass


class Progress:
    """Per-agent progress lines: redrawn in place on a terminal, printed on change otherwise."""

    def __init__(self, agents: int, stream):
        self.stream = stream
        self.agents = agents
        self.tty = stream.isatty()
        self.drawn = 0
        self.last: list[str] = []

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, statuses: list[dict | None]) -> None:
        lines = [self._line(index, status) for index, status in enumerate(statuses)]
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")
            for line in lines:
                self.stream.write("\x1b[2K" + line + "\n")
            self.drawn = len(lines)
            self.stream.flush()
        else:
            for index, line in enumerate(lines):
                phase = (statuses[index] or {}).get("phase", "starting")
                if index >= len(self.last) or self.last[index] != phase:
                    print(line, file=self.stream, flush=True)
            self.last = [(status or {}).get("phase", "starting") for status in statuses]

    @staticmethod
    def _line(index: int, status: dict | None) -> str:
        if status is None:
            return f"  agent {index}: starting"
        stages = status.get("stages") or []
        done = sum(1 for stage in stages if stage.get("state") in ("done", "skipped"))
        where = f"{status.get('phase', '?')} ({done}/{len(stages)} stages)" if stages else status.get("phase", "?")
        return (
            f"  agent {index}: {where:<22} in {status.get('rows_in', 0):>12,}  exchanged {status.get('rows_shuffled', 0):>11,}  "
            f"out {status.get('rows_out', 0):>10,}"
        )

    def finish(self) -> None:
        self.stream.flush()


def _print_report(job: JobSpec, summary: dict, stream) -> None:
    from sabot_agent.output import MANIFEST as MANIFEST_NAME, ResultLocation

    print(
        f"\njob {job.name!r} {summary['status']} in {summary['seconds']:.2f}s: {summary['rows_in']:,} rows in, {summary['rows_out']:,} rows out",
        file=stream,
    )
    manifest, preview = ResultLocation(job.output, job.name, job.storage).read(PREVIEW_ROWS)
    print(f"output: {job.output.path} ({len(manifest['parts'])} part files, {manifest['rows']:,} rows, manifest {MANIFEST_NAME})", file=stream)
    if preview.num_rows:
        print(_table_text(preview), file=stream)
    phases = list(dict.fromkeys(name for result in summary["agents"] for name in result["phases"]))
    print("\nmetrics per agent (seconds per phase)", file=stream)
    print(f"{'agent':>5} {'rows in':>12} {'rows out':>10} {'fetched MB':>11} {'spilled MB':>11} " + " ".join(f"{phase:>8}" for phase in phases),
          file=stream)  # fmt: skip
    for result in summary["agents"]:
        seconds = " ".join(f"{result['phases'].get(phase, 0.0):>8.3f}" for phase in phases)
        print(f"{result['agent']:>5} {result['rows_in']:>12,} {result['rows_out']:>10,} {result['bytes_shuffled'] / 1e6:>11.2f} "
              f"{result['spilled_bytes'] / 1e6:>11.2f} {seconds}", file=stream)  # fmt: skip
    print("\nstages (summed over agents; seconds of the slowest)", file=stream)
    print(f"{'stage':>5} {'tasks':>7} {'rows in':>14} {'rows out':>14} {'MB in':>9} {'MB out':>9} {'seconds':>9}", file=stream)
    for index in range(len(summary["agents"][0].get("stages", []))):
        per_agent = [result["stages"][index] for result in summary["agents"]]
        print(f"{index:>5} {sum(s['tasks'] for s in per_agent):>7} {sum(s['rows_in'] for s in per_agent):>14,} "
              f"{sum(s['rows_out'] for s in per_agent):>14,} {sum(s['bytes_in'] for s in per_agent) / 1e6:>9.2f} "
              f"{sum(s['bytes_out'] for s in per_agent) / 1e6:>9.2f} {max(s['seconds'] for s in per_agent):>9.3f}", file=stream)  # fmt: skip


def _table_text(table) -> str:
    columns = table.column_names
    rows = [["null" if value is None else str(value) for value in row.values()] for row in table.to_pylist()]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(columns)]
    lines = ["  ".join(name.rjust(width) for name, width in zip(columns, widths))]
    lines += ["  ".join(value.rjust(width) for value, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
