"""The job-file schema: valid examples load, every kind of invalid file is rejected naming the field."""

from __future__ import annotations

import copy
import glob
import os
import shutil
import tempfile
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import REPO
from sabot_agent.inputs import GENERATE_BATCH_ROWS, InputError, generate_table, read_share, resolve_schema
from sabot_agent.jobspec import (
    InputSpec,
    JOB_SCHEMA,
    MAX_AGENTS,
    MAX_GENERATED_ROWS,
    MAX_JOB_NAME_LENGTH,
    PIPELINE_SCHEMA,
    JobSpecError,
    kubernetes_openapi_schema,
    load_job_file,
    parse_memory,
    validate_job,
)
from sabot_agent.tickets import PartitionKey, TicketError, fnv1a_64, shuffle_id

BASE = {
    "apiVersion": "sabot.io/v1alpha1",
    "kind": "SabotJob",
    "metadata": {"name": "sales-by-region"},
    "spec": {
        "agents": 2,
        "slotsPerAgent": 2,
        "pipeline": {
            "inputs": {
                "sales": {
                    "generate": {
                        "rows": 100,
                        "seed": 1,
                        "columns": {"region_id": {"type": "int64", "distinct": 10}, "amount": {"type": "float64"}},
                    }
                },
                "regions": {"generate": {"rows": 10, "columns": {"region_id": {"type": "int64"}, "name": {"type": "string"}}}},
            },
            "shuffle": {"partitions": 4},
            "aggregate": {
                "input": "sales",
                "groupBy": ["region_id"],
                "aggregations": [{"column": "amount", "function": "sum", "as": "total"}],
            },
            "output": {"format": "parquet", "path": "out/x/"},
        },
    },
}


def problems_of(doc, resolve=None) -> list[str]:
    with pytest.raises(JobSpecError) as caught:
        validate_job(doc, resolve)
    return caught.value.problems


def modified(change) -> dict:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def test_valid_document_builds_the_job():
    job = validate_job(copy.deepcopy(BASE))
    assert (job.name, job.agents, job.slots_per_agent, job.partitions) == ("sales-by-region", 2, 2, 4)
    assert job.aggregate.group_by == ("region_id",)
    assert [(a.column, a.function, a.output) for a in job.aggregate.aggregations] == [("amount", "sum", "total")]
    assert job.inputs["sales"].rows == 100 and job.inputs["sales"].columns[1].distinct == 100


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "examples", "*.yaml"))))
def test_examples_are_valid(path):
    job = load_job_file(path)
    assert job.name and job.output.path.startswith("out/")


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d["spec"]["pipeline"].update(extra=1), "spec.pipeline.extra: unknown field"),
        (lambda d: d["spec"].update(agent=2), "spec.agent: unknown field"),
        (lambda d: d["spec"]["pipeline"]["aggregate"].update(input="salez"), "spec.pipeline.aggregate.input: unknown input 'salez'"),
        (lambda d: d["spec"].update(agents="2"), "spec.agents: expected integer, got str '2'"),
        (lambda d: d["spec"].update(agents=0), "spec.agents: must be >= 1, got 0"),
        (lambda d: d["spec"]["pipeline"]["shuffle"].update(partitions=-3), "spec.pipeline.shuffle.partitions: must be >= 1, got -3"),
        (lambda d: d["spec"]["pipeline"]["inputs"]["sales"]["generate"].update(rows=0), "spec.pipeline.inputs.sales.generate.rows: must be >= 1, got 0"),
        (lambda d: d["spec"]["pipeline"]["aggregate"]["groupBy"].__setitem__(0, "regon_id"),
         "spec.pipeline.aggregate.groupBy[0]: unknown column 'regon_id' in input 'sales'"),
        (lambda d: d["spec"]["pipeline"]["aggregate"]["aggregations"][0].update(function="median"),
         "spec.pipeline.aggregate.aggregations[0].function: 'median' is not one of count, sum, min, max, mean"),
        (lambda d: d["spec"]["pipeline"].pop("output"), "spec.pipeline.output: required field is missing"),
        (lambda d: d["spec"]["pipeline"]["inputs"]["sales"]["generate"]["columns"]["amount"].update(type="decimal"),
         "spec.pipeline.inputs.sales.generate.columns.amount.type: 'decimal' is not one of int64, float64, string"),
        (lambda d: d["spec"]["pipeline"].update(join={"left": "sales", "right": "regions", "on": ["region_id"]}),
         "spec.pipeline: needs exactly one of 'aggregate', 'join' or 'sql' (got aggregate, join)"),
        (lambda d: d["metadata"].update(name="Sales_By_Region"), "metadata.name: 'Sales_By_Region' must be a DNS label"),
        (lambda d: d["spec"]["pipeline"]["inputs"]["sales"].update(path="x/"), "spec.pipeline.inputs.sales: give either 'path'"),
    ],
)  # fmt: skip
def test_invalid_documents_name_the_field(change, expected):
    problems = problems_of(modified(change))
    assert any(problem.startswith(expected) for problem in problems), problems


