"""The operator's validation (for clusters without CEL) rejects what the CRD rejects, naming the field."""
from __future__ import annotations

import pytest

from sabotjobs import sabot_job
from invalid_specs import INVALID_SPECS
from sabot_operator import crd
from sabot_agent.jobspec import validate_job
from sabot_operator.validation import spec_problems


def test_a_valid_job_has_no_problems():
    assert spec_problems(sabot_job()) == []


@pytest.mark.parametrize("name, spec_patch, field, _api_fragment", [case[1:] for case in INVALID_SPECS], ids=[case[0] for case in INVALID_SPECS])
def test_invalid_spec_is_reported_on_its_field(name, spec_patch, field, _api_fragment):
    problems = spec_problems(sabot_job(name or "wordcount", spec_patch))
    assert any(problem.startswith(field) for problem in problems), problems


def test_every_cel_rule_has_a_case():
    """Each CEL rule's Python twin is exercised by at least one invalid spec."""
    fired = set()
    for _, name, spec_patch, _, _ in INVALID_SPECS:
        job = sabot_job(name or "wordcount", spec_patch)
        defaulted = {**job, "spec": crd.spec_with_defaults(job["spec"])}
        for rule in crd.RULES:
            if any(not rule.holds(node) for _, node in crd.nodes_at(defaulted, rule.path)):
                fired.add(rule.cel)
    assert fired == {rule.cel for rule in crd.RULES}


def test_pipeline_semantics_come_from_the_agents_validation():
    problems = spec_problems(sabot_job(spec_patch={"pipeline": {"aggregate": {"groupBy": ["regon"]}}}))
    assert any(problem.startswith("spec.pipeline.aggregate.groupBy[0]") and "regon" in problem for problem in problems), problems


def test_defaults_are_applied_the_way_the_api_server_does():
    spec = crd.spec_with_defaults({"pipeline": {}})
    assert spec["flightPort"] == crd.DEFAULT_FLIGHT_PORT and spec["metricsPort"] == crd.DEFAULT_METRICS_PORT
    assert spec["retry"] == {"limit": 3, "backoffSeconds": 10}
    assert spec["suspend"] is False and spec["hostNetwork"] is False
    assert "threadsPerAgent" not in spec  # no default: the agent uses slotsPerAgent


# --- local paths must lie on a volume (the operator's own check; CEL cannot normalize paths) ----------

