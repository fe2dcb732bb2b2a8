"""sabot_native.hash_join against duckdb: every join kind, both build sides, NULL keys (never match),
float keys (-0.0 = 0.0, NaN = NaN), strings, several keys, dictionary keys, duplicates on both sides,
tables of several chunks and empty sides."""

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import sabot_native

KINDS = ("inner", "left", "right", "full", "semi", "anti")
DUCKDB_JOINS = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN", "semi": "SEMI JOIN",
                "anti": "ANTI JOIN"}  # fmt: skip


def _sort_key(row):
    return tuple((value is None, isinstance(value, float) and math.isnan(value), str(value)) for value in row)


def _rows(table: pa.Table) -> list[tuple]:
    columns = [column.to_pylist() for column in table.columns]  # by position: both sides may name a column alike
    return sorted(zip(*columns), key=_sort_key) if columns else []


def _same(ours: list[tuple], theirs: list[tuple]) -> bool:
    def equal(a, b):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b

    return len(ours) == len(theirs) and all(len(x) == len(y) and all(map(equal, x, y)) for x, y in zip(ours, theirs))


def duckdb_join(left: pa.Table, right: pa.Table, left_keys, right_keys, kind: str) -> list[tuple]:
    connection = duckdb.connect()
    connection.register("l", left)
    connection.register("r", right)
    condition = " AND ".join(f'l."{a}" = r."{b}"' for a, b in zip(left_keys, right_keys))
    columns = ", ".join([f'l."{name}"' for name in left.column_names] + ([] if kind in ("semi", "anti") else [f'r."{name}"' for name in right.column_names]))
    rows = connection.execute(f"SELECT {columns} FROM l {DUCKDB_JOINS[kind]} r ON {condition}").fetchall()
    return sorted(rows, key=_sort_key)


def check_all_kinds(left, right, left_keys, right_keys):
    for kind in KINDS:
        expected = duckdb_join(left, right, left_keys, right_keys, kind)
        for build_right in (True, False):
            result = sabot_native.hash_join(left, right, left_keys, right_keys, kind, build_right=build_right)
            width = left.num_columns + (0 if kind in ("semi", "anti") else right.num_columns)
            assert result.num_columns == width
            assert _same(_rows(result), expected), (kind, build_right)