def test_cluster_only_fields_are_ignored_but_typos_are_not():
    def cluster_fields(doc):
        doc["spec"].update(hostNetwork=True, flightPort=9000, retry={"limit": 2}, image="sabot:0.1.0", ttlSecondsAfterFinished=60)

    job = validate_job(modified(cluster_fields))
    assert job.agents == 2 and job.raw["spec"]["hostNetwork"] is True
    assert problems_of(modified(lambda d: d["spec"].update(hostNetwrok=True))) == ["spec.hostNetwrok: unknown field"]


def test_every_problem_is_listed_at_once():
    def break_twice(doc):
        doc["spec"]["agents"] = 0
        doc["spec"]["pipeline"]["shuffle"]["partitions"] = 0

    problems = problems_of(modified(break_twice))
    assert [p.split(":")[0] for p in problems] == ["spec.agents", "spec.pipeline.shuffle.partitions"]


def test_join_checks_keys_on_both_sides_and_their_types():
    def join(doc):
        pipeline = doc["spec"]["pipeline"]
        del pipeline["aggregate"]
        pipeline["inputs"]["regions"]["generate"]["columns"]["region_id"]["type"] = "string"
        pipeline["join"] = {"left": "sales", "right": "regions", "on": ["region_id", "amount"], "how": "inner"}

    problems = problems_of(modified(join))
    assert "spec.pipeline.join.on[0]: key 'region_id' is int64 in 'sales' but string in 'regions'" in problems
    assert any(p.startswith("spec.pipeline.join.on[1]: unknown column 'amount' in input 'regions'") for p in problems)


def test_sum_of_a_string_column_is_rejected():
    def sum_names(doc):
        doc["spec"]["pipeline"]["aggregate"]["input"] = "regions"
        doc["spec"]["pipeline"]["aggregate"]["aggregations"] = [{"column": "name", "function": "sum"}]

    assert problems_of(modified(sum_names)) == [
        "spec.pipeline.aggregate.aggregations[0].function: sum needs a numeric column, 'name' is string"
    ]


def test_file_input_columns_are_checked_when_schemas_are_resolved(tmp_path):
    pq.write_table(pa.table({"region_id": [1, 2], "amount": [1.0, 2.0]}), tmp_path / "part.parquet")

    def parquet_input(doc):
        doc["spec"]["pipeline"]["inputs"]["sales"] = {"format": "parquet", "path": str(tmp_path)}
        doc["spec"]["pipeline"]["aggregate"]["groupBy"] = ["regon_id"]

    doc = modified(parquet_input)
    assert validate_job(copy.deepcopy(doc)).inputs["sales"].path == str(tmp_path)  # without resolving, files are not read
    problems = problems_of(doc, resolve_schema)
    assert problems == ["spec.pipeline.aggregate.groupBy[0]: unknown column 'regon_id' in input 'sales' (columns: region_id, amount)"]

    def missing_path(doc):
        doc["spec"]["pipeline"]["inputs"]["sales"] = {"format": "parquet", "path": str(tmp_path / "nowhere")}

    assert problems_of(modified(missing_path), resolve_schema)[0].startswith("spec.pipeline.inputs.sales.path: cannot read parquet input")


