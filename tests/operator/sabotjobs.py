"""A valid SabotJob for tests, and variations of it by merge patch."""
from __future__ import annotations

import copy


def deep_merge(base: dict, patch: dict) -> dict:
    """`base` with `patch` merged in; a None value removes the key (like a JSON merge patch)."""
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


VALID_SPEC = {
    "agents": 3,
    "slotsPerAgent": 2,
    "pipeline": {
        "inputs": {
            "sales": {
                "generate": {
                    "rows": 1000,
                    "seed": 7,
                    "columns": {"region": {"type": "string", "distinct": 10}, "amount": {"type": "float64"}},
                }
            }
        },
        "shuffle": {"partitions": 6},
        "aggregate": {"input": "sales", "groupBy": ["region"], "aggregations": [{"column": "amount", "function": "sum"}]},
        "output": {"format": "parquet", "path": "s3://results/out/"},
    },
}


def sabot_job(name: str = "wordcount", spec_patch: dict | None = None, namespace: str = "default", status: dict | None = None) -> dict:
    """A SabotJob as the API server returns it (before defaulting: the operator must default itself)."""
    job = {
        "apiVersion": "sabot.io/v1alpha1",
        "kind": "SabotJob",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": deep_merge(VALID_SPEC, spec_patch or {}),
    }
    if status is not None:
        job["status"] = status
    return job


def agent_result(index: int, rows_out: int) -> dict:
    """A result as `sabot-agent` prints it when its job succeeds (agent/sabot_agent/runner.py)."""
    return {
        "agent": index,
        "status": "Succeeded",
        "rows_in": 1000,
        "rows_mapped": 1000,
        "rows_shuffled": 1000,
        "rows_out": rows_out,
        "bytes_shuffled": 64000,
        "spilled_bytes": 0,
        "phases": {"map": 0.01, "reduce": 0.02},
        "seconds": 0.5,
        "output_files": [f"out/part-{index}.parquet"],
        "checksum": 2**64 - 1 - index,  # unsigned 64-bit: larger than any int64
    }


def status_result(index: int, rows_out: int) -> dict:
    """The same result as the operator reports it in status.agents[index].result."""
    return {
        "rowsIn": 1000,
        "rowsShuffled": 1000,
        "rowsOut": rows_out,
        "bytesShuffled": 64000,
        "spilledBytes": 0,
        "seconds": 0.5,
        "outputFiles": [f"out/part-{index}.parquet"],
        "checksum": str(2**64 - 1 - index),
    }
