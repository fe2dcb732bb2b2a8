"""The product on real pods (T2): agent pods start from the project image on a real kubelet, find each
other through the cluster DNS names the operator gives them, shuffle over Arrow Flight on the pod
bridge and finish; the in-process operator reports Succeeded.

- the e2e suite (tests/e2e, the one kind runs) against this cluster;
- each example SabotJob with its file inputs read from and its result committed to the tier's S3
  server (SeaweedFS on the bridge address; the agents get its keys from a Secret through
  spec.storage.s3.credentialsSecret): equal to the reference computed in one process with pyarrow,
  status.output naming it; agent /metrics scraped by pod IP from the host (which is on the bridge);
- an agent killed mid-job (SIGKILL to its container's process) with agent replacement turned off: a
  retried attempt succeeds with the same output as the reference (test_chaos.py: replacement);
- secure by default: agents in a namespace enforcing the restricted Pod Security Standard talk mutual
  TLS (a plaintext or certificate-less client is refused, agent 0's own certificate may not ask agent
  1 about agent 0's outputs); the per-agent TLS Secrets and the job's NetworkPolicy are owned by the
  job, the Secrets go when the job finishes, the policy when the job is deleted. The bridge CNI here
  does not enforce NetworkPolicy: the policy's effect is untested, its manifest is (tests/operator,
  tests/chart).
See conftest.py for the fixtures and what makes the tier skip.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.flight as flight
import pytest
import yaml

from helpers import REPO, hostpath_claim, kget, wait_for

sys.path.insert(0, str(REPO / "tests" / "chart"))
from pod_security import restricted_violations  # noqa: E402

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
AGENT_UID = 65532
DATA = "/data"  # where on_real_pods mounts a job's file inputs
PYARROW_AGG = {"sum": "sum", "mean": "mean", "count": "count", "min": "min", "max": "max"}
PYARROW_JOIN = {"inner": "inner", "left": "left outer", "right": "right outer", "full": "full outer"}


# ------------------------------------------------------------------------------------------ helpers


def status_of(cluster, ns: str, name: str) -> dict:
    return kget(cluster, "sabotjob", name, "-n", ns).get("status") or {}


def agent_pods(cluster, ns: str, name: str) -> list[dict]:
    return kget(cluster, "pods", "-n", ns, "-l", f"sabot.io/job-name={name}")["items"]


def output_volume(cluster, ns: str, job: dict) -> Path:
    """A hostPath PersistentVolume bound to a claim the job uses as its spill volume: each agent gets the
    subdirectory named after its pod (the operator mounts it with subPath), owned by the agents' user."""
    name = job["metadata"]["name"]
    host_dir = cluster.node.workdir / "volumes" / f"{ns}-{name}"
    for index in range(job["spec"].get("agents", 1)):
        d = host_dir / f"{name}-agent-{index}"
        d.mkdir(parents=True)
        os.chown(d, AGENT_UID, AGENT_UID)
    hostpath_claim(cluster, ns, "spill", host_dir)
    return host_dir