def parquet_sales(doc, directory) -> None:
    doc["spec"]["pipeline"]["inputs"]["sales"] = {"format": "parquet", "path": str(directory)}


@pytest.mark.parametrize(
    "second, expected",
    [
        ({"region_id": [3]}, "{b} lacks column 'amount' that {a} has"),
        ({"region_id": [3], "amount": [3.0], "note": ["x"]}, "{b} has column 'note' that {a} lacks"),
        ({"region_id": [3], "amount": ["3"]}, "column 'amount' is string in {b} but double in {a}"),
    ],
    ids=["lacks", "extra", "conflicting-type"],
)
def test_files_of_one_input_must_agree_on_their_columns(tmp_path, second, expected):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"region_id": [1, 2], "amount": [1.0, 2.0]}), a)
    pq.write_table(pa.table(second), b)
    problems = problems_of(modified(lambda doc: parquet_sales(doc, tmp_path)), resolve_schema)
    assert problems == [f"spec.pipeline.inputs.sales.path: cannot read parquet input {str(tmp_path)!r}: input 'sales': " + expected.format(a=a, b=b)]


def as_nobody(check):
    """check() in a forked child that became uid/gid 65534 (root reads every file: as root, an unreadable
    file needs another user); its InputError's message, or None. Skips when the child cannot switch."""
    if os.geteuid() != 0:
        return _message_of(check)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(reader)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            except OSError as exc:
                message = f"skip: cannot become uid 65534: {exc.strerror}"
            else:
                message = _message_of(check) or ""
            os.write(writer, message.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)
    if message.startswith("skip: "):
        pytest.skip(f"needs a non-root user: {message[len('skip: '):]}")
    return message or None


def _message_of(check):
    try:
        check()
    except InputError as exc:
        return str(exc)
    return None


def test_an_unreadable_file_in_an_input_is_named():
    directory = tempfile.mkdtemp(prefix="sabot-unreadable-")  # not below tmp_path: its parents are private to root
    try:
        os.chmod(directory, 0o755)
        pq.write_table(pa.table({"region_id": [1], "amount": [1.0]}), os.path.join(directory, "a.parquet"))
        secret = os.path.join(directory, "b.parquet")
        pq.write_table(pa.table({"region_id": [2], "amount": [2.0]}), secret)
        os.chmod(directory + "/a.parquet", 0o644)
        os.chmod(secret, 0o600 if os.geteuid() == 0 else 0)
        spec = InputSpec(name="sales", format="parquet", path=directory)
        assert as_nobody(lambda: resolve_schema(spec)) == f"input 'sales': {secret} is not readable"
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize(
    "columns, expected",
    [
        ({"region_id": [[1], [2, 3]], "amount": [1.0, 2.0]},
         "spec.pipeline.aggregate.groupBy[0]: column 'region_id' is list<element: int64>, which cannot be a group key yet"),
        ({"region_id": [1, 2], "amount": [[1.0], [2.0]]},
         "spec.pipeline.aggregate.aggregations[0].column: 'amount' is list<element: double>, which cannot be aggregated yet"),
    ],
    ids=["groupBy", "aggregate"],
)  # fmt: skip
def test_a_list_column_cannot_be_grouped_or_aggregated(tmp_path, columns, expected):
    pq.write_table(pa.table(columns), tmp_path / "lists.parquet")
    assert problems_of(modified(lambda doc: parquet_sales(doc, tmp_path)), resolve_schema) == [expected]


def test_yaml_key_on_stays_a_string(tmp_path):
    path = tmp_path / "job.yaml"
    doc = modified(lambda d: None)
    del doc["spec"]["pipeline"]["aggregate"]
    doc["spec"]["pipeline"]["join"] = {"left": "sales", "right": "regions", "on": ["region_id"]}
    path.write_text(yaml.safe_dump(doc).replace("'on':", "on:"))
    assert "on:" in path.read_text()
    assert load_job_file(str(path)).join.left_on == ("region_id",)


