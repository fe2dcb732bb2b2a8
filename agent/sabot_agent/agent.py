"""`sabot-agent`: one shuffle agent process, configured by flags or SABOT_* environment variables.

With a job it runs the job and exits (0 with a JSON result on stdout, or 1 with a one-line reason on
stderr and in the termination log; 2, reported the same way before anything starts, for a bad flag,
SABOT_* variable or job file; 3, the same way, for a job that does not fit its inputs' schemas — a
column they lack, a query the planner refuses — which every attempt would meet again). With
``--serve`` and no job it only serves Flight and HTTP until SIGTERM/SIGINT (tests and benchmarks use that).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import faulthandler
import json
import os
import signal
import sys
import threading
import time

import pyarrow as pa

from sabot_agent import failpoints
from sabot_agent.jobspec import MAX_AGENT_REPLACEMENTS, MAX_AGENTS, MAX_SLOTS, JobSpecError, load_job_file, parse_memory
from sabot_agent.security import AgentTLS, TLSConfigError, tls_enabled
from sabot_agent.settings import (ENV, FAILPOINT_ENV, JOB_REFUSED, MAX_ATTEMPT, MAX_PORT, TERMINATED, USAGE_ERROR, ArgumentParser, UsageError,
                                  integer_in, memory_quantity, seconds)

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# flag name -> help; the environment variable of each is settings.ENV[name]
_OPTIONS = {
    "job": "job file (a SabotJob manifest)",
    "agent_index": "this agent's index in the peer list",
    "agent_count": "number of agents",
    "bind_host": "address the servers listen on",
    "advertise_host": "address peers dial (never 0.0.0.0)",
    "flight_port": "Arrow Flight port (0: any free port)",
    "http_port": "HTTP port for /metrics /healthz /readyz /status (0: any free port)",
    "slots": "task slots",
    "threads": "native executor threads (default: cores available)",
    "memory_budget": "partition store memory before spilling, e.g. 512Mi",
    "spill_dir": "directory for spilled partitions",
    "peers": "comma-separated advertised host:port of every agent, in index order",
    "peers_file": "a file the peer list will appear in (one host:port per line), read once the servers listen: "
    "agents started on port 0 learn each other's ports this way",
    "attempt": "job attempt number (part of every shuffle id)",
    "termination_log": "file that receives the JSON result, or the one-line failure reason",
    "startup_timeout": "seconds to wait for every peer to answer",
    "shuffle_timeout": "seconds to wait for every producer's commit",
    "tls_cert": "this agent's certificate (PEM), issued for this job, attempt and agent index",
    "tls_key": "the private key (PEM) of --tls-cert",
    "tls_ca": "the certificate (PEM) of the authority that issued the job attempt's agent certificates",
    "run_id": "this run of the job (its result manifest names it; a replacement agent gets the same)",
    "replaceable": "1: a supervisor replaces failed agents, so a peer that stops answering is waited for (up to "
    "--shuffle-timeout) instead of failing the job",
    "replacement": "how many agents of this index the run replaced before this one (0: the first); a failpoint "
    "without a marker file fires only in the first",
}


def build_parser() -> argparse.ArgumentParser:
    """Every default is read from the flag's SABOT_* variable as text, so argparse checks it with the
    flag's type: a bad variable is reported like a bad flag."""
    env = os.environ

    def default(name: str, fallback):
        return env.get(ENV[name], fallback)

    def helptext(name: str) -> str:
        return f"{_OPTIONS[name]} [env {ENV[name]}]"

    count, port = integer_in(1, MAX_AGENTS), integer_in(0, MAX_PORT)
    parser = ArgumentParser(prog="sabot-agent", description="Sabot shuffle agent")
    parser.add_argument("--job", default=default("job", None), help=helptext("job"))
    parser.add_argument("--serve", action="store_true", help="serve Flight and HTTP only, without a job, until terminated")
    parser.add_argument(
        "--agent-index", type=integer_in(0, MAX_AGENTS - 1), default=default("agent_index", "0"), help=helptext("agent_index")
    )
    parser.add_argument(
        "--agent-count", type=count, default=default("agent_count", None), help=helptext("agent_count") + " (default: the job's spec.agents)"
    )
    parser.add_argument("--bind-host", default=default("bind_host", "127.0.0.1"), help=helptext("bind_host"))
    parser.add_argument(
        "--advertise-host", default=default("advertise_host", None), help=helptext("advertise_host") + " (default: the bind host)"
    )
    parser.add_argument("--flight-port", type=port, default=default("flight_port", "0"), help=helptext("flight_port"))
    parser.add_argument("--http-port", type=port, default=default("http_port", "0"), help=helptext("http_port"))
    parser.add_argument(
        "--slots", type=integer_in(1, MAX_SLOTS), default=default("slots", None), help=helptext("slots") + " (default: the job's spec.slotsPerAgent)"
    )
    parser.add_argument("--threads", type=integer_in(1, MAX_SLOTS), default=default("threads", None), help=helptext("threads"))
    parser.add_argument("--memory-budget", type=memory_quantity, default=default("memory_budget", None), help=helptext("memory_budget"))
    parser.add_argument("--spill-dir", default=default("spill_dir", "/tmp/sabot-spill"), help=helptext("spill_dir"))
    parser.add_argument("--peers", default=default("peers", ""), help=helptext("peers"))
    parser.add_argument("--peers-file", default=default("peers_file", None), help=helptext("peers_file"))
    parser.add_argument("--attempt", type=integer_in(0, MAX_ATTEMPT), default=default("attempt", "0"), help=helptext("attempt"))
    parser.add_argument("--termination-log", default=default("termination_log", DEFAULT_TERMINATION_LOG), help=helptext("termination_log"))
    parser.add_argument("--startup-timeout", type=seconds, default=default("startup_timeout", "60"), help=helptext("startup_timeout"))
    parser.add_argument("--shuffle-timeout", type=seconds, default=default("shuffle_timeout", "300"), help=helptext("shuffle_timeout"))
    parser.add_argument("--run-id", default=default("run_id", ""), help=helptext("run_id"))
    parser.add_argument("--replaceable", type=integer_in(0, 1), default=default("replaceable", "0"), help=helptext("replaceable"))
    parser.add_argument("--replacement", type=integer_in(0, MAX_AGENT_REPLACEMENTS), default=default("replacement", "0"), help=helptext("replacement"))
    for name in ("tls_cert", "tls_key", "tls_ca"):
        parser.add_argument(f"--{name.replace('_', '-')}", default=default(name, None), help=helptext(name))
    return parser


