"""Columns that several scans of a plan read are decoded once per agent (engine.scan_cache).

The TPC-H tests check the answers of the queries this serves (q2, q11, q17, q18, q20-q22 with 1-3
agents against duckdb); these check what is kept and what is read again, on real Parquet files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine_support import job_document
from sabot_agent import inputs as I
from sabot_agent.engine import scan_cache
from sabot_agent.engine.scan_cache import ScanCache, shared_columns
from sabot_agent.jobspec import InputSpec, validate_job
from sabot_agent.plan.job import plan_job_inputs


@pytest.fixture()
def table_info(tmp_path):
    """A file of three row groups with a small-dictionary string column (read encoded) and nulls."""
    table = pa.table({
        "k": pa.array(range(3000), pa.int64()),
        "v": pa.array([None if i % 7 == 0 else i * 0.5 for i in range(3000)], pa.float64()),
        "s": pa.array([["red", "green", None][i % 3] for i in range(3000)], pa.string()),
    })  # fmt: skip
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=1000)
    return I.describe_input(InputSpec(name="t", format="parquet", path=str(path)))


@pytest.fixture()
def counted_reads(monkeypatch):
    """Every read_units call the cache makes: (units, columns)."""
    calls = []
    read = I.read_units

    def counting(info, units, columns, encoded=False):
        calls.append((len(units), list(columns)))
        return read(info, units, columns, encoded)

    monkeypatch.setattr(I, "read_units", counting)
    return calls


def test_columns_two_scans_read_are_kept_and_served_without_reading(table_info, counted_reads):
    cache = ScanCache({"t": frozenset({"k", "s"})}, budget_bytes=1 << 30)
    units = table_info.units
    expected = I.read_units(table_info, units, ["k", "v", "s"], encoded=True)
    counted_reads.clear()
    first = cache.read(table_info, units, ["k", "v", "s"])
    again = cache.read(table_info, units, ["s", "k"])
    assert counted_reads == [(3, ["k", "v", "s"])]  # the second read came from the kept columns
    assert first.equals(expected)
    assert again.equals(expected.select(["s", "k"]))
    assert pa.types.is_dictionary(again.schema.field("s").type)  # kept as the scan reads it: encoded

    # a read of a column not kept reads only that column
    counted_reads.clear()
    mixed = cache.read(table_info, units[1:], ["v", "k"])
    assert counted_reads == [(2, ["v"])]
    assert mixed.equals(I.read_units(table_info, units[1:], ["v", "k"], encoded=True))


def test_units_read_in_other_groupings_are_served_unit_by_unit(table_info, counted_reads):
    cache = ScanCache({"t": frozenset({"k"})}, budget_bytes=1 << 30)
    units = table_info.units
    cache.read(table_info, units[:2], ["k"])
    cache.read(table_info, units[2:], ["k"])
    counted_reads.clear()
    whole = cache.read(table_info, units, ["k"])
    partly = cache.read(table_info, [units[1]], ["k"])
    assert counted_reads == []
    assert whole.column("k").to_pylist() == list(range(3000))
    assert partly.column("k").to_pylist() == list(range(1000, 2000))


def test_split_units_are_kept_as_their_pieces(table_info, counted_reads):
    unit = table_info.units[0]
    pieces = [I.Unit(unit.path, unit.index, unit.rows, offset=0, length=400), I.Unit(unit.path, unit.index, unit.rows, offset=400, length=600)]
    cache = ScanCache({"t": frozenset({"k"})}, budget_bytes=1 << 30)
    cache.read(table_info, pieces, ["k"])
    counted_reads.clear()
    second = cache.read(table_info, [pieces[1]], ["k"])
    assert counted_reads == []
    assert second.column("k").to_pylist() == list(range(400, 1000))


def test_nothing_is_kept_beyond_the_budget_or_for_a_column_one_scan_reads(table_info, counted_reads):
    small = ScanCache({"t": frozenset({"k"})}, budget_bytes=12 * 1000)  # room for one unit's k (8 KB), not two
    small.read(table_info, table_info.units[:2], ["k"])
    counted_reads.clear()
    small.read(table_info, table_info.units[:1], ["k"])
    small.read(table_info, table_info.units[1:2], ["k"])
    assert counted_reads == [(1, ["k"])]  # the first unit was kept, the second was read again

    unshared = ScanCache({"t": frozenset({"k"})}, budget_bytes=1 << 30)
    unshared.read(table_info, table_info.units, ["v"])
    counted_reads.clear()
    unshared.read(table_info, table_info.units, ["v"])
    assert counted_reads == [(3, ["v"])]


def test_the_budget_is_at_most_a_quarter_of_the_memory_budget():
    assert scan_cache.cache_budget(None) == scan_cache.SCAN_CACHE_BYTES
    assert scan_cache.cache_budget(64 << 20) == 16 << 20
    assert scan_cache.cache_budget(16 << 30) == scan_cache.SCAN_CACHE_BYTES


def test_shared_columns_are_those_two_scans_of_an_input_read(tmp_path, table_info):
    """A correlated subquery over the same table: both scans read k and v; only the outer one reads s."""
    sql = "SELECT k, s FROM t AS a WHERE v > (SELECT avg(v) FROM t AS b WHERE b.k = a.k)"
    job = validate_job(job_document("shared", {"t": {"format": "parquet", "path": table_info.spec.path}}, tmp_path / "out", agents=2, sql=sql))
    plan, _ = plan_job_inputs(job, 2, 1)
    assert shared_columns(plan) == {"t": frozenset({"k", "v"})}


def test_kept_columns_go_once_no_later_stage_scans_their_input(table_info, counted_reads):
    # stage 0 is followed by a stage that scans t, stage 1 only by stages that scan another input
    cache = ScanCache({"t": frozenset({"k"})}, budget_bytes=1 << 30, scanned_after=[{"t", "other"}, {"other"}])
    cache.read(table_info, table_info.units, ["k"])
    cache.stage_done(0)
    counted_reads.clear()
    cache.read(table_info, table_info.units, ["k"])
    assert counted_reads == []  # still scanned later: kept
    cache.stage_done(1)
    cache.read(table_info, table_info.units, ["k"])
    assert counted_reads == [(3, ["k"])]  # released, read again
    assert cache._used > 0  # and kept again, within the budget the release gave back


def test_a_parquet_footer_is_parsed_once_per_input(table_info):
    """Reads of a file's row groups share one fragment whose footer was parsed on the first read."""
    first = I.read_units(table_info, table_info.units[:1], ["k"])
    opened = table_info.opened[table_info.units[0].path]
    again = I.read_units(table_info, table_info.units[1:], ["k", "s"])
    assert table_info.opened == {table_info.units[0].path: opened}
    assert first.column("k").to_pylist() == list(range(1000)) and again.num_rows == 2000