def test_pipeline_schema_is_structural():
    """Kubernetes structural schema rules: a type on every node, bounds on every list/string/number."""

    def walk(node, where):
        assert "type" in node, f"{where} has no type"
        if node["type"] == "object":
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{where} is not closed"
                for name, child in node["properties"].items():
                    walk(child, f"{where}.{name}")
            else:
                assert isinstance(node.get("additionalProperties"), dict) and "maxProperties" in node, f"{where} map is unbounded"
                walk(node["additionalProperties"], f"{where}.*")
        elif node["type"] == "array":
            assert "maxItems" in node, f"{where} list is unbounded"
            walk(node["items"], f"{where}[]")
        elif node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"{where} string is unbounded"
        elif node["type"] in ("integer", "number"):
            assert "minimum" in node and "maximum" in node, f"{where} number is unbounded"

    walk(PIPELINE_SCHEMA, "pipeline")
    assert JOB_SCHEMA["properties"]["spec"]["properties"]["pipeline"] is PIPELINE_SCHEMA
    crd = kubernetes_openapi_schema()
    assert "additionalProperties" not in crd and crd["properties"]["shuffle"]["properties"]["partitions"]["minimum"] == 1
    assert PIPELINE_SCHEMA["additionalProperties"] is False  # the original is untouched


def test_memory_quantities():
    assert [parse_memory(text) for text in ("1024", "2Ki", "256Mi", "1G")] == [1024, 2048, 256 << 20, 10**9]
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_memory("lots")


def test_fnv1a_golden_vectors_and_ticket_format():
    # FNV-1a-64 reference values: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c (as signed int64)
    assert fnv1a_64("") == 0xCBF29CE484222325 - (1 << 64)
    assert fnv1a_64("a") == 0xAF63DC4C8601EC8C - (1 << 64)
    assert fnv1a_64("foobar") == 0x85944171F73967E8 - (1 << 64)
    sid = shuffle_id("sales", 1, "aggregate")
    assert sid == "sales/attempt-1/aggregate" and fnv1a_64(sid) != fnv1a_64(shuffle_id("sales", 0, "aggregate"))
    key = PartitionKey.for_shuffle(sid, 7)
    assert key.encode() == f"{fnv1a_64(sid)}:7".encode() and PartitionKey.decode(key.encode()) == key
    for bad, message in [(b"garbage", "expected '<shuffle_id_hash>:<partition_id>'"), (b"1:x", "decimal"), (b"1:-2", "partition_id"),
                         (b"99999999999999999999:1", "int64"), (b"\xff:1", "not ASCII"), (b"1" * 100, "longer")]:  # fmt: skip
        with pytest.raises(TicketError, match=message):
            PartitionKey.decode(bad)


def test_generated_data_is_the_same_however_it_is_split():
    job = validate_job(copy.deepcopy(BASE))
    spec = job.inputs["sales"]
    whole = generate_table(spec)
    for agents in (2, 3, 7):
        pieces = [batch for index in range(agents) for batch in read_share(spec, index, agents)]
        assert pa.Table.from_batches(pieces).equals(whole)
    assert whole.num_rows == 100 and pc_distinct(whole, "region_id") <= 10


