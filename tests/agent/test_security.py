"""Secure by default, with real agent processes on 127.0.0.1: mutual TLS between a job's agents (who
may call an agent, and what a caller may ask), the keys `sabot run` writes and removes, the checks of
the agent's TLS flags, and errors and HTTP endpoints that give nothing away."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.flight as flight
import pytest
import yaml
from cryptography import x509

from helpers import agent_processes, child_env, require_native, start_sabot_run, stop_process
from sabot_agent.inputs import generate_table
from sabot_agent.jobspec import validate_job
from sabot_agent.local import LOOPBACK, LocalCluster, local_certificates, write_certificates
from sabot_agent.security import AgentIdentity, AgentTLS, JobCertificates, TLSConfigError, issue_job_certificates
from sabot_agent.settings import FAILPOINT_ENV

JOB = "secure"
TIMEOUT = 120


def job_doc(tmp_path, name: str = JOB, rows: int = 2_000_000, security: dict | None = None) -> dict:
    """A group-by of 2 agents big enough to still run while a test calls its agents."""
    spec = {
        "agents": 2,
        "slotsPerAgent": 2,
        "pipeline": {
            "inputs": {"sales": {"generate": {"rows": rows, "seed": 5, "columns": {"k": {"type": "int64", "distinct": 100_000},
                                                                                     "v": {"type": "float64", "distinct": 1000}}}}},
            "shuffle": {"partitions": 8},
            "aggregate": {"input": "sales", "groupBy": ["k"], "aggregations": [{"column": "v", "function": "sum", "as": "total"}]},
            "output": {"format": "parquet", "path": str(tmp_path / "out")},
        },
    }  # fmt: skip
    if security is not None:
        spec["security"] = security
    return {"apiVersion": "sabot.io/v1alpha1", "kind": "SabotJob", "metadata": {"name": name}, "spec": spec}


def write_job(tmp_path, doc: dict):
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def connect(port: int, ca: bytes | None = None, pair=None, name: str | None = None) -> flight.FlightClient:
    """A Flight client of an agent: plaintext without `ca`; else TLS trusting `ca`, presenting `pair`
    (a KeyPair) if given, and insisting on the server name `name`."""
    if ca is None:
        return flight.FlightClient(f"grpc+tcp://{LOOPBACK}:{port}")
    options = {"tls_root_certs": ca, "override_hostname": name}
    if pair is not None:
        options.update(cert_chain=pair.certificate, private_key=pair.key)
    return flight.FlightClient(f"grpc+tls://{LOOPBACK}:{port}", **options)


CALL = flight.FlightCallOptions(timeout=10)


def action(connection: flight.FlightClient, kind: str, body: dict | None = None) -> dict:
    results = list(connection.do_action(flight.Action(kind, json.dumps(body or {}).encode()), options=CALL))
    return json.loads(results[0].body.to_pybytes())


def refused(call, error=flight.FlightError) -> str:
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "Traceback" not in message, message
    return message


def expected_totals(doc: dict) -> pa.Table:
    sales = generate_table(validate_job(doc).inputs["sales"])
    expected = sales.group_by("k").aggregate([("v", "sum")]).rename_columns(["k", "total"])
    return expected.sort_by("k")


def test_certificates_name_each_agent_and_load(tmp_path):
    certificates = local_certificates("job-a", 3, 2)
    arguments = write_certificates(str(tmp_path / "tls"), certificates)
    assert stat.S_IMODE(os.stat(tmp_path / "tls").st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(path).st_mode) for path in (tmp_path / "tls").iterdir()} == {0o600}
    authority = x509.load_pem_x509_certificate(certificates.ca)
    assert authority.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for index, argv in arguments.items():
        files = dict(zip(argv[::2], argv[1::2]))
        tls = AgentTLS.load(files["--tls-cert"], files["--tls-key"], files["--tls-ca"])
        assert tls.identity == AgentIdentity("job-a", 3, index, "local")
        certificate = x509.load_pem_x509_certificate(tls.certificate)
        names = list(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        # the first SAN is what gRPC reports as the caller's identity
        assert [name.value for name in names] == [f"agent-{index}.attempt-3.job-a.local.sabot.internal", "localhost",
                                                  ipaddress.ip_address(LOOPBACK), f"sabot://job-a/attempt-3/agent-{index}"]
        assert certificate.subject.rfc4514_string() == f"CN=job-a-agent-{index}"
        assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert tls.peer_name(1 - index) == f"agent-{1 - index}.attempt-3.job-a.local.sabot.internal"
    first = AgentTLS.load(*[dict(zip(arguments[0][::2], arguments[0][1::2]))[flag] for flag in ("--tls-cert", "--tls-key", "--tls-ca")])
    assert first.caller(b"agent-1.attempt-3.job-a.local.sabot.internal", 2) == 1
    for outsider in (b"agent-2.attempt-3.job-a.local.sabot.internal", b"agent-1.attempt-4.job-a.local.sabot.internal",
                     b"agent-1.attempt-3.job-b.local.sabot.internal", b"agent-1.attempt-3.job-a.team-x.sabot.internal",
                     b"job-a-agent-1", b"", b"\xff"):  # fmt: skip
        assert first.caller(outsider, 2) is None, outsider


def test_material_that_does_not_fit_is_refused_in_one_line(tmp_path):
    own = write_certificates(str(tmp_path / "own"), local_certificates(JOB, 0, 2))
    other = write_certificates(str(tmp_path / "other"), local_certificates(JOB, 0, 1))
    cert0, key0, ca = own[0][1], own[0][3], own[0][5]
    (tmp_path / "garbage").write_text("not a certificate")
    cases = [
        ((cert0, own[1][3], ca), "is not the key of --tls-cert"),
        ((other[0][1], other[0][3], ca), "was not issued by --tls-ca"),
        ((str(tmp_path / "garbage"), key0, ca), "is not a PEM certificate"),
        ((cert0, str(tmp_path / "garbage"), ca), "is not an unencrypted PEM private key"),
        ((cert0, key0, str(tmp_path / "missing")), "cannot read --tls-ca"),
    ]
    for files, expected in cases:
        with pytest.raises(TLSConfigError, match=expected) as caught:
            AgentTLS.load(*files)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "security, flags, expected",
    [
        (None, [], "spec.security.tls is enabled (the default): give --tls-cert, --tls-key and --tls-ca"),
        (None, ["agent1"], "--tls-cert names agent 1 of job 'secure' attempt 0, but this is agent 0 of job 'secure' attempt 0"),
        (None, ["partial"], "--tls-cert, --tls-key and --tls-ca go together"),
        ({"tls": "disabled"}, ["agent0"], "spec.security.tls is disabled, but --tls-cert/--tls-key/--tls-ca were given"),
    ],
    ids=["no-certificate", "another-agents-certificate", "partial", "disabled-but-given"],
)
def test_the_agent_refuses_tls_settings_that_do_not_fit_before_it_starts(tmp_path, security, flags, expected):
    arguments = write_certificates(str(tmp_path / "tls"), local_certificates(JOB, 0, 2))
    given = {"agent0": arguments[0], "agent1": arguments[1], "partial": arguments[0][:2]}
    job = write_job(tmp_path, job_doc(tmp_path, rows=1000, security=security))
    reason = tmp_path / "reason"
    completed = subprocess.run(
        [sys.executable, "-m", "sabot_agent", "--job", str(job), "--peers", "127.0.0.1:1,127.0.0.1:2", "--termination-log", str(reason),
         *[argument for flag in flags for argument in given[flag]]],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert expected in reason.read_text() and completed.stderr.strip().splitlines()[-1].startswith("sabot-agent: error: ")


def test_a_running_job_answers_only_its_own_agents_and_only_for_their_own_outputs(tmp_path):
    """Agents of a running job, called by: a plaintext client, a TLS client without a certificate,
    one with a certificate of another CA, ones with certificates the job's own CA issued for another
    job or attempt (as a shared issuer would), and one with agent 0's certificate asking agent 1 about
    agent 0's outputs, trying DoPut or a commit. All are refused; the job's result is the reference."""
    require_native()
    doc = job_doc(tmp_path)
    path = write_job(tmp_path, doc)
    identities = [AgentIdentity(JOB, 0, 0), AgentIdentity(JOB, 0, 1), AgentIdentity("other-job", 0, 0), AgentIdentity(JOB, 1, 0)]
    issued = issue_job_certificates(identities, [["localhost", LOOPBACK]] * len(identities))
    agent0, agent1, other_job, other_attempt = issued.agents
    foreign = local_certificates(JOB, 0, 2)  # a CA of its own, for the very same agent names
    (tmp_path / "run").mkdir()
    cluster = LocalCluster(str(path), 2, 2, 1, None, str(tmp_path / "run"), certificates=JobCertificates(issued.ca, [agent0, agent1]))
    try:
        cluster.start()
        port = cluster.agents[1].flight_port
        server_name = identities[1].name

        def as_agent0() -> flight.FlightClient:
            return connect(port, issued.ca, agent0, server_name)

        assert action(as_agent0(), "health")["agent"] == 1  # the right certificate is answered: refusals below are refusals
        refused(lambda: action(connect(port), "health"), flight.FlightUnavailableError)
        refused(lambda: action(connect(port, issued.ca, None, server_name), "health"), flight.FlightUnavailableError)
        refused(lambda: action(connect(port, issued.ca, foreign.agents[0], server_name), "health"), flight.FlightUnavailableError)
        # the client side pins the server: agent 1 does not pass for agent 0
        refused(lambda: action(connect(port, issued.ca, agent0, identities[0].name), "health"), flight.FlightUnavailableError)
        for outsider in (other_job, other_attempt):
            message = refused(lambda: action(connect(port, issued.ca, outsider, server_name), "health"), flight.FlightUnauthorizedError)
            assert "the client certificate names no agent of this job attempt" in message
            refused(lambda: connect(port, issued.ca, outsider, server_name).do_get(flight.Ticket(b"1:0"), options=CALL).read_all(),
                    flight.FlightUnauthorizedError)  # fmt: skip
        status = {"shuffle_id": f"{JOB}/attempt-0/stage-0", "producer": 0, "partitions": [0], "wait": 0}
        message = refused(lambda: action(as_agent0(), "stage_status", status), flight.FlightUnauthorizedError)
        assert "agent 1 answers only for its own outputs (producer 1)" in message

        def put():
            schema = pa.schema([("k", pa.int64())])
            writer, _ = as_agent0().do_put(flight.FlightDescriptor.for_command(b"1:0"), schema, options=CALL)
            writer.write_batch(pa.record_batch([pa.array([1])], schema=schema))
            writer.close()

        assert "DoPut is not served" in refused(put)
        assert "unknown action 'commit'" in refused(lambda: action(as_agent0(), "commit", {"shuffle_id": status["shuffle_id"]}))
        assert action(as_agent0(), "health")["agent"] == 1  # still serving
        deadline = time.monotonic() + TIMEOUT
        while None in cluster.poll():
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.05)  # polling the agents' exit
        assert cluster.poll() == [0, 0], [agent.failure_reason() for agent in cluster.agents]
        results = [agent.result() for agent in cluster.agents]
    finally:
        cluster.stop()
    actual = ds.dataset(str(tmp_path / "out"), format="parquet").to_table().sort_by("k")
    assert sum(result["rows_out"] for result in results) == actual.num_rows
    assert actual.equals(expected_totals(doc).cast(actual.schema))
    assert not (tmp_path / "run" / "tls").exists()


def _listening(workdir, index: int) -> dict | None:
    try:
        for line in (workdir / f"agent-{index}.err").read_text().splitlines():
            if line.startswith('{"event": "listening"'):
                return json.loads(line)
    except OSError:
        return None
    return None


def _sabot_run(tmp_path, doc: dict, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, object]:
    path = write_job(tmp_path, doc)
    return start_sabot_run(path, tmp_path, *args, env=env), path


def _agent_argv(run: subprocess.Popen, path) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        assert run.poll() is None and time.monotonic() < deadline, "no agent started"
        found = agent_processes(path)
        if found:
            return next(iter(found.values()))
        time.sleep(0.01)  # polling for the first agent process


def test_sabot_run_talks_tls_and_leaves_no_key_on_disk(tmp_path):
    require_native()
    run, path = _sabot_run(tmp_path, job_doc(tmp_path), "--keep-workdir")
    try:
        argv = _agent_argv(run, path)
        certificate = argv[argv.index("--tls-cert") + 1]
        workdir = Path(certificate).parent.parent
        assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
        deadline = time.monotonic() + 60
        while os.path.exists(os.path.dirname(certificate)):  # removed once every agent listens (it read its key first)
            assert time.monotonic() < deadline, "the keys stayed on disk"
            time.sleep(0.01)  # polling for the removal
        listening = _listening(workdir, 0)
        refused(lambda: action(connect(listening["flight_port"]), "health"), flight.FlightUnavailableError)
        with urllib.request.urlopen(f"http://{LOOPBACK}:{listening['http_port']}/healthz", timeout=5) as response:
            assert response.status == 200  # the agent was there to refuse
        stdout, stderr = run.communicate(timeout=TIMEOUT)
    finally:
        stop_process(run, grace=0)
    assert run.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "Succeeded"
    assert (workdir / "agent-0.err").exists() and not [name for name in os.listdir(workdir) if name == "tls" or name.endswith(".key")]


def test_an_interrupted_sabot_run_removes_its_keys_too(tmp_path):
    require_native()
    # agent 0 stops itself at its first task, so the run is still going when it is interrupted (a small
    # job can finish before the interrupt arrives)
    run, path = _sabot_run(tmp_path, job_doc(tmp_path), "--keep-workdir", env={FAILPOINT_ENV: "0:task:0:stop"})
    try:
        argv = _agent_argv(run, path)  # as early as the first agent exists: the keys are on disk
        workdir = os.path.dirname(os.path.dirname(argv[argv.index("--tls-cert") + 1]))
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=TIMEOUT)
    finally:
        stop_process(run, grace=0)
    assert run.returncode == 130
    assert os.path.isdir(workdir) and not os.path.exists(os.path.join(workdir, "tls"))


def test_a_job_with_tls_disabled_runs_plaintext(tmp_path):
    require_native()
    doc = job_doc(tmp_path, rows=50_000, security={"tls": "disabled"})
    run, path = _sabot_run(tmp_path, doc)
    try:
        assert "--tls-cert" not in _agent_argv(run, path)
        stdout, stderr = run.communicate(timeout=TIMEOUT)
    finally:
        stop_process(run, grace=0)
    assert run.returncode == 0, stderr
    actual = ds.dataset(str(tmp_path / "out"), format="parquet").to_table().sort_by("k")
    assert actual.equals(expected_totals(doc).cast(actual.schema))


def test_errors_carry_no_traceback_and_unserved_methods_are_refused(serve_agent):
    agent = serve_agent("plain")
    connection = connect(agent.flight_port)
    assert "not found: unknown shuffle hash 42" in refused(lambda: connection.do_get(flight.Ticket(b"42:0"), options=CALL).read_all())
    descriptor = flight.FlightDescriptor.for_command(b"1:0")
    assert "GetFlightInfo is not served" in refused(lambda: connection.get_flight_info(descriptor, options=CALL))
    # pyarrow's client raises a plain OSError for a failed GetSchema
    assert "GetSchema is not served" in refused(lambda: connection.get_schema(descriptor, options=CALL), OSError)

    def exchange():
        writer, reader = connection.do_exchange(descriptor, options=CALL)
        writer.close()
        reader.read_all()

    assert "DoExchange is not served" in refused(exchange)
    assert action(connection, "stats")["shuffles"] == 0 and agent.process.poll() is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"])
def test_the_http_port_answers_get_only(serve_agent, method):
    agent = serve_agent("http")
    for path in ("/metrics", "/status", "/nope"):
        request = urllib.request.Request(f"http://{LOOPBACK}:{agent.http_port}{path}", method=method, data=b"x" if method in ("POST", "PUT") else None)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 405 and caught.value.headers["Allow"] == "GET", (method, path)
    assert agent.http_get("/nope")[0] == 404 and agent.http_get("/status")[0] == 200
    with urllib.request.urlopen(f"http://{LOOPBACK}:{agent.http_port}/healthz", timeout=5) as response:
        assert response.headers["Server"] == "sabot-agent"  # no software versions