def _write_termination_log(line: str, termination_log: str | None) -> None:
    """Kubernetes shows this file as the container's termination message; the operator reads the
    JSON result of a successful agent from it. /dev/termination-log exists only in a pod; any other
    given path is created."""
    if termination_log and (termination_log != DEFAULT_TERMINATION_LOG or os.path.exists(termination_log)):
        try:
            with open(termination_log, "w", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            print(f"sabot-agent: cannot write termination log {termination_log}: {exc.strerror or exc}", file=sys.stderr, flush=True)


def _fail(reason: str, termination_log: str | None, code: int = 1) -> int:
    """Report a failure: the termination log first, so that the reason is the last line on stderr even
    when that log cannot be written (e.g. on the same full disk as the spill directory)."""
    line = " ".join(reason.split())  # Kubernetes shows the termination message; keep it one line
    _write_termination_log(line, termination_log)
    print(f"sabot-agent: error: {line}", file=sys.stderr, flush=True)
    return code


def _termination_log_of(argv: list[str] | None) -> str:
    """The termination log a command line names, for reporting that the rest of it is unusable."""
    parser = ArgumentParser(add_help=False)
    parser.add_argument("--termination-log", default=os.environ.get(ENV["termination_log"], DEFAULT_TERMINATION_LOG))
    try:
        return parser.parse_known_args(argv)[0].termination_log
    except UsageError:
        return os.environ.get(ENV["termination_log"], DEFAULT_TERMINATION_LOG)


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()  # a crash in native code leaves every thread's Python stack on stderr
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), _termination_log_of(argv), USAGE_ERROR)
    try:
        return _main(args)
    except Terminated:
        # 128 + SIGTERM, as a shell reports it: a supervisor tells an agent stopped from outside (a
        # liveness probe, a pod deleted or drained) from one that failed the job by itself
        return _fail(f"agent {args.agent_index}: stopped by SIGTERM", args.termination_log, TERMINATED)
    except KeyboardInterrupt:
        return _fail(f"agent {args.agent_index}: interrupted", args.termination_log)