def test_a_share_of_a_trillion_generated_rows_is_planned_without_listing_its_batches():
    """~950 K batches: their ranges and tasks are computed when they are run, not listed up front
    (that took 267 MiB and seconds)."""
    from sabot_agent.engine.stages import StageRunner
    from sabot_agent.plan.job import plan_job_inputs

    rows = MAX_GENERATED_ROWS
    job = validate_job(modified(lambda doc: doc["spec"]["pipeline"]["inputs"]["sales"]["generate"].update(rows=rows)))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        plan, infos = plan_job_inputs(job, 3, 2)
        shares = []
        for index in range(3):
            runner = StageRunner(job=job, plan=plan, infos=infos, agent_index=index, agent_count=3, attempt=0, store=None, reader=None,
                                 slots=None, slot_count=2, native=None, executor=None, on_progress=lambda progress: None)  # fmt: skip
            shares.append(runner._tasks(plan.stages[0]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20 and time.perf_counter() - started < 5, (peak, time.perf_counter() - started)
    assert sum(len(share) for share in shares) >= rows // GENERATE_BATCH_ROWS
    assert shares[0][0].rows == (0, GENERATE_BATCH_ROWS) and shares[2][-1].rows[1] == rows
    assert [share[-1].rows[1] for share in shares[:2]] == [share[0].rows[0] for share in shares[1:]]  # contiguous
    assert all(0 < stop - start <= GENERATE_BATCH_ROWS for share in shares for start, stop in (share[0].rows, share[-1].rows))
    first = next(read_share(job.inputs["sales"], 1, 3))
    assert first.num_rows == GENERATE_BATCH_ROWS and first.column("region_id").null_count == 0


def pc_distinct(table, column) -> int:
    return len(table.column(column).unique())


def test_a_key_given_twice_is_rejected_naming_the_key_and_its_line(tmp_path):
    path = tmp_path / "job.yaml"
    text = yaml.safe_dump(BASE, sort_keys=False)
    assert "\n  agents: 2\n  slotsPerAgent: 2\n" in text
    path.write_text(text.replace("\n  slotsPerAgent: 2\n", "\n  slotsPerAgent: 2\n  agents: 3\n"))
    first = text.splitlines().index("  agents: 2") + 1
    with pytest.raises(JobSpecError) as caught:
        load_job_file(str(path))
    assert caught.value.problems == [f"{path}: line {first + 2}, column 3: not valid YAML: duplicate key 'agents' (first given on line {first})"]
    assert str(caught.value) == f"invalid SabotJob: {caught.value.problems[0]}"  # one problem, one line


def test_yaml_merge_keys_may_repeat_a_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(BASE).replace("spec:\n", "defaults: &d {agents: 5}\nspec:\n  <<: *d\n", 1))
    with pytest.raises(JobSpecError, match="defaults: unknown field"):  # merged fine; only the extra top-level key is wrong
        load_job_file(str(path))


def test_a_job_file_that_is_not_utf8_names_the_line_and_byte(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"apiVersion: sabot.io/v1alpha1\nkind: SabotJob\nmetadata:\n  name: caf\xe9\n")
    with pytest.raises(JobSpecError) as caught:
        load_job_file(str(path))
    assert caught.value.problems == [f"{path}: line 4: not UTF-8 text (byte 0xe9 at offset 66)"]


def test_a_job_name_leaves_room_for_the_agent_pod_suffix():
    """Pods are named <name>-agent-<index>, a DNS label of at most 63 characters."""
    longest = "j" * MAX_JOB_NAME_LENGTH
    assert len(f"{longest}-agent-{MAX_AGENTS - 1}") == 63 and MAX_JOB_NAME_LENGTH == 52
    assert validate_job(modified(lambda d: d["metadata"].update(name=longest))).name == longest
    problems = problems_of(modified(lambda d: d["metadata"].update(name="j" * 60)))
    assert problems == ["metadata.name: longer than 52 characters (agent pods are named <name>-agent-<index>, a DNS label of at most 63)"]


@pytest.mark.parametrize(
    "ticket", [b" 12 : 3 ", b"+12:+1", b"012:1", b"1:01", b"-0:1", b"1:-0", b"1:1\n", b"1 :1", b"1:2:3", b"0x1:1", b"1_0:1", b":1", b"1:"]
)
def test_tickets_are_parsed_strictly(ticket):
    with pytest.raises(TicketError, match="malformed ticket"):
        PartitionKey.decode(ticket)


@pytest.mark.parametrize("ticket", [b"0:0", b"-1:0", b"9223372036854775807:2147483647", b"-9223372036854775808:0", b"12:3"])
def test_every_encoded_ticket_decodes(ticket):
    assert PartitionKey.decode(ticket).encode() == ticket
