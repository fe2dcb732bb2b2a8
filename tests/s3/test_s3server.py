"""The S3 tier: a real SeaweedFS S3 server (hack/s3/s3server.py) and pyarrow's S3 filesystem against it.

Fixtures (tests/conftest.py): s3_server (session), s3_bucket (a fresh bucket per test), s3_fs, s3_weed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import s3server

REPO = Path(__file__).resolve().parents[2]


def sample_table(n: int = 1000) -> pa.Table:
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "key": pa.array([f"k{i % 7}" for i in range(n)], pa.string()),
        "value": pa.array([i * 0.5 for i in range(n)], pa.float64()),
    })


def one_line(msg: str) -> str:
    return " ".join(msg.split())


# --------------------------------------------------------------------------- round trips


def test_parquet_round_trip(s3_fs, s3_bucket):
    table = sample_table()
    pq.write_table(table, f"{s3_bucket}/data/part-0.parquet", filesystem=s3_fs)
    got = ds.dataset(f"{s3_bucket}/data/part-0.parquet", format="parquet", filesystem=s3_fs).to_table()
    assert got.equals(table)


def test_csv_round_trip(s3_fs, s3_bucket):
    table = sample_table()
    with s3_fs.open_output_stream(f"{s3_bucket}/csv/part-0.csv") as out:
        pacsv.write_csv(table, out)
    got = ds.dataset(f"{s3_bucket}/csv/part-0.csv", format="csv", filesystem=s3_fs).to_table()
    assert got.schema == table.schema
    assert got.equals(table)


def test_arrow_ipc_round_trip(s3_fs, s3_bucket):
    table = sample_table()
    with s3_fs.open_output_stream(f"{s3_bucket}/ipc/part-0.arrow") as out:
        with pa.ipc.new_file(out, table.schema) as writer:
            writer.write_table(table, max_chunksize=300)
    got = ds.dataset(f"{s3_bucket}/ipc/part-0.arrow", format="arrow", filesystem=s3_fs).to_table()
    assert got.equals(table)


def test_partitioned_dataset_round_trip(s3_fs, s3_bucket):
    table = sample_table(100_000)
    ds.write_dataset(table, f"{s3_bucket}/ds", format="parquet", filesystem=s3_fs,
                     partitioning=ds.partitioning(pa.schema([("key", pa.string())]), flavor="hive"))
    assert len(s3_fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/ds"))) == 7  # key=k0 .. key=k6
    got = ds.dataset(f"{s3_bucket}/ds", format="parquet", filesystem=s3_fs, partitioning="hive").to_table()
    got = got.select(table.column_names).sort_by("id")
    assert got.equals(table)


def test_large_object_multipart_and_ranged_reads(s3_fs, s3_bucket):
    # ~40 MiB of Arrow IPC: several multipart parts (pyarrow uploads 10 MiB parts by default), stored
    # by the filer as several chunks; the dataset reader then reads record batches by byte range.
    table = sample_table(2_000_000)
    path = f"{s3_bucket}/big/part-0.arrow"
    with s3_fs.open_output_stream(path) as out:
        with pa.ipc.new_file(out, table.schema) as writer:
            writer.write_table(table, max_chunksize=250_000)
    assert s3_fs.get_file_info(path).size > 30 * 2**20
    got = ds.dataset(path, format="arrow", filesystem=s3_fs).to_table()
    assert got.equals(table)
    tail = ds.dataset(path, format="arrow", filesystem=s3_fs).to_table(filter=ds.field("id") >= 1_999_990)
    assert tail.column("id").to_pylist() == list(range(1_999_990, 2_000_000))


def test_list_a_prefix(s3_fs, s3_bucket):
    for name in ("in/a.parquet", "in/b.parquet", "in/sub/c.parquet", "other/d.parquet"):
        pq.write_table(sample_table(10), f"{s3_bucket}/{name}", filesystem=s3_fs)
    flat = s3_fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/in"))
    assert sorted((i.path, i.type) for i in flat) == [
        (f"{s3_bucket}/in/a.parquet", pafs.FileType.File),
        (f"{s3_bucket}/in/b.parquet", pafs.FileType.File),
        (f"{s3_bucket}/in/sub", pafs.FileType.Directory),
    ]
    deep = s3_fs.get_file_info(pafs.FileSelector(f"{s3_bucket}/in", recursive=True))
    assert sorted(i.path for i in deep if i.type == pafs.FileType.File) == [
        f"{s3_bucket}/in/a.parquet", f"{s3_bucket}/in/b.parquet", f"{s3_bucket}/in/sub/c.parquet"]
    assert all(i.size > 0 for i in deep if i.type == pafs.FileType.File)
    # A dataset over the prefix reads the three files under it, not "other/".
    assert ds.dataset(f"{s3_bucket}/in", format="parquet", filesystem=s3_fs).count_rows() == 30


def test_stdlib_client_and_buckets(s3_server, s3_bucket):
    assert s3_bucket in s3_server.list_buckets()
    status, _ = s3_server.request("PUT", f"/{s3_bucket}/hello.txt", b"hello")
    assert status == 200
    assert s3_server.request("GET", f"/{s3_bucket}/hello.txt") == (200, b"hello")


def test_env_configures_a_client_without_arguments(s3_server, s3_bucket):
    """s3_server.env() is all a client process needs (pyarrow reads AWS_ENDPOINT_URL)."""
    s3_server.request("PUT", f"/{s3_bucket}/x.txt", b"from env")
    code = ("import pyarrow.fs as f, sys; fs, path = f.FileSystem.from_uri(sys.argv[1]);"
            "print(fs.open_input_stream(path).read().decode())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env())
    out = subprocess.run([sys.executable, "-c", code, f"s3://{s3_bucket}/x.txt"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from env"


# --------------------------------------------------------------------------- errors


def _error_of(fn) -> str:
    with pytest.raises(OSError) as ei:
        fn()
    return str(ei.value)


def test_wrong_secret_key_is_access_denied(s3_server, s3_bucket):
    pq.write_table(sample_table(10), f"{s3_bucket}/a.parquet", filesystem=s3_server.filesystem())
    wrong = "W" * 40
    fs = s3_server.filesystem(secret_key=wrong)
    msgs = [_error_of(lambda: fs.get_file_info(f"{s3_bucket}/a.parquet")),
            _error_of(lambda: ds.dataset(f"{s3_bucket}/a.parquet", format="parquet", filesystem=fs).to_table()),
            _error_of(lambda: pq.write_table(sample_table(10), f"{s3_bucket}/b.parquet", filesystem=fs))]
    for msg in msgs:
        print("wrong secret key:", one_line(msg))
        assert re.search(r"access.?denied|signature.?does.?not.?match", msg, re.I), msg
        assert "\n" not in msg.strip()
        assert wrong not in msg and s3_server.secret_key not in msg
    # The stdlib client sees the same refusal.
    status, body = s3server.s3_request(s3_server.endpoint, "GET", "/", access_key=s3_server.access_key,
                                       secret_key=wrong, region=s3_server.region)
    assert status == 403, body


def test_unknown_access_key_is_refused(s3_server, s3_bucket):
    fs = s3_server.filesystem(access_key="NOSUCHKEY0000")
    msg = _error_of(lambda: fs.get_file_info(pafs.FileSelector(s3_bucket)))
    print("unknown access key:", one_line(msg))
    assert re.search(r"access.?denied|invalid.?access.?key.?id", msg, re.I), msg
    assert "\n" not in msg.strip()
    assert s3_server.secret_key not in msg


def test_unknown_bucket_fails(s3_fs, s3_server):
    bucket = f"nosuch-{uuid.uuid4().hex[:8]}"
    # pyarrow.dataset checks the path first: a plain FileNotFoundError naming it.
    dataset = _error_of(lambda: ds.dataset(f"{bucket}/x.parquet", format="parquet", filesystem=s3_fs))
    read = _error_of(lambda: s3_fs.open_input_file(f"{bucket}/x.parquet"))
    listing = _error_of(lambda: s3_fs.get_file_info(pafs.FileSelector(f"{bucket}/in")))
    write = _error_of(lambda: pq.write_table(sample_table(10), f"{bucket}/x.parquet", filesystem=s3_fs))
    for what, msg in (("dataset", dataset), ("read", read), ("list", listing), ("write", write)):
        print(f"unknown bucket ({what}):", one_line(msg))
        assert bucket in msg, msg
        assert "\n" not in msg.strip()
        assert s3_server.secret_key not in msg
    assert "NO_SUCH_BUCKET" in listing and "NO_SUCH_BUCKET" in write
    assert bucket not in s3_server.list_buckets()  # writing did not create it


@pytest.mark.parametrize("max_attempts", [1, 3], ids=["no-retries", "default-retries"])
def test_unreachable_endpoint_fails_fast(max_attempts):
    port = s3server.free_port()  # nothing listens there
    fs = pafs.S3FileSystem(access_key="k", secret_key="s3cr3t-value", region="us-east-1",
                           endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           connect_timeout=1, request_timeout=2,
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts))
    t = time.monotonic()
    msg = _error_of(lambda: fs.get_file_info(pafs.FileSelector("bucket/in")))
    took = time.monotonic() - t
    print(f"unreachable endpoint, {max_attempts} attempt(s) ({took:.2f}s):", one_line(msg))
    assert took < 5, took
    assert "\n" not in msg.strip()
    assert "s3cr3t-value" not in msg


def test_silent_endpoint_times_out():
    """A peer that accepts the TCP connection but never answers: request_timeout bounds the wait."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)  # never accept()ed: the kernel completes the handshake, nobody answers
        fs = pafs.S3FileSystem(access_key="k", secret_key="s3cr3t-value", region="us-east-1",
                               endpoint_override=f"127.0.0.1:{srv.getsockname()[1]}", scheme="http",
                               connect_timeout=1, request_timeout=2,
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        t = time.monotonic()
        msg = _error_of(lambda: fs.get_file_info(pafs.FileSelector("bucket/in")))
        took = time.monotonic() - t
    print(f"silent endpoint ({took:.2f}s):", one_line(msg))
    assert took < 10, took
    assert "s3cr3t-value" not in msg


# --------------------------------------------------------------------------- lifecycle


def _leftover_sockets(ports: dict[str, int]) -> list[str]:
    return [p for name in s3server.GRPC_SOCKET_SERVICES
            if os.path.exists(p := f"/tmp/seaweedfs-{name}-grpc-{ports[name + '_grpc']}.sock")]


def test_start_stop_leaves_nothing_behind(s3_weed):
    server = s3server.S3Server(s3_weed, access_key="fixedkey", secret_key="fixed-secret-0123456789")
    server.start()
    pid, workdir, ports = server.pid, server.workdir, dict(server.ports)
    try:
        assert server.endpoint == f"127.0.0.1:{ports['s3']}"
        assert server.env()["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{ports['s3']}"
        assert server.list_buckets() == []
        # Every listener is on the bind address, each on the port it was given.
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        ours = sorted(line.split()[3] for line in listening.splitlines() if f"pid={pid}," in line)
        assert ours == sorted(f"127.0.0.1:{p}" for p in ports.values()), ours
    finally:
        t = time.monotonic()
        server.stop()
        took = time.monotonic() - t
    print(f"stop took {took:.2f}s")
    assert not s3server.pid_alive(pid)
    assert not workdir.exists()
    assert _leftover_sockets(ports) == []


def test_failed_start_tears_down(tmp_path):
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'F1201 fake weed: cannot start' >&2\nexit 1\n")
    fake.chmod(0o755)
    server = s3server.S3Server(fake)
    workdir = server.workdir
    with pytest.raises(s3server.S3ServerError, match="(?s)weed exited with 1.*cannot start"):
        server.start(timeout=20)
    assert not workdir.exists()


def test_server_dies_with_a_killed_parent(s3_weed):
    """PR_SET_PDEATHSIG: a SIGKILLed pytest (here: a child python) leaves no weed behind."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import s3server;"
            "s = s3server.S3Server(sys.argv[2]).start(); print(s.pid, s.workdir, json.dumps(s.ports), flush=True);"
            "time.sleep(600)").replace("import sys", "import json, sys")
    parent = subprocess.Popen([sys.executable, "-c", code, str(REPO / "hack" / "s3"), str(s3_weed)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        pid, workdir, ports = parent.stdout.readline().split(maxsplit=2)
        assert s3server.pid_alive(int(pid))
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and s3server.pid_alive(int(pid)):
        time.sleep(0.1)
    assert not s3server.pid_alive(int(pid))
    # What the killed parent could not clean up: its temp dir, and weed's fixed-path gRPC sockets in /tmp
    # (a later weed on the same port removes a stale one before binding).
    shutil.rmtree(workdir, ignore_errors=True)
    s3server._remove_grpc_sockets(json.loads(ports))
    assert _leftover_sockets(json.loads(ports)) == []


def test_port_in_use_fails_and_cleans_up(s3_weed, s3_server):
    server = s3server.S3Server(s3_weed, port=s3_server.port)  # taken by the session's server
    workdir = server.workdir
    with pytest.raises(s3server.S3ServerError):
        server.start(timeout=30)
    assert not workdir.exists()
    assert server.pid and not s3server.pid_alive(server.pid)
    assert s3_server.list_buckets() is not None  # the session's server is unharmed


# --------------------------------------------------------------------------- another address


NETNS = "sabot-s3-test"
HOST_IF, NS_IF = "sabots3h0", "sabots3n0"
HOST_IP, NS_IP = "10.250.77.1", "10.250.77.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def veth_netns():
    """A network namespace joined to this one by a veth pair: HOST_IP here, NS_IP there (like a pod on
    the real-pods bridge). Created and deleted by this fixture."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 (ip) to create a network namespace")
    _ip("netns", "del", NETNS, check=False)
    _ip("link", "del", HOST_IF, check=False)
    try:
        _ip("netns", "add", NETNS)
        _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NETNS)
        _ip("addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        _ip("link", "set", HOST_IF, "up")
        _ip("-n", NETNS, "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        _ip("-n", NETNS, "link", "set", NS_IF, "up")
        _ip("-n", NETNS, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        _ip("netns", "del", NETNS, check=False)
        _ip("link", "del", HOST_IF, check=False)
        pytest.skip(f"cannot create a veth pair / network namespace here: {e.stderr.strip()}")
    try:
        yield NETNS
    finally:
        _ip("link", "del", HOST_IF, check=False)
        _ip("netns", "del", NETNS, check=False)


def test_bound_to_a_non_loopback_address_reachable_from_another_netns(s3_weed, veth_netns):
    server = s3server.S3Server(s3_weed, host=HOST_IP)
    server.start()
    try:
        assert server.endpoint.startswith(f"{HOST_IP}:")
        server.create_bucket("from-host")
        # A client in the other namespace (like a pod) lists the buckets through HOST_IP.
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import s3server; a = json.loads(sys.argv[2]);"
                "st, body = s3server.s3_request(a['endpoint'], 'GET', '/', access_key=a['ak'], secret_key=a['sk'],"
                " region=a['region']); print(st); print(body.decode())")
        args = json.dumps({"endpoint": server.endpoint, "ak": server.access_key, "sk": server.secret_key,
                           "region": server.region})
        out = subprocess.run(["ip", "netns", "exec", veth_netns, sys.executable, "-c", code,
                              str(REPO / "hack" / "s3"), args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "200" and "<Name>from-host</Name>" in out.stdout, out.stdout
        # pyarrow on the host through the same address.
        fs = server.filesystem()
        pq.write_table(sample_table(100), "from-host/t.parquet", filesystem=fs)
        assert ds.dataset("from-host/t.parquet", format="parquet", filesystem=fs).to_table().equals(sample_table(100))
        # S3 is not on loopback: every port is bound to HOST_IP, except the admin server's two, which
        # weed mini keeps on loopback (no admin password is set).
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", server.port)) != 0
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        ours = sorted(line.split()[3] for line in listening.splitlines() if f"pid={server.pid}," in line)
        want = [f"{'127.0.0.1' if name.startswith('admin') else HOST_IP}:{port}" for name, port in server.ports.items()]
        assert ours == sorted(want), ours
    finally:
        server.stop()
    assert not s3server.pid_alive(server.pid)


# --------------------------------------------------------------------------- the CLI (make s3)


def test_cli_up_status_down(s3_weed, tmp_path):
    state = tmp_path / "state"
    cli = [sys.executable, str(REPO / "hack" / "s3" / "s3server.py")]
    up = subprocess.run([*cli, "up", "--state-dir", str(state), "--bin", str(s3_weed)],
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        assert set(exports) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "SABOT_S3_ENDPOINT", "SABOT_S3_BUCKET"}
        assert exports["SABOT_S3_BUCKET"] == "sabot"
        assert (state / ".gitignore").read_text() == "*\n"
        # The detached server serves pyarrow with exactly the printed settings.
        fs = pafs.S3FileSystem(access_key=exports["AWS_ACCESS_KEY_ID"], secret_key=exports["AWS_SECRET_ACCESS_KEY"],
                               region=exports["AWS_DEFAULT_REGION"], endpoint_override=exports["SABOT_S3_ENDPOINT"],
                               scheme="http")
        pq.write_table(sample_table(10), "sabot/t.parquet", filesystem=fs)
        st = subprocess.run([*cli, "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=30)
        assert st.returncode == 0 and "running" in st.stdout and "ListBuckets: HTTP 200 (sabot)" in st.stdout, st.stdout
        again = subprocess.run([*cli, "up", "--state-dir", str(state), "--bin", str(s3_weed)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
        pid = json.loads((state / "state.json").read_text())["pid"]
    finally:
        down = subprocess.run([*cli, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert not s3server.pid_alive(pid)
    st = subprocess.run([*cli, "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=30)
    assert st.returncode == 1 and "not running" in st.stdout
