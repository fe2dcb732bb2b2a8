"""Shared helpers for the benchmarks: median timing and the one-JSON-line-per-case output format."""
import json
import statistics
import time


def median_seconds(fn, repeats=5, warmup=1):
    """Median wall time of fn() over `repeats` runs after `warmup` unmeasured runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_median_seconds(fns, repeats=5, warmup=1):
    """Median wall time of each fn, timed in turns (a, b, a, b, ...) so that drift in the machine's
    state during the run (other load, page cache, clock) hits every case alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
    return [statistics.median(samples) for samples in times]


def report(bench, case, value, unit, reference, goal, higher_is_better=True, **extra):
    """Prints one case (with `extra` fields after the standard ones). ratio > 1 always means "better
    than the reference"."""
    ratio = value / reference if higher_is_better else reference / value
    line = {
        "bench": bench,
        "case": case,
        "value": round(value, 4),
        "unit": unit,
        "reference": round(reference, 4),
        "ratio": round(ratio, 3),
        "goal": goal,
        **extra,
    }
    print(json.dumps(line), flush=True)
    return line


def job_phases(summary):
    """(job seconds excluding process start and the connect phase, slowest agent's phase seconds) of a
    `sabot run --json` summary: each agent's clock starts once its servers are up and every peer
    answered, so the slowest agent's time less its connect phase is the job's."""
    slowest = max(summary["agents"], key=lambda agent: agent["seconds"] - agent["phases"]["connect"])
    return slowest["seconds"] - slowest["phases"]["connect"], dict(slowest["phases"])