DATA = {"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "shared"}}
INPUTS = {"name": "inputs", "mountPath": "/srv/inputs", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}


def files_job(input_path: str, output_path: str, volumes: list[dict]) -> dict:
    return sabot_job(spec_patch={"volumes": volumes, "pipeline": {
        "inputs": {"sales": {"generate": None, "format": "parquet", "path": input_path}},
        "aggregate": {"groupBy": [], "aggregations": [{"column": "amount", "function": "sum"}]},
        "output": {"path": output_path}}})  # fmt: skip


@pytest.mark.parametrize("input_path, output_path", [
    ("/srv/inputs/sales/", "/data/out/"),
    ("/srv/inputs", "file:///data/out"),
    ("file:///srv/inputs/2026/sales.parquet", "/data"),
    ("s3://lake/sales/", "/data/results/../out/"),
])  # fmt: skip
def test_local_paths_on_volumes_are_accepted(input_path, output_path):
    assert spec_problems(files_job(input_path, output_path, [DATA, INPUTS])) == []


def test_an_output_no_volume_backs_is_rejected_in_one_line_saying_it_would_vanish():
    problems = spec_problems(files_job("s3://lake/sales/", "/tmp/out", [DATA]))
    assert problems == ["spec.pipeline.output.path: /tmp/out is not on a volume: each agent would write it inside its own pod and it "
                        "would vanish with the pods; write to s3://... or mount a PersistentVolumeClaim with spec.volumes"]


@pytest.mark.parametrize("output_path, shown", [
    ("out/sales/", "out/sales/ (in the agent: /tmp/out/sales)"),  # relative: under the working directory, /tmp
    ("/database/out", "/database/out"),  # shares the mountPath's first characters, not its directory
    ("/data/../etc/out", "/data/../etc/out (in the agent: /etc/out)"),
    ("file:///var/out", "file:///var/out (in the agent: /var/out)"),
])  # fmt: skip
def test_outputs_outside_every_volume_are_rejected(output_path, shown):
    (problem,) = spec_problems(files_job("s3://lake/sales/", output_path, [DATA]))
    assert problem.startswith(f"spec.pipeline.output.path: {shown} is not on a volume"), problem


def test_an_output_on_a_read_only_volume_is_rejected():
    assert spec_problems(files_job("/srv/inputs/sales/", "/srv/inputs/out/", [DATA, INPUTS])) == [
        "spec.pipeline.output.path: /srv/inputs/out/ is on volume 'inputs', which is mounted readOnly"]


def test_a_local_input_no_volume_backs_is_rejected():
    problems = spec_problems(files_job("examples/data/sales/", "/data/out/", [DATA]))
    assert problems == ["spec.pipeline.inputs.sales.path: examples/data/sales/ (in the agent: /tmp/examples/data/sales) is not on a volume: "
                        "the agent pods cannot see files of the machine that applied the job; read from s3://... or mount a "
                        "PersistentVolumeClaim holding them with spec.volumes"]


def test_local_runs_keep_local_paths():
    """`sabot run` and `sabot validate` (validate_job) read the same file: spec.volumes is ignored there
    and local paths are this machine's."""
    job = files_job("examples/data/sales/", "out/sales/", [DATA])
    assert spec_problems(job) and validate_job(job).output.path == "out/sales/"


# --- the query, planned before anything is created (plan.sql_check) -----------------------------------

FILE_INPUTS = {"orders": {"format": "parquet", "path": "s3://lake/orders/"}, "customers": {"format": "parquet", "path": "s3://lake/customers/"}}
REGIONS_INPUT = {"regions": {"generate": {"rows": 10, "columns": {"region": {"type": "string"}, "manager": {"type": "string"}}}}}


def sql_job(sql: str, inputs: dict | None = None) -> dict:
    return sabot_job(spec_patch={"pipeline": {"aggregate": None, "sql": sql, "inputs": inputs or FILE_INPUTS}})


@pytest.mark.parametrize("sql, problem", [
    ("SELECT region, sum(amount)\nFROM orders\nWHERE amount >\n  GROUP BY region",
     "spec.pipeline.sql: syntax error at line 4, column 9: Expected: end of statement, found: BY"),
    ("SELECT id,, amount FROM orders", "spec.pipeline.sql: syntax error at line 1, column 11: Expected: an expression, found: ,"),
    ("SELECT id FROM orderz", "spec.pipeline.sql: unknown table 'orderz' (tables: customers, orders, sales)"),
    # the outer query's columns are unknown, yet the subquery's table is found
    ("SELECT id FROM orders WHERE customer IN (SELECT id FROM customer)",
     "spec.pipeline.sql: unknown table 'customer' (tables: customers, orders, sales)"),
    ("WITH big AS (SELECT * FROM orders WHERE amount > 100) SELECT * FROM big JOIN custs ON big.customer = custs.id",
     "spec.pipeline.sql: unknown table 'custs' (tables: customers, orders, sales)"),
    ("CREATE TABLE copy (id INT)", "spec.pipeline.sql: DDL not supported"),
    ("SELECT 1 FROM orders; SELECT 2", "spec.pipeline.sql: The context currently only supports a single SQL statement"),
])  # fmt: skip
def test_schema_free_query_problems_are_found_over_file_inputs(sql, problem):
    problems = spec_problems(sql_job(sql, {**FILE_INPUTS, "sales": {"generate": None, "format": "parquet", "path": "s3://lake/sales/"}}))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize("sql", [
    "SELECT region, sum(amount) FROM orders GROUP BY region",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON o.customer = c.id WHERE c.name LIKE 'A%'",
    "WITH orders AS (SELECT 1 AS id) SELECT id FROM orders",  # a CTE's name is not a table
    # what DataFusion finds only once it planned a table of a file input is the agents' to find: columns,
    # functions, constructs Sabot does not support, statements other than a query that name a table
    "SELECT no_such_column, no_such_function(amount), sum(amount) OVER (PARTITION BY region) FROM orders",
    "DELETE FROM orders",
])  # fmt: skip
def test_a_valid_query_over_file_inputs_passes(sql):
    assert spec_problems(sql_job(sql)) == []


@pytest.mark.parametrize("sql, problem", [
    ("SELECT region, sum(amount) FROM sales GROUP BY region", None),
    ("SELECT s.region, r.manager FROM sales s JOIN regions r ON s.region = r.region", None),
    ("SELECT nope FROM sales", "spec.pipeline.sql: unknown column nope (columns: sales.region, sales.amount)"),
    ("SELECT region, sum(amount) OVER (PARTITION BY region) FROM sales", "spec.pipeline.sql: window functions are not supported yet"),
    ("SELECT region, count(*) FROM sales GROUP BY ROLLUP (region)", "spec.pipeline.sql: GROUPING SETS, ROLLUP and CUBE are not supported yet"),
])  # fmt: skip
def test_a_query_over_generated_inputs_is_planned_completely(sql, problem):
    problems = spec_problems(sql_job(sql, REGIONS_INPUT))
    assert problems == [] if problem is None else (len(problems) == 1 and problems[0].startswith(problem)), problems


def test_tables_of_known_schemas_are_enough_when_the_query_uses_only_them():
    problems = spec_problems(sql_job("SELECT manager FROM regions WHERE boss = 'x'", {**FILE_INPUTS, **REGIONS_INPUT}))
    assert len(problems) == 1 and problems[0].startswith("spec.pipeline.sql: unknown column boss (columns: regions.region, regions.manager)")


def test_the_short_forms_filters_are_checked_too():
    problems = spec_problems(sabot_job(spec_patch={"pipeline": {"aggregate": {"where": "amount >"}}}))
    assert len(problems) == 1 and problems[0].startswith("spec.pipeline.aggregate: syntax error at line 1"), problems
    joined = {"aggregate": None, "inputs": REGIONS_INPUT, "join": {"left": "sales", "right": "regions", "on": ["region"], "where": "boss = 'x'"}}
    problems = spec_problems(sabot_job(spec_patch={"pipeline": joined}))
    assert len(problems) == 1 and problems[0].startswith("spec.pipeline.join: unknown column boss"), problems