def entry_point() -> None:
    """The agent process (`sabot-agent`, `python -m sabot_agent`): main(), then exit at once. By then
    the agent stopped its servers, dropped its outputs and spill files, and wrote its result or reason;
    what an interpreter exit would still do is tear down gRPC's and Arrow's native state, which took
    2-2.5 s per agent (measured at the end of every `sabot run`), a delay before the job is seen done."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory() -> bool:
    """Keep memory the process frees for reuse instead of handing it back to the kernel (glibc only).

    gRPC allocates every received Flight message with malloc, and the partition store keeps those
    buffers until the shuffle is dropped. With glibc's defaults, 1-8 MB messages are served by mmap or
    from arena heaps that are trimmed when freed, so every shuffle faults all its pages in again
    (measured: a Flight server that keeps what it receives ran at 0.8 GB/s against 1.9 GB/s for one that
    drops it; with these settings both ran at ~1.9 GB/s). A fixed mmap threshold of 32 MiB (the largest
    glibc allows; it also stops glibc from raising the threshold on its own) and a 2 GiB trim
    threshold keep freed pages mapped for the next shuffle. The process's resident size then stays at
    its peak (bounded by --memory-budget and the spill hard limit) instead of shrinking between shuffles.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def reuse_arrow_memory() -> str:
    """Arrow's buffers from jemalloc, unless ARROW_DEFAULT_MEMORY_POOL chooses; the pool's name.

    A task allocates its columns on one thread and they are freed on another (the stage's consumer,
    the partition store); pyarrow's default pool, mimalloc, hands such pages back to the kernel and
    faults them in again for the next batch. With jemalloc (which keeps freed pages for a while) TPC-H
    Q1 over SF1 took 0.88-1.06 s against 1.37-1.60 s with mimalloc, 2 agents, same files, in turns.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool().backend_name
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        pass
    return pa.default_memory_pool().backend_name


def _valid_without_schemas(path: str) -> bool:
    """Whether the job file's problems appeared only once its inputs' schemas were read."""
    try:
        load_job_file(path)
    except (JobSpecError, OSError):
        return False
    return True


def _main(args: argparse.Namespace) -> int:
    from sabot_agent.inputs import DescribedInputs
    from sabot_agent.runner import Agent, AgentConfig, JobFailed, JobRefused

    if not args.job and not args.serve:
        return _fail("no job: give --job FILE (or SABOT_JOB), or --serve to only serve", args.termination_log, USAGE_ERROR)
    job = None
    described = DescribedInputs()
    if args.job:
        unreadable = []

        def read_schema(spec):
            try:
                return described.schema(spec)
            except Exception:
                unreadable.append(spec.name)  # perhaps only for now (storage): a usage error, retried
                raise

        try:
            job = load_job_file(args.job, read_schema)
        except JobSpecError as exc:
            refused = not unreadable and _valid_without_schemas(args.job)
            return _fail("; ".join(exc.problems), args.termination_log, JOB_REFUSED if refused else USAGE_ERROR)
    agent_count = args.agent_count if args.agent_count is not None else (job.agents if job else 1)
    slots = args.slots if args.slots is not None else (job.slots_per_agent if job else 1)
    threads = args.threads if args.threads is not None else (job.threads_per_agent if job else None)
    memory_budget = parse_memory(args.memory_budget) if args.memory_budget else (job.memory_budget_bytes if job else None)
    peers = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    problems = []
    if not 0 <= args.agent_index < agent_count:
        problems.append(f"--agent-index {args.agent_index} is outside [0, {agent_count})")
    if job is not None and not args.peers_file and len(peers) != agent_count:
        problems.append(f"--peers lists {len(peers)} agents, --agent-count is {agent_count}")
    advertise_host = args.advertise_host or args.bind_host
    if advertise_host in ("0.0.0.0", "::"):
        problems.append(f"--advertise-host {advertise_host} cannot be dialled by peers; give this agent's reachable address")
    if args.flight_port and args.flight_port == args.http_port:
        problems.append("--flight-port and --http-port must differ")
    try:
        failpoints.arm(os.environ.get(FAILPOINT_ENV, ""), args.replacement)
    except ValueError as exc:
        problems.append(str(exc))
    tls = None
    try:
        tls = _tls_settings(args, job)
    except TLSConfigError as exc:
        problems.append(str(exc))
    if problems:
        return _fail("; ".join(problems), args.termination_log, USAGE_ERROR)

    config = AgentConfig(
        agent_index=args.agent_index,
        agent_count=agent_count,
        bind_host=args.bind_host,
        advertise_host=advertise_host,
        flight_port=args.flight_port,
        http_port=args.http_port,
        slots=slots,
        threads=threads,
        memory_budget_bytes=memory_budget,
        spill_dir=args.spill_dir,
        peers=peers,
        attempt=args.attempt,
        startup_timeout=args.startup_timeout,
        shuffle_timeout=args.shuffle_timeout,
        tls=tls,
        run_id=args.run_id,
        replaceable=bool(args.replaceable),
    )
    retain_freed_memory()
    reuse_arrow_memory()
    agent = Agent(config, job, described)
    agent.start()
    print(
        json.dumps({"event": "listening", "agent": config.agent_index, "flight_port": agent.flight_port, "http_port": agent.http.port}),
        file=sys.stderr,
        flush=True,
    )
    try:
        if args.peers_file:
            try:
                agent.config.peers = _read_peers_file(args.peers_file, agent_count, args.startup_timeout)
            except ValueError as exc:
                return _fail(str(exc), args.termination_log, USAGE_ERROR)
        if job is None:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(3600):
                pass
            return 0
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            result = agent.run()
        except JobRefused as exc:
            return _fail(str(exc), args.termination_log, JOB_REFUSED)
        except JobFailed as exc:
            return _fail(str(exc), args.termination_log)
        line = json.dumps(result, separators=(",", ":"))
        print(line, flush=True)
        _write_termination_log(line, args.termination_log)
        return 0
    finally:
        agent.stop()


def _tls_settings(args: argparse.Namespace, job) -> AgentTLS | None:
    """The agent's TLS material, or None for plaintext: a job needs TLS unless its spec says
    `security.tls: disabled`; `--serve` uses TLS when given the files. The certificate must name this
    agent (job, attempt, index)."""
    files = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(files) and not all(files):
        raise TLSConfigError("--tls-cert, --tls-key and --tls-ca go together")
    if job is not None and not tls_enabled(job.raw["spec"]):
        if any(files):
            raise TLSConfigError("spec.security.tls is disabled, but --tls-cert/--tls-key/--tls-ca were given")
        return None
    if not any(files):
        if job is None:
            return None
        raise TLSConfigError("spec.security.tls is enabled (the default): give --tls-cert, --tls-key and --tls-ca, "
                             "or set spec.security.tls: disabled (plaintext, insecure)")  # fmt: skip
    tls = AgentTLS.load(*files)
    named, wanted = tls.identity, (job.name if job else tls.identity.job, args.attempt, args.agent_index)
    if (named.job, named.attempt, named.index) != wanted:
        raise TLSConfigError(f"--tls-cert names agent {named.index} of job {named.job!r} attempt {named.attempt}, "
                             f"but this is agent {wanted[2]} of job {wanted[0]!r} attempt {wanted[1]}")  # fmt: skip
    return tls


PEERS_FILE_POLL_SECONDS = 0.01


def _read_peers_file(path: str, agent_count: int, timeout: float) -> list[str]:
    """The peer list from a file that appears once every agent listens (written whole, by a rename)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise ValueError(f"--peers-file {path} did not appear within {timeout:g}s")
        time.sleep(PEERS_FILE_POLL_SECONDS)
    with open(path, encoding="utf-8") as handle:
        peers = [line.strip() for line in handle.read().replace(",", "\n").splitlines() if line.strip()]
    if len(peers) != agent_count:
        raise ValueError(f"--peers-file {path} lists {len(peers)} agents, --agent-count is {agent_count}")
    return peers


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like an interrupt (every finally block runs), then exit 128 + SIGTERM."""


def _raise_terminated(signum, frame):
    raise Terminated


if __name__ == "__main__":
    entry_point()