def on_real_pods(cluster, s3, ns: str, job: dict, inputs_on: str = "volume") -> tuple[dict, str]:
    """The job rewired for this tier: the project image, never pulled; spill on a hostPath volume (a
    directory per agent); file inputs copied once onto a claim every agent mounts read-only at DATA
    (spec.volumes: the operator refuses local paths no volume backs), or with inputs_on="s3" uploaded
    next to the output; the output on S3 (a bucket of its own, `spec.storage.s3` with the Secret
    holding the keys), since agent 0 commits the result by moving every agent's staged part into
    place. Returns the job and its output path."""
    job = json.loads(json.dumps(job))
    spec = job["spec"]
    spec["image"] = cluster.image
    spec["imagePullPolicy"] = "Never"
    spec["spill"] = {"persistentVolumeClaim": {"claimName": "spill"}}
    output_volume(cluster, ns, job)
    pipeline = spec["pipeline"]
    spec["storage"], path = s3.output_for(cluster, ns, job["metadata"]["name"])
    files = {name: source for name, source in pipeline["inputs"].items() if "path" in source and "://" not in source["path"]}
    if files and inputs_on == "s3":
        bucket = path[len("s3://"):].split("/", 1)[0]
        for input_name, source in files.items():
            local = (REPO / source["path"]).resolve()
            pafs.copy_files(str(local), f"{bucket}/inputs/{input_name}", destination_filesystem=s3.filesystem())
            source["path"] = f"s3://{bucket}/inputs/{input_name}/"
    elif files:
        data_dir = cluster.node.workdir / "volumes" / f"{ns}-{job['metadata']['name']}-data"
        for input_name, source in files.items():
            shutil.copytree((REPO / source["path"]).resolve(), data_dir / input_name)  # world-readable, as in the checkout
            source["path"] = f"{DATA}/{input_name}/"
        hostpath_claim(cluster, ns, "data", data_dir, "ReadOnlyMany")
        spec["volumes"] = [{"name": "data", "mountPath": DATA, "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}]
    pipeline["output"] = {**pipeline.get("output", {"format": "parquet"}), "path": path}
    return job, path


def read_output(s3, path: str, agents: int | None = None) -> pa.Table:
    """The result published at `path`; with `agents`, also that its manifest lists a part per agent."""
    manifest, table = s3.read(path)
    if agents is not None:
        assert [p["name"] for p in manifest["parts"]] == [f"part-{i:05d}.parquet" for i in range(agents)], manifest
    return table


def reference(job: dict, inputs_dir: Path | None = None) -> pa.Table:
    """What the job computes, in one process with pyarrow."""
    from sabot_agent.inputs import generate_table
    from sabot_agent.jobspec import validate_job

    pipeline = job["spec"]["pipeline"]
    spec = validate_job({**job, "spec": {k: v for k, v in job["spec"].items()
                                        if k in ("agents", "slotsPerAgent", "pipeline")}})

    def table(name: str) -> pa.Table:
        source = pipeline["inputs"][name]
        if "path" in source:
            return ds.dataset(str(REPO / source["path"]), format="parquet").to_table()
        return generate_table(spec.inputs[name])

    if "aggregate" in pipeline:
        agg = pipeline["aggregate"]
        grouped = table(agg["input"]).group_by(agg["groupBy"]).aggregate(
            [(a["column"], PYARROW_AGG[a["function"]]) for a in agg["aggregations"]])
        columns = {key: grouped[key] for key in agg["groupBy"]}
        for a in agg["aggregations"]:
            columns[a.get("as", f"{a['column']}_{a['function']}")] = grouped[f"{a['column']}_{PYARROW_AGG[a['function']]}"]
        return pa.table(columns)
    join = pipeline["join"]
    return table(join["left"]).join(table(join["right"]), keys=join["on"],
                                    join_type=PYARROW_JOIN[join.get("how", "inner")], right_suffix="_right")


def assert_equal_tables(actual: pa.Table, expected: pa.Table) -> None:
    assert actual.num_rows == expected.num_rows, (actual.num_rows, expected.num_rows)
    actual = actual.select(expected.column_names)
    exact = [n for n in expected.column_names if not pa.types.is_floating(expected.schema.field(n).type)]
    # group keys first, then the rest: rows that tie on the exact columns (join output) still line up
    order = [(n, "ascending") for n in exact + [n for n in expected.column_names if n not in exact]]
    actual, expected = actual.sort_by(order), expected.sort_by(order)
    for name in expected.column_names:
        a, e = actual.column(name), expected.column(name)
        if name in exact:
            assert a.to_pylist() == e.to_pylist(), name
        else:
            diff = pc.abs(pc.subtract(a, e))
            bound = pc.add(pc.multiply(pc.abs(e), 1e-9), 1e-9)
            assert pc.all(pc.less_equal(diff, bound)).as_py() in (True, None), name


def scrape(pod: dict, port: int) -> str | None:
    ip = pod["status"].get("podIP")
    return scrape_ip(ip, port) if ip else None


def scrape_ip(ip: str, port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=1) as r:
            return r.read().decode()
    except OSError:
        return None


def run_job(cluster, ns: str, job: dict, *, timeout: float = 300, on_running=None) -> tuple[dict, str | None]:
    """Apply the job, scrape an agent's /metrics by pod IP while it runs, wait for a terminal phase.

    The example jobs take about a second once the agents run, so a thread polls every known pod IP every
    20 ms (pod IPs exist from sandbox creation on, before the agent starts serving)."""
    name = job["metadata"]["name"]
    port = job["spec"].get("metricsPort", 8080)
    targets: set[str] = set()
    found: dict[str, str] = {}
    done = threading.Event()

    def scraper():
        while not done.is_set() and "metrics" not in found:
            for ip in list(targets):
                text = scrape_ip(ip, port)
                if text and f'job="{name}"' in text:
                    found["metrics"] = text
                    break
            time.sleep(0.02)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(job))
    status = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            status = status_of(cluster, ns, name)
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            pods = agent_pods(cluster, ns, name)
            targets.update(p["status"]["podIP"] for p in pods if p["status"].get("podIP"))
            running = [p for p in pods if p["status"].get("phase") == "Running"]
            if on_running is not None and running and on_running(running):
                on_running = None
            time.sleep(0.1)
    finally:
        done.set()
        thread.join(timeout=5)
    events = cluster.kubectl("get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False).stdout
    assert status.get("phase") == "Succeeded", (
        f"status: {yaml.safe_dump(status)}\nevents:\n{events}\nagent logs:\n{agent_logs(cluster, ns, name)}")
    return status, found.get("metrics")


def agent_logs(cluster, ns: str, name: str) -> str:
    logs = []
    for d in sorted((cluster.node.workdir / "pod-logs").glob(f"{ns}_{name}-agent-*")):
        for f in sorted(d.rglob("*.log")):
            logs.append(f"--- {f.relative_to(cluster.node.workdir)}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(logs)[-8000:]


# ------------------------------------------------------------------------------------------ tests


def test_node_is_real_and_pods_reach_each_other(realpods_cluster):
    nodes = kget(realpods_cluster, "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == [realpods_cluster.node.name]
    info = nodes[0]["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://") and info["kubeletVersion"].startswith("v1.")


def test_e2e_suite_on_real_pods(realpods_cluster, operator, pod_s3):
    """tests/e2e (the suite kind runs) against this cluster, in a child pytest; the operator is ours; the
    results go to a bucket of the tier's S3 server (the suite creates the Secret in each namespace)."""
    bucket = pod_s3.bucket("e2e")
    env = {**os.environ, **pod_s3.server.env(), "SABOT_E2E_KUBECONFIG": str(realpods_cluster.kubeconfig),
           "SABOT_E2E_IMAGE": realpods_cluster.image, "SABOT_E2E_TIMEOUT": "300",
           "SABOT_E2E_OUTPUT": f"s3://{bucket}/", "SABOT_E2E_S3_ENDPOINT": pod_s3.server.url,
           "SABOT_E2E_S3_REGION": pod_s3.server.region}
    env.pop("SABOT_E2E_NAMESPACE", None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "tests/e2e"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    print(f"\n[realpods] tests/e2e on real pods: {time.monotonic() - started:.1f}s\n{proc.stdout[-3000:]}",
          file=sys.stderr)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-3000:]
    # every example on generated data ran (only the one reading local files skips), on shared storage
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("reads local files" in line for line in skipped), skipped


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_output_equals_reference(realpods_cluster, operator, pod_s3, namespace, example):
    job = yaml.safe_load(example.read_text())
    for source in job["spec"]["pipeline"]["inputs"].values():
        if "path" in source and not (REPO / source["path"]).is_dir():
            # The Parquet example's input is made by its script (deterministic, gitignored).
            subprocess.run([sys.executable, str(REPO / "examples" / "make_sales_parquet.py")], check=True, timeout=300)
    # file inputs from S3 here (test_volumes.py and test_chaos.py read theirs from a claim)
    rewired, output = on_real_pods(realpods_cluster, pod_s3, namespace, job, inputs_on="s3")
    started = time.monotonic()
    status, metrics = run_job(realpods_cluster, namespace, rewired)
    elapsed = time.monotonic() - started
    agents = job["spec"].get("agents", 1)
    assert sorted(a["index"] for a in status["agents"]) == list(range(agents))
    assert status["attempt"] == 1
    actual = read_output(pod_s3, output, agents)
    assert_equal_tables(actual, reference(job))
    assert sum(a["result"]["rowsOut"] for a in status["agents"]) == actual.num_rows
    assert status["output"] == {"uri": output, "rows": actual.num_rows, "parts": agents}  # where `sabot results --cluster` looks
    assert metrics and "# TYPE sabot_shuffle_bytes" in metrics and f'job="{job["metadata"]["name"]}"' in metrics, \
        (metrics or "no /metrics scraped by pod IP while the job ran")[:2000]
    print(f"\n[realpods] {example.stem}: Succeeded in {elapsed:.1f}s on {agents} real pods", file=sys.stderr)


def test_without_replacements_a_killed_agent_leads_to_a_retry_with_identical_output(realpods_cluster, operator, pod_s3, namespace):
    """The fallback when an agent cannot be replaced (here: recovery.maxAgentReplacements 0; test_chaos.py
    covers replacement): the attempt fails, its pods go, and the next attempt publishes the result."""
    job = yaml.safe_load((REPO / "examples" / "join-generated.yaml").read_text())
    job["metadata"]["name"] = "killed"
    job["spec"]["pipeline"]["inputs"]["sales"]["generate"]["rows"] = 3_000_000
    job["spec"]["retry"] = {"limit": 2, "backoffSeconds": 1}
    job["spec"]["recovery"] = {"maxAgentReplacements": 0}
    rewired, output = on_real_pods(realpods_cluster, pod_s3, namespace, job)
    killed = {}

    def kill_agent_1(pods):
        for pod in pods:
            if pod["metadata"]["labels"].get("sabot.io/agent-index") != "1":
                continue
            if pod["metadata"]["labels"].get("sabot.io/attempt") != "1":
                return True  # attempt 1 already over
            statuses = pod["status"].get("containerStatuses") or []
            if not statuses or "running" not in statuses[0].get("state", {}) or not statuses[0].get("containerID"):
                return False
            metrics = scrape(pod, pod["spec"]["containers"][0]["ports"][1]["containerPort"])
            if not metrics:
                return False  # not serving yet: the job has not started its work
            container = statuses[0]["containerID"].split("://", 1)[1]
            realpods_cluster.node.ctr("tasks", "kill", "-s", "SIGKILL", container)
            killed["pod"], killed["uid"] = pod["metadata"]["name"], pod["metadata"]["uid"]
            return True
        return False

    status, _ = run_job(realpods_cluster, namespace, rewired, timeout=600, on_running=kill_agent_1)
    assert killed, "agent 1 was never seen running"
    assert status["attempt"] == 2 and status["failedAttempts"] == 1, yaml.safe_dump(status)
    assert_equal_tables(read_output(pod_s3, output, 2), reference(job))
    events = realpods_cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                      "involvedObject.name=killed", "-o", "json").stdout
    assert "AttemptFailed" in events


def owned_by_job(obj: dict, job_uid: str) -> bool:
    return any(ref["uid"] == job_uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def test_agents_talk_mutual_tls_and_their_keys_and_policy_belong_to_the_job(realpods_cluster, operator, pod_s3, namespace):
    cluster = realpods_cluster
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    job = yaml.safe_load((REPO / "examples" / "groupby-generated.yaml").read_text())
    job["metadata"]["name"] = name = "secure"
    pipeline = job["spec"]["pipeline"]
    pipeline["inputs"]["sales"]["generate"]["rows"] = 6_000_000  # runs long enough to be called
    # a group-by exchanged between the agents, ordered: one result file, written by agent 0
    del pipeline["aggregate"]
    pipeline["sql"] = ("SELECT region_id, channel, sum(amount) AS total, count(amount) AS sales FROM sales "
                       "GROUP BY region_id, channel ORDER BY region_id, channel")  # fmt: skip
    rewired, output = on_real_pods(cluster, pod_s3, namespace, job)
    checked = {}

    def call_the_agents(pods):
        if len(pods) < 2 or not all(scrape(pod, 8080) for pod in pods):
            return False  # both agents serving
        job_uid = kget(cluster, "sabotjob", name, "-n", namespace)["metadata"]["uid"]
        secrets = {index: kget(cluster, "secret", f"{name}-agent-{index}-tls", "-n", namespace) for index in (0, 1)}
        policy = kget(cluster, "networkpolicy", f"{name}-agents", "-n", namespace)
        assert all(owned_by_job(obj, job_uid) for obj in [*secrets.values(), policy])
        files = {index: {key: base64.b64decode(value) for key, value in secret["data"].items()} for index, secret in secrets.items()}
        agent1 = next(pod for pod in pods if pod["metadata"]["labels"]["sabot.io/agent-index"] == "1")
        address = f"{agent1['status']['podIP']}:8815"
        server_name = f"agent-1.attempt-1.{name}.{namespace}.sabot.internal"
        call = flight.FlightCallOptions(timeout=10)

        def health(client):
            return json.loads(list(client.do_action(flight.Action("health", b"{}"), options=call))[0].body.to_pybytes())

        as_agent0 = flight.FlightClient(f"grpc+tls://{address}", tls_root_certs=files[0]["ca.crt"], cert_chain=files[0]["tls.crt"],
                                        private_key=files[0]["tls.key"], override_hostname=server_name)  # fmt: skip
        assert health(as_agent0)["agent"] == 1  # agent 0's own key is answered: the refusals below are refusals
        with pytest.raises(flight.FlightUnavailableError):
            health(flight.FlightClient(f"grpc+tcp://{address}"))
        with pytest.raises(flight.FlightUnavailableError):
            health(flight.FlightClient(f"grpc+tls://{address}", tls_root_certs=files[0]["ca.crt"], override_hostname=server_name))
        status = {"shuffle_id": f"{name}/attempt-1/stage-0", "producer": 0, "partitions": [0], "wait": 0}
        with pytest.raises(flight.FlightUnauthorizedError, match="answers only for its own outputs"):
            list(as_agent0.do_action(flight.Action("stage_status", json.dumps(status).encode()), options=call))
        assert health(as_agent0)["agent"] == 1
        for pod in pods:
            assert restricted_violations(pod["spec"]) == []
        checked.update(job_uid=job_uid, secrets=sorted(secrets), files=files)
        return True

    status, _ = run_job(cluster, namespace, rewired, timeout=600, on_running=call_the_agents)
    assert checked, "the agents were never seen serving"
    assert status["attempt"] == 1
    from sabot_agent.inputs import generate_table
    from sabot_agent.jobspec import validate_job

    sales = generate_table(validate_job(rewired).inputs["sales"])
    expected = sales.group_by(["region_id", "channel"]).aggregate([("amount", "sum"), ("amount", "count")])
    assert_equal_tables(read_output(pod_s3, output), expected.rename_columns(["region_id", "channel", "total", "sales"]))
    # the job is over: its keys are gone, its policy stays with it until the job is deleted
    selector = f"sabot.io/job-name={name}"
    wait_for(lambda: not kget(cluster, "secrets", "-n", namespace, "-l", selector)["items"], 30, what="the finished job's keys deleted")
    assert owned_by_job(kget(cluster, "networkpolicy", f"{name}-agents", "-n", namespace), checked["job_uid"])
    cluster.kubectl("delete", "sabotjob", name, "-n", namespace, "--timeout=60s")
    wait_for(lambda: not kget(cluster, "networkpolicies,configmaps,services,pods", "-n", namespace, "-l", selector)["items"], 60,
             what="the deleted job's children garbage-collected")