def _chunked(table: pa.Table, pieces: int) -> pa.Table:
    step = max(1, -(-table.num_rows // pieces))
    return pa.Table.from_batches([batch for start in range(0, table.num_rows, step) for batch in table.slice(start, step).to_batches()],
                                 schema=table.schema)  # fmt: skip


def test_integer_keys_with_nulls_and_duplicates():
    rng = np.random.default_rng(7)
    size = 3000
    left_keys = pa.array(rng.integers(-50, 50, size), mask=rng.random(size) < 0.1)
    right_keys = pa.array(rng.integers(-60, 40, 700), mask=rng.random(700) < 0.1)
    left = pa.table({"k": left_keys, "lv": pa.array(rng.random(size)), "ls": pa.array([f"s{i}" if i % 7 else None for i in range(size)])})
    right = pa.table({"rk": right_keys, "rv": pa.array(rng.integers(0, 9, 700), type=pa.int16())})
    check_all_kinds(left, right, ["k"], ["rk"])
    check_all_kinds(_chunked(left, 5), _chunked(right, 3), ["k"], ["rk"])


@pytest.mark.parametrize("data_type", [pa.int8(), pa.uint16(), pa.int32(), pa.uint64(), pa.date32(), pa.bool_()])
def test_key_widths_and_types(data_type):
    values = [0, 1, 2, None, 1, 3] if data_type != pa.bool_() else [True, False, None, True]
    source = pa.bool_() if data_type == pa.bool_() else pa.int32()
    left = pa.table({"k": pa.array(values, type=source).cast(data_type), "x": pa.array(range(len(values)))})
    right = pa.table({"k": pa.array(values[::-1] + values[:2], type=source).cast(data_type)})
    check_all_kinds(left, right, ["k"], ["k"])


def test_float_keys_compare_negative_zero_and_nan_equal():
    left = pa.table({"k": pa.array([0.0, -0.0, float("nan"), 1.5, None, 2.0]), "i": pa.array(range(6))})
    right = pa.table({"k": pa.array([-0.0, float("nan"), float("nan"), None, 2.0]), "j": pa.array(range(5))})
    inner = sabot_native.hash_join(left, right, ["k"], ["k"], "inner")
    assert sorted(zip(inner.column("i").to_pylist(), inner.column("j").to_pylist())) == [(0, 0), (1, 0), (2, 1), (2, 2), (5, 4)]
    check_all_kinds(left, right, ["k"], ["k"])
    check_all_kinds(left.cast(pa.schema([pa.field("k", pa.float32()), pa.field("i", pa.int64())])),
                    right.cast(pa.schema([pa.field("k", pa.float32()), pa.field("j", pa.int64())])), ["k"], ["k"])  # fmt: skip


def test_string_and_multi_column_keys():
    rng = np.random.default_rng(3)
    words = ["", "a", "ab", "abc", "x" * 40, "ü", None]
    size = 2000
    left = pa.table({"s": pa.array([words[i] for i in rng.integers(0, len(words), size)]),
                     "n": pa.array(rng.integers(0, 4, size), type=pa.int32()), "v": pa.array(range(size))})  # fmt: skip
    right = pa.table({"s": pa.array([words[i] for i in rng.integers(0, len(words), 300)]),
                      "n": pa.array(rng.integers(0, 5, 300), type=pa.int32()), "w": pa.array(rng.random(300))})  # fmt: skip
    check_all_kinds(left, right, ["s"], ["s"])
    check_all_kinds(_chunked(left, 4), _chunked(right, 2), ["s", "n"], ["s", "n"])
    large = right.set_column(0, "s", right.column("s").cast(pa.large_string()))
    assert _same(_rows(sabot_native.hash_join(left, large, ["s", "n"], ["s", "n"], "inner").cast(
        pa.schema(list(left.schema) + list(right.schema)))), duckdb_join(left, right, ["s", "n"], ["s", "n"], "inner"))  # fmt: skip


def test_decimal_keys_and_dictionary_keys_and_payloads():
    left = pa.table({"d": pa.array([1, 2, None, 2], type=pa.decimal128(10, 2)),
                     "c": pa.array(["x", "y", None, "x"]).dictionary_encode()})  # fmt: skip
    right = pa.table({"d": pa.array([2, 3, None], type=pa.decimal128(10, 2)), "c": pa.array(["x", None, "z"]).dictionary_encode()})
    check_all_kinds(left, right, ["d"], ["d"])
    check_all_kinds(left, right, ["c"], ["c"])
    chunks = pa.concat_tables([left, pa.table({"d": pa.array([2], type=pa.decimal128(10, 2)), "c": pa.array(["q"]).dictionary_encode()})])
    check_all_kinds(chunks, right, ["c"], ["c"])


def test_empty_sides():
    left = pa.table({"k": pa.array([1, None, 2], type=pa.int64()), "v": ["a", "b", "c"]})
    empty = pa.table({"k": pa.array([], type=pa.int64()), "w": pa.array([], type=pa.float64())})
    check_all_kinds(left, empty, ["k"], ["k"])
    check_all_kinds(empty, left, ["k"], ["k"])
    check_all_kinds(empty, empty, ["k"], ["k"])


def test_null_type_columns():
    left = pa.table({"k": pa.array([1, 2, None], type=pa.int64()), "n": pa.nulls(3)})
    right = pa.table({"k": pa.nulls(2), "x": [1.0, 2.0]})
    result = sabot_native.hash_join(left, right, ["k"], ["k"], "full")
    assert result.num_rows == 5 and result.column(1).null_count == 5
    assert sabot_native.hash_join(left, right, ["k"], ["k"], "inner").num_rows == 0
    assert sabot_native.hash_join(left, right, ["k"], ["k"], "anti").num_rows == 3


def test_output_chunks_follow_the_probe_side_and_keep_the_schema():
    left = _chunked(pa.table({"k": pa.array(np.arange(10_000) % 100), "v": pa.array(np.arange(10_000))}), 4)
    right = pa.table({"k": pa.array(np.arange(100)), "name": [f"n{i}" for i in range(100)]})
    result = sabot_native.hash_join(left, right, ["k"], ["k"], "inner")
    assert result.num_rows == 10_000 and result.column(0).num_chunks == 4
    assert result.schema.names == ["k", "v", "k", "name"]
    assert result.column("v").to_pylist() == list(range(10_000))  # probe order


def test_invalid_arguments():
    left = pa.table({"k": pa.array([1], type=pa.int64())})
    with pytest.raises(ValueError, match="different types"):
        sabot_native.hash_join(left, pa.table({"k": pa.array([1], type=pa.int32())}), ["k"], ["k"])
    with pytest.raises(ValueError, match="unknown join kind"):
        sabot_native.hash_join(left, left, ["k"], ["k"], "cross")
    with pytest.raises(ValueError):
        sabot_native.hash_join(left, left, ["missing"], ["k"])
    with pytest.raises(ValueError, match="as many"):
        sabot_native.hash_join(left, left, ["k", "k"], ["k"])
