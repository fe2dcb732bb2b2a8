"""spec.volumes on real pods (T2): a 2-agent job reads Parquet files from a shared PersistentVolumeClaim
(ReadWriteMany; a hostPath PersistentVolume of a directory on this machine) and publishes its result on
the same claim. Read from that directory once the job and its pods are gone, the result is what duckdb
computes from the same files. See conftest.py for the fixtures and what makes the tier skip.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from engine_support import assert_same_rows, duckdb_rows, job_document
from helpers import hostpath_claim, kget, wait_for
from sabot_operator.builders import AGENT_UID, pod_selector

SQL = "SELECT region, count(*) AS sales, sum(amount) AS total, max(amount) AS largest FROM sales GROUP BY region"
FILES, ROWS_PER_FILE = 4, 100_000
MOUNT = "/shared"


def write_sales(directory: Path) -> None:
    """FILES Parquet files of several row groups each, so both agents get a share of every file."""
    rng = np.random.default_rng(12)
    directory.mkdir(parents=True)
    for index in range(FILES):
        table = pa.table({"region": rng.integers(0, 500, ROWS_PER_FILE), "amount": rng.random(ROWS_PER_FILE) * 1000})
        pq.write_table(table, directory / f"sales-{index}.parquet", row_group_size=ROWS_PER_FILE // 4)


def test_a_job_reads_its_input_from_a_shared_claim_and_publishes_its_result_there(realpods_cluster, operator, namespace, tmp_path):
    cluster = realpods_cluster
    host_dir = tmp_path / "claim"
    write_sales(host_dir / "in")
    # the agents write as AGENT_UID; a fresh hostPath directory is root's
    subprocess.run(["chown", "-R", f"{AGENT_UID}:{AGENT_UID}", str(host_dir)], check=True)
    hostpath_claim(cluster, namespace, "shared", host_dir, "ReadWriteMany")
    job = job_document("on-claim", {"sales": {"format": "parquet", "path": f"{MOUNT}/in/"}}, Path(f"{MOUNT}/out"), agents=2, sql=SQL)
    job["spec"].update(image=cluster.image, imagePullPolicy="Never",
                       volumes=[{"name": "shared", "mountPath": MOUNT, "persistentVolumeClaim": {"claimName": "shared"}}])
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))

    started = time.monotonic()
    status = wait_for(lambda: (lambda s: s if s.get("phase") in ("Succeeded", "Failed") else None)(
        kget(cluster, "sabotjob", "on-claim", "-n", namespace).get("status") or {}), 300, what="on-claim finished")
    elapsed = time.monotonic() - started
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    assert status["phase"] == "Succeeded", f"status: {yaml.safe_dump(status)}\nevents:\n{events}"
    assert sorted(agent["index"] for agent in status["agents"]) == [0, 1] and status["attempt"] == 1

    # the result outlives the pods: gone with the job (garbage collector), the claim released with them
    cluster.kubectl("delete", "sabotjob", "on-claim", "-n", namespace)
    wait_for(lambda: not kget(cluster, "pods", "-n", namespace, "-l", pod_selector("on-claim"))["items"], 60, what="the agent pods gone")
    cluster.kubectl("delete", "pvc", "shared", "-n", namespace, "--timeout=30s")
    cluster.kubectl("delete", "pv", f"{namespace}-shared")

    out = host_dir / "out"
    manifest = json.loads((out / "_SUCCESS").read_text())
    parts = [part["name"] for part in manifest["parts"]]
    assert parts == ["part-00000.parquet", "part-00001.parquet"], manifest
    assert sorted(path.name for path in out.iterdir()) == ["_SUCCESS", *parts]  # nothing staged left
    table = pa.concat_tables([pq.read_table(out / name) for name in parts])
    assert table.num_rows == manifest["rows"] == sum(agent["result"]["rowsOut"] for agent in status["agents"])
    assert sum(agent["result"]["rowsIn"] for agent in status["agents"]) == FILES * ROWS_PER_FILE
    assert_same_rows([tuple(row.values()) for row in table.to_pylist()], duckdb_rows(SQL, {"sales": host_dir / "in"}), ordered=False)
    print(f"\n[realpods] on-claim: Succeeded in {elapsed:.1f}s on 2 real pods, {manifest['rows']} groups on the claim")
