"""Hash aggregation against duckdb (the reference for SQL semantics): every listed type as key and as
aggregate input (property-based), NaN and -0.0, nulls, decimal exactness and overflow, string order,
dictionaries, shared partial states, partial -> partition -> final equal to one-shot, both execution
strategies, hash decorrelation from the exchange, and clear errors for bad input."""
import decimal
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sabot_native as sn
from aggregate_reference import assert_matches_duckdb, assert_same_groups, duckdb_group_by, plain_table

D = decimal.Decimal

# The types the kernels aggregate, with pools of values for the generator (None is added to each).
FLOATS = [0.0, -0.0, 1.5, -2.25, float("nan"), float("inf"), -float("inf"), 1e300, 3.0]
TYPES = {
    "int8": (pa.int8(), [-128, -1, 0, 5, 127]),
    "int16": (pa.int16(), [-30000, -7, 0, 9, 30000]),
    "int32": (pa.int32(), [-(2**31), -3, 0, 3, 2**31 - 1]),
    "int64": (pa.int64(), [-(2**40), -5, 0, 5, 2**40]),
    "uint8": (pa.uint8(), [0, 1, 200, 255]),
    "uint16": (pa.uint16(), [0, 7, 65535]),
    "uint32": (pa.uint32(), [0, 9, 2**32 - 1]),
    "uint64": (pa.uint64(), [0, 11, 2**40]),
    "float32": (pa.float32(), FLOATS[:-2] + [3.0]),
    "float64": (pa.float64(), FLOATS),
    "decimal(15,2)": (pa.decimal128(15, 2), [D("0.00"), D("-0.01"), D("12.34"), D("9999999999999.99"),
                                              D("-9999999999999.99")]),
    "decimal(38,6)": (pa.decimal128(38, 6), [D("1.000001"), D("-12345678901234567890.123456"), D("0.000000"),
                                              D("99999999999999999999999999.999999")]),
    "date32": (pa.date32(), [0, 1, -1, 19000]),
    "date64": (pa.date64(), [0, 86_400_000, -86_400_000]),
    "time32[ms]": (pa.time32("ms"), [0, 1, 86_399_999]),
    "time64[ns]": (pa.time64("ns"), [0, 5, 86_399_999_999_999]),
    "timestamp[us]": (pa.timestamp("us"), [0, -1, 2**50]),
    "timestamp[ns,UTC]": (pa.timestamp("ns", tz="UTC"), [0, 1, 2**60]),
    "duration[ms]": (pa.duration("ms"), [0, -5, 2**40]),
    "bool": (pa.bool_(), [True, False]),
    "string": (pa.string(), ["", "a", "b", "ab", "Zürich", "é", "z", "a\x00"]),
    "large_string": (pa.large_string(), ["", "x", "é", "xy"]),
    "binary": (pa.binary(), [b"", b"\x00", b"\xff", b"a", b"a\x00", b"\x7f"]),
    "large_binary": (pa.large_binary(), [b"", b"\xfe", b"q"]),
    "dictionary<string>": (pa.dictionary(pa.int16(), pa.string()), ["zeta", "alpha", "", "mu"]),
    "dictionary<int64>": (pa.dictionary(pa.int8(), pa.int64()), [30, -4, 7]),
}
TEMPORAL_STORAGE = {"date32": pa.int32(), "date64": pa.int64(), "time32[ms]": pa.int32(), "time64[ns]": pa.int64(),
                    "timestamp[us]": pa.int64(), "timestamp[ns,UTC]": pa.int64(), "duration[ms]": pa.int64()}
SUMMABLE = {name for name in TYPES if name.startswith(("int", "uint", "float", "decimal"))}


def make_array(type_name, values):
    arrow_type, _ = TYPES[type_name]
    if type_name in TEMPORAL_STORAGE:
        return pa.array(values, TEMPORAL_STORAGE[type_name]).view(arrow_type)
    if pa.types.is_dictionary(arrow_type):
        return pa.array(values, arrow_type.value_type).dictionary_encode().cast(arrow_type)
    return pa.array(values, arrow_type)


def functions_for(type_name):
    functions = ["count", "min", "max"]
    if type_name in SUMMABLE:
        functions += ["sum", "mean"]
    return functions


def aggregations_for(columns):
    """Every function each column's type supports, plus count(*) both ways."""
    aggregations = [("", "count_all", "rows")]
    for name, type_name in columns.items():
        aggregations += [(name, function, f"{name}_{function}") for function in functions_for(type_name)]
    aggregations.append((next(iter(columns)), "count_all", "rows_named"))
    return aggregations


@st.composite
def typed_tables(draw):
    """A table of 1-2 key columns and 1-3 value columns of random listed types; skewed small pools so
    groups repeat; nulls everywhere."""
    names = sorted(TYPES)
    key_types = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2))
    value_types = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3))
    rows = draw(st.integers(0, 120))
    columns, arrays = {}, {}
    for role, types in (("k", key_types), ("v", value_types)):
        for index, type_name in enumerate(types):
            pool = TYPES[type_name][1]
            subset = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique_by=repr))
            value = st.one_of(st.just(subset[0]), st.sampled_from(subset), st.none())
            arrays[f"{role}{index}"] = make_array(type_name, draw(st.lists(value, min_size=rows, max_size=rows)))
            columns[f"{role}{index}"] = type_name
    keys = [name for name in columns if name.startswith("k")]
    values = {name: columns[name] for name in columns if name.startswith("v")}
    return pa.table(arrays), keys, values


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=typed_tables(), chunk=st.integers(1, 50))
def test_every_type_as_key_and_input_matches_duckdb(case, chunk):
    table, keys, values = case
    aggregations = aggregations_for(values)
    assert_matches_duckdb(sn.aggregate(table, keys, aggregations), table, keys, aggregations)
    # the same rows in many chunks
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=chunk), schema=table.schema)
    assert_matches_duckdb(sn.aggregate(chunked, keys, aggregations), table, keys, aggregations)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=typed_tables(), producers=st.integers(1, 3), partitions=st.integers(1, 4))
def test_partial_partition_final_matches_duckdb(case, producers, partitions):
    """Each producer pre-aggregates its share, partitions the partial state by key and "ships" it; each
    reducer merges what it received."""
    table, keys, values = case
    aggregations = aggregations_for(values)
    shares = np.array_split(np.arange(table.num_rows), producers)
    received = [[] for _ in range(partitions)]
    for share in shares:
        partial = sn.aggregate_partial(table.take(pa.array(share, pa.int64())), keys, aggregations)
        assert partial.schema == sn.aggregate_partial(table.schema.empty_table(), keys, aggregations).schema
        for index, part in enumerate(sn.partition_batch(partial, keys, partitions)):
            received[index].append(part)
    finals = [sn.aggregate_final(parts, keys, aggregations) for parts in received]
    assert_matches_duckdb(pa.concat_tables(finals), table, keys, aggregations)


def float_table(arrow_type):
    nan = float("nan")
    groups = {  # group -> values
        1: [1.0, nan, 2.0],            # max NaN, min 1.0, sum/mean NaN
        2: [nan, nan, None],           # all non-null values NaN: min and max NaN
        3: [None, None],               # no value: null, count 0
        4: [-float("inf"), nan, 0.5],  # min -inf
        5: [float("inf"), -0.0, 0.0],  # max inf
        6: [-1.5],
    }
    keys = [k for k, vs in groups.items() for _ in vs]
    values = [v for vs in groups.values() for v in vs]
    return pa.table({"k": pa.array(keys, pa.int32()), "v": pa.array(values, arrow_type)})


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.float32()], ids=str)
def test_nan_is_greater_than_every_value_like_sql(arrow_type):
    table = float_table(arrow_type)
    aggregations = [("v", f, f) for f in ("min", "max", "sum", "mean", "count")] + [("", "count_all", "rows")]
    with sn.MorselExecutor(threads=2, morsel_bytes=64) as executor:  # one morsel per few rows: merges too
        for result in (sn.aggregate(table, ["k"], aggregations),
                       sn.aggregate(table, ["k"], aggregations, executor=executor),
                       sn.aggregate_final([sn.aggregate_partial(table.slice(i, 1), ["k"], aggregations)
                                           for i in range(table.num_rows)], ["k"], aggregations)):
            assert_matches_duckdb(result, table, ["k"], aggregations)
            rows = {r["k"]: r for r in result.to_pylist()}
            assert math.isnan(rows[1]["max"]) and rows[1]["min"] == 1.0 and math.isnan(rows[1]["sum"])
            assert math.isnan(rows[2]["min"]) and math.isnan(rows[2]["max"]) and rows[2]["count"] == 2
            assert rows[3] == {"k": 3, "min": None, "max": None, "sum": None, "mean": None, "count": 0, "rows": 2}
            assert rows[4]["min"] == -float("inf") and math.isnan(rows[4]["max"])
            assert rows[5]["max"] == float("inf")
            assert result.schema.field("min").type == arrow_type and result.schema.field("sum").type == pa.float64()


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.float32()], ids=str)
def test_float_keys_group_negative_zero_with_zero_and_all_nans_together(arrow_type):
    import struct
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000123))[0]
    keys = [0.0, -0.0, float("nan"), payload_nan, -float("nan"), None, None, 1.0]
    table = pa.table({"k": pa.array(keys, arrow_type), "v": pa.array(range(len(keys)), pa.int64())})
    aggregations = [("v", "sum", "total"), ("", "count_all", "rows")]
    result = sn.aggregate(table, ["k"], aggregations)
    assert result.num_rows == 4
    assert_matches_duckdb(result, table, ["k"], aggregations)
    assert sorted(result.column("rows").to_pylist()) == [1, 2, 2, 3]


def test_null_keys_form_one_group_and_all_null_groups_give_null():
    table = pa.table({"a": pa.array([None, 1, None, 1, None], pa.int64()), "b": pa.array(["x", None, "x", None, "y"]),
                      "v": pa.array([None, None, None, None, 5], pa.int64()),
                      "s": pa.array([None, None, None, None, "q"])})
    aggregations = [("v", f, f"v_{f}") for f in ("count", "sum", "mean", "min", "max")] + [
        ("s", "min", "s_min"), ("s", "count", "s_count"), ("", "count_all", "rows")]
    result = sn.aggregate(table, ["a", "b"], aggregations)
    assert_matches_duckdb(result, table, ["a", "b"], aggregations)
    rows = {(r["a"], r["b"]): r for r in result.to_pylist()}
    assert rows[(None, "x")] == {"a": None, "b": "x", "v_count": 0, "v_sum": None, "v_mean": None, "v_min": None,
                                 "v_max": None, "s_min": None, "s_count": 0, "rows": 2}
    assert rows[(1, None)]["rows"] == 2 and rows[(None, "y")]["v_sum"] == 5


def test_count_reads_any_column_type_and_count_all_counts_rows():
    table = pa.table({
        "k": pa.array([1, 1, 2, 2, 2]),
        "list": pa.array([[1], None, [], None, [2, 3]]),
        "struct": pa.array([{"x": 1}, {"x": None}, None, None, {"x": 2}]),
        "nothing": pa.nulls(5),
        "view": pa.array(["a", None, "b", "c", None], pa.string_view()),
        "dict_of_lists": pa.DictionaryArray.from_arrays(pa.array([0, 0, None, 1, 1], pa.int8()), pa.array([[1], [2]])),
    })
    aggregations = [(c, "count", f"n_{c}") for c in ("list", "struct", "nothing", "view", "dict_of_lists")] + [
        ("", "count_all", "rows"), ("list", "count_all", "rows_too")]
    for executor_threads in (None, 2):
        executor = None if executor_threads is None else sn.MorselExecutor(threads=2, morsel_bytes=16)
        result = sn.aggregate(table, ["k"], aggregations, executor=executor).sort_by("k")
        assert result.to_pylist() == [
            {"k": 1, "n_list": 1, "n_struct": 2, "n_nothing": 0, "n_view": 1, "n_dict_of_lists": 2, "rows": 2, "rows_too": 2},
            {"k": 2, "n_list": 2, "n_struct": 1, "n_nothing": 0, "n_view": 2, "n_dict_of_lists": 2, "rows": 3, "rows_too": 3},
        ]
        if executor is not None:
            executor.shutdown()
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    assert sn.aggregate_final([partial, partial], ["k"], aggregations).sort_by("k").column("rows").to_pylist() == [4, 6]
    with pytest.raises(ValueError, match="'nope'"):
        sn.aggregate(table, ["k"], [("nope", "count_all", "rows")])


def test_count_of_unreadable_values_in_the_radix_strategy():
    rng = np.random.default_rng(1)
    rows = 100_000
    keys = rng.integers(0, 50_000, rows)
    lists = pa.array([None if i % 3 == 0 else [i] for i in range(rows)])
    table = pa.table({"k": keys, "list": lists})
    result, stats = sn._kernels._aggregate_with_stats(table, ["k"], [("list", "count", "n"), ("", "count_all", "rows")])
    assert stats["strategy"] == "radix"
    expected = duckdb_group_by(table, ["k"], [("list", "count", "n"), ("", "count_all", "rows")])
    assert_same_groups(result, expected, ["k"], ["n", "rows"])


def test_decimal_sums_are_exact_and_overflow_names_the_column():
    big, minus_big = D("9" * 28 + ".99"), D("-" + "9" * 28 + ".99")  # 30 digits: float64 would lose the cents
    values = [big, D("0.01"), minus_big, D("1234567890123456789012345678.91"), None]
    table = pa.table({"k": [1, 1, 1, 2, 2], "d": pa.array(values, pa.decimal128(38, 2))})
    result = sn.aggregate(table, ["k"], [("d", "sum", "total"), ("d", "mean", "avg")]).sort_by("k")
    assert result.schema.field("total").type == pa.decimal128(38, 2)
    assert result.column("total").to_pylist() == [D("0.01"), D("1234567890123456789012345678.91")]
    assert result.column("avg").to_pylist()[0] == pytest.approx(float(D("0.01") / 3), rel=1e-12)
    assert_matches_duckdb(result, table, ["k"], [("d", "sum", "total"), ("d", "mean", "avg")])

    near = D("9" * 36 + ".99")  # 38 digits
    over = pa.table({"k": [1, 1], "d": pa.array([near, near], pa.decimal128(38, 2))})
    with pytest.raises(OverflowError, match="'d'.*38"):
        sn.aggregate(over, ["k"], [("d", "sum", "total")])
    partial = sn.aggregate_partial(over.slice(0, 1), ["k"], [("d", "sum", "total")])
    with pytest.raises(OverflowError, match="'d'"):
        sn.aggregate_final([partial, partial], ["k"], [("d", "sum", "total")])
    # 128-bit wrap-around within one morsel (values near 10^38, the most a decimal128 holds)
    huge = pa.table({"k": [1, 1], "d": pa.array([D("9" * 38)] * 2, pa.decimal128(38, 0))})
    with pytest.raises(OverflowError, match="'d'"):
        sn.aggregate(huge, ["k"], [("d", "sum", "total")])


def test_decimal_mean_is_within_1e_12_of_the_exact_value():
    rng = np.random.default_rng(3)
    units = [int(x) for x in rng.integers(-(10**17), 10**17, 2000)]
    with decimal.localcontext() as context:
        context.prec = 80
        values = [D(u) * D(10**6) + D(u % 997) / D(10**6) for u in units]  # up to 29 digits, scale 6
        keys = [i % 7 for i in range(len(values))]
        table = pa.table({"k": keys, "d": pa.array(values, pa.decimal128(38, 6))})
        result = sn.aggregate(table, ["k"], [("d", "mean", "avg"), ("d", "sum", "total")]).sort_by("k")
        for k, avg, total in zip(*(result.column(c).to_pylist() for c in ("k", "avg", "total"))):
            group = [v for v, g in zip(values, keys) if g == k]
            exact = sum(group, D(0)) / len(group)
            assert total == sum(group, D(0))
            assert abs(D(avg) - exact) <= abs(exact) * D("1e-12")


def test_integer_sums_are_int64_and_overflow_raises_but_means_are_exact():
    table = pa.table({"k": [1, 1, 2], "v": pa.array([2**62, 2**62, -5], pa.int64()),
                      "u": pa.array([2**63, 2**63 - 1, 3], pa.uint64())})
    with pytest.raises(OverflowError, match="'v'"):
        sn.aggregate(table, ["k"], [("v", "sum", "total")])
    with pytest.raises(OverflowError, match="'u'"):
        sn.aggregate(table, ["k"], [("u", "sum", "total")])
    partial = sn.aggregate_partial(table.slice(0, 1), ["k"], [("v", "sum", "total")])
    with pytest.raises(OverflowError, match="'v'"):
        sn.aggregate_final([partial, partial], ["k"], [("v", "sum", "total")])
    # a partial whose total would overflow but the merged total does not is fine: states are 128-bit
    opposite = pa.table({"k": [1, 1, 1], "v": pa.array([2**62, 2**62, -(2**62)], pa.int64())})
    partials = [sn.aggregate_partial(opposite.slice(0, 2), ["k"], [("v", "sum", "total")]),
                sn.aggregate_partial(opposite.slice(2), ["k"], [("v", "sum", "total")])]
    assert sn.aggregate_final(partials, ["k"], [("v", "sum", "total")]).column("total").to_pylist() == [2**62]
    means = sn.aggregate(table, ["k"], [("v", "mean", "m"), ("u", "mean", "mu"), ("u", "max", "hi")]).sort_by("k")
    assert means.column("m").to_pylist() == [2.0**62, -5.0]
    assert means.column("mu").to_pylist()[0] == pytest.approx((2**64 - 1) / 2, rel=1e-15)
    assert means.column("hi").to_pylist() == [2**63, 3] and means.schema.field("hi").type == pa.uint64()
    ok = sn.aggregate(table.slice(2), ["k"], [("u", "sum", "total"), ("v", "sum", "t2")])
    assert ok.to_pylist() == [{"k": 2, "total": 3, "t2": -5}] and ok.schema.field("total").type == pa.int64()


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()], ids=str)
def test_string_min_max_use_unsigned_byte_order_and_keep_the_type(arrow_type):
    words = ["b", "a", "é", "z", "", "ab", "a\x00", None, "Z"]
    binary = pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
    values = [w.encode() if binary and w is not None else w for w in words]
    table = pa.table({"k": [1, 1, 1, 1, 2, 2, 2, 2, 3], "s": pa.array(values, arrow_type)})
    aggregations = [("s", "min", "lo"), ("s", "max", "hi")]
    result = sn.aggregate(table, ["k"], aggregations).sort_by("k")
    assert result.schema.field("lo").type == arrow_type
    expected = [("a", "é"), ("", "ab"), ("Z", "Z")]  # 0xC3 (é) sorts after z
    decoded = [(lo.decode() if isinstance(lo, bytes) else lo, hi.decode() if isinstance(hi, bytes) else hi)
               for lo, hi in zip(result.column("lo").to_pylist(), result.column("hi").to_pylist())]
    assert decoded == expected
    assert_matches_duckdb(result, table, ["k"], aggregations)


def test_dictionary_min_max_compare_decoded_values_and_give_the_value_type():
    # dictionary order (z, a, m) differs from value order
    values = pa.array(["z", "a", "m", None, "z", "m"]).dictionary_encode()
    assert values.dictionary.to_pylist() == ["z", "a", "m"]
    numbers = pa.array([30, -4, 7, 7, None, 30]).dictionary_encode()
    table = pa.table({"k": [1, 1, 1, 2, 2, 2], "d": values, "n": numbers})
    aggregations = [("d", "min", "lo"), ("d", "max", "hi"), ("n", "min", "nlo"), ("n", "max", "nhi"),
                    ("d", "count", "nd")]
    result = sn.aggregate(table, ["k"], aggregations).sort_by("k")
    assert result.schema.field("lo").type == pa.string() and result.schema.field("nhi").type == pa.int64()
    assert result.to_pylist() == [{"k": 1, "lo": "a", "hi": "z", "nlo": -4, "nhi": 30, "nd": 3},
                                  {"k": 2, "lo": "m", "hi": "z", "nlo": 7, "nhi": 30, "nd": 2}]
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    assert partial.schema.field(1).type == pa.string()  # the state is the decoded value
    assert sn.aggregate_final([partial, partial], ["k"], aggregations).sort_by("k").equals(
        result.set_column(5, "nd", pa.array([6, 4])))


@pytest.mark.parametrize("threads", [None, 2])
def test_a_dictionary_entry_that_is_null_is_a_null_value(threads):
    """An index pointing at a null dictionary entry is a null: one null group with the null indices,
    not counted by count, skipped by min/max."""
    rng = np.random.default_rng(2)
    rows = 20_000
    indices = pa.array(rng.integers(0, 4, rows).astype(np.int8), mask=rng.random(rows) < 0.1)
    words = pa.DictionaryArray.from_arrays(indices, pa.array(["b", None, "a", "c"]))
    table = pa.table({"w": words, "v": words, "n": pa.array(rng.integers(0, 5, rows))})
    aggregations = [("v", "count", "nv"), ("v", "min", "lo"), ("v", "max", "hi"), ("", "count_all", "rows")]
    executor = None if threads is None else sn.MorselExecutor(threads=threads, morsel_bytes=4096)
    try:
        for keys in (["n"], ["w"], ["w", "n"]):
            result = sn.aggregate(table, keys, aggregations, executor=executor)
            assert_matches_duckdb(result, table, keys, aggregations)
        assert sn.aggregate(table, ["w"], aggregations, executor=executor).num_rows == 4
        # the radix strategy too: many distinct (w, key) groups
        wide = table.append_column("k", pa.array(rng.integers(0, 20_000, rows)))
        result, stats = sn._kernels._aggregate_with_stats(wide, ["w", "k"], aggregations, executor=executor)
        assert stats["strategy"] == "radix"
        assert_matches_duckdb(result, wide, ["w", "k"], aggregations)
    finally:
        if executor is not None:
            executor.shutdown()


def test_partial_states_are_shared_and_derivable_from_an_empty_table():
    table = pa.table({"k": [1, 1, 2], "v": [1.0, None, 3.0], "w": [5, 6, 7]})
    aggregations = [("v", "sum", "total"), ("v", "mean", "avg"), ("v", "count", "n"), ("", "count_all", "rows"),
                    ("w", "count_all", "rows2"), ("v", "min", "lo"), ("v", "min", "lo2"), ("w", "mean", "wavg")]
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    # sum(v) and mean(v) share a sum, count(v) and mean(v) a count, both count_all one row count, the two
    # min(v) one min; mean(w) needs a sum and a count of w: 6 states
    assert partial.schema.names[0] == "k" and partial.num_columns == 1 + 6
    assert sn.aggregate_partial(table.schema.empty_table(), ["k"], aggregations).schema == partial.schema
    assert sn.aggregate_partial(table.slice(0, 0), ["k"], aggregations).schema == partial.schema
    final = sn.aggregate_final([partial, partial], ["k"], aggregations).sort_by("k")
    assert final.to_pylist() == [
        {"k": 1, "total": 2.0, "avg": 1.0, "n": 2, "rows": 4, "rows2": 4, "lo": 1.0, "lo2": 1.0, "wavg": 5.5},
        {"k": 2, "total": 6.0, "avg": 3.0, "n": 2, "rows": 2, "rows2": 2, "lo": 3.0, "lo2": 3.0, "wavg": 7.0},
    ]
    # the final stage finds the states itself: no renaming, no dropping, RecordBatches or Tables
    assert sn.aggregate_final(partial.to_batches() + [partial], ["k"], aggregations).sort_by("k").equals(final)


def decimal_array(unscaled, precision, scale):
    """decimal128 from int64 unscaled values, built from its 128-bit little-endian storage."""
    words = np.empty((len(unscaled), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(unscaled), [None, pa.py_buffer(words)])


def random_table(rows, keys, seed, null_fraction=0.05):
    rng = np.random.default_rng(seed)
    key = rng.zipf(1.3, rows) % keys  # skewed
    floats = rng.normal(size=rows)
    floats[rng.random(rows) < 0.01] = np.nan
    return pa.table({
        "key": pa.array(key, mask=rng.random(rows) < null_fraction),
        "name": pa.array(np.char.add("n", (key % 1000).astype(str)), mask=rng.random(rows) < null_fraction),
        "i32": pa.array(rng.integers(-1000, 1000, rows).astype(np.int32), mask=rng.random(rows) < null_fraction),
        "value": pa.array(floats, mask=rng.random(rows) < null_fraction),
        "price": decimal_array(rng.integers(-10**12, 10**12, rows), 15, 2),
        "word": pa.array(np.char.add("w", rng.integers(0, 300, rows).astype(str))).dictionary_encode(),
    })


ALL_FUNCTIONS = ("count", "sum", "min", "max", "mean")
MIXED_AGGREGATIONS = ([(c, f, f"{c}_{f}") for c in ("i32", "value", "price") for f in ALL_FUNCTIONS] +
                      [("word", "min", "word_min"), ("word", "max", "word_max"), ("name", "max", "name_max"),
                       ("", "count_all", "rows")])


@pytest.mark.parametrize("executor_threads", [None, 1, 2])
@pytest.mark.parametrize("distinct_keys", [50, 60_000])  # per-morsel tables, and radix partitioning
def test_both_strategies_on_the_executor_match_duckdb(executor_threads, distinct_keys):
    table = random_table(150_000, distinct_keys, seed=distinct_keys)
    if distinct_keys > 10_000:  # make sure the sample sees many distinct keys: uniform keys
        table = table.set_column(0, "key", pa.array(np.random.default_rng(4).integers(0, distinct_keys, table.num_rows)))
    if executor_threads is None:
        result, stats = sn._kernels._aggregate_with_stats(table, ["key"], MIXED_AGGREGATIONS)
    else:
        with sn.MorselExecutor(threads=executor_threads, morsel_bytes=64 * 1024) as executor:
            result, stats = sn._kernels._aggregate_with_stats(table, ["key"], MIXED_AGGREGATIONS, executor=executor)
    assert stats["strategy"] == ("morsel" if distinct_keys == 50 else "radix")
    assert_matches_duckdb(result, table, ["key"], MIXED_AGGREGATIONS)
    assert result.schema.field("i32_min").type == pa.int32()
    assert result.schema.field("i32_sum").type == pa.int64()
    assert result.schema.field("price_sum").type == pa.decimal128(38, 2)
    assert result.schema.field("word_min").type == pa.string()


def test_string_dictionary_and_multi_column_keys_with_many_groups_on_the_executor():
    table = random_table(100_000, 20_000, seed=9)
    aggregations = [("value", f, f) for f in ALL_FUNCTIONS] + [("price", "sum", "price_sum")]
    with sn.MorselExecutor(threads=2, morsel_bytes=32 * 1024) as executor:
        for keys in (["name"], ["name", "key"], ["word", "name"], ["word"]):
            result = sn.aggregate(table, keys, aggregations, executor=executor)
            assert_matches_duckdb(result, table, keys, aggregations)


def test_radix_partitions_are_all_used_after_an_exchange():
    """The exchange sends a reducer only rows whose exchange hash has the same high bits. The aggregate
    must hash with another seed, or its radix partitions (also high bits) fill only 1/N after an N-way
    exchange: with the exchange's seed, one of 2 exchange partitions fills 8 of 16 radix partitions."""
    rng = np.random.default_rng(11)
    table = pa.table({"k": rng.integers(0, 1 << 40, 200_000), "v": rng.random(200_000)})
    aggregations = [("v", "sum", "total")]
    for keys_table in (table, table.set_column(0, "k", table.column("k").cast(pa.string()))):
        for part in sn.partition_batch(keys_table, ["k"], 2):
            partial, stats = sn._kernels._aggregate_with_stats(part, ["k"], aggregations, stage="partial")
            assert stats["strategy"] == "radix" and stats["radix_partitions"] >= 16
            assert stats["radix_partitions_used"] == stats["radix_partitions"], stats
            final, stats = sn._kernels._aggregate_with_stats(partial, ["k"], aggregations, stage="final")
            assert stats["radix_partitions_used"] == stats["radix_partitions"], stats
            assert final.num_rows == part.num_rows  # the keys are distinct


def test_final_merges_partials_whose_dictionaries_differ():
    first = pa.table({"w": pa.array(["x", "y"]).dictionary_encode(), "v": [1, 2]})
    second = pa.table({"w": pa.array(["y", "z", "x"]).dictionary_encode(), "v": [3, 4, 5]})
    aggregations = [("v", "sum", "total")]
    partials = [sn.aggregate_partial(t, ["w"], aggregations) for t in (first, second)]
    merged = sn.aggregate_final(partials, ["w"], aggregations)
    assert pa.types.is_dictionary(merged.schema.field("w").type)
    assert sorted(merged.to_pylist(), key=lambda r: r["w"]) == [
        {"w": "x", "total": 6}, {"w": "y", "total": 5}, {"w": "z", "total": 4}]


def test_empty_and_zero_row_inputs_give_empty_results_with_the_right_schema():
    table = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int32()),
                      "d": pa.array([], pa.dictionary(pa.int8(), pa.large_string()))})
    aggregations = [("v", "sum", "s"), ("v", "min", "lo"), ("v", "mean", "m"), ("v", "count", "n"),
                    ("d", "max", "dmax"), ("", "count_all", "rows")]
    result = sn.aggregate(table, ["k"], aggregations)
    assert result.num_rows == 0
    assert result.schema == pa.schema([("k", pa.string()), ("s", pa.int64()), ("lo", pa.int32()),
                                       ("m", pa.float64()), ("n", pa.int64()), ("dmax", pa.large_string()),
                                       ("rows", pa.int64())])
    assert sn.aggregate(pa.Table.from_batches([], schema=table.schema), ["k"], aggregations).schema == result.schema
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    assert sn.aggregate_final([partial], ["k"], aggregations).schema == result.schema


def test_bad_input_raises_clear_errors():
    table = pa.table({"k": [1, 2], "v": [1.0, 2.0], "s": ["a", "b"], "tags": [[1], [2]],
                      "day": pa.array([1, 2], pa.date32()), "f16": pa.array([1, 2], pa.float16())})
    with pytest.raises(ValueError, match="unknown key column 'nope'"):
        sn.aggregate(table, ["nope"], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="'missing'"):
        sn.aggregate(table, ["k"], [("missing", "sum", "x")])
    with pytest.raises(ValueError, match="unknown aggregate function 'median'"):
        sn.aggregate(table, ["k"], [("v", "median", "x")])
    with pytest.raises(TypeError, match="'tags'"):
        sn.aggregate(table, ["tags"], [("v", "sum", "x")])
    for column, function in (("s", "sum"), ("s", "mean"), ("day", "sum"), ("tags", "min"), ("f16", "max")):
        with pytest.raises(TypeError, match=f"'{column}'"):
            sn.aggregate(table, ["k"], [(column, function, "x")])
    with pytest.raises(ValueError, match="at least one"):
        sn.aggregate(table, [], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="at least one"):
        sn.aggregate(table, ["k"], [])
    with pytest.raises(ValueError, match="'x'"):
        sn.aggregate(table, ["k"], [("v", "sum", "x"), ("v", "max", "x")])
    with pytest.raises(ValueError, match="'k'"):
        sn.aggregate(table, ["k"], [("v", "sum", "k")])
    with pytest.raises(ValueError, match="tuple"):
        sn.aggregate(table, ["k"], [("v", "sum")])
    with pytest.raises(ValueError, match="state .* for sum of 'v' .*'x'"):
        sn.aggregate_final([table], ["k"], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="at least one partial"):
        sn.aggregate_final([], ["k"], [("v", "sum", "x")])
    with pytest.raises(TypeError, match="Table"):
        sn.aggregate({"k": [1]}, ["k"], [("v", "sum", "x")])
    # A column the aggregation does not read may have any type.
    assert sn.aggregate(table, ["k"], [("v", "count", "n")]).num_rows == 2


@pytest.mark.parametrize("key_type", ["bool", "int8", "uint32", "float32", "decimal(15,2)", "large_string", "binary",
                                      "date32", "timestamp[ns,UTC]", "duration[ms]", "dictionary<string>",
                                      "dictionary<int64>"])
def test_every_key_type_groups_like_duckdb_on_the_executor(key_type):
    rng = np.random.default_rng(8)
    rows = 5_000
    pool = TYPES[key_type][1]
    keys = [None if rng.random() < 0.1 else pool[i] for i in rng.integers(0, len(pool), rows)]
    table = pa.table({"key": make_array(key_type, keys),
                      "v": pa.array(rng.integers(0, 100, rows), mask=rng.random(rows) < 0.1)})
    aggregations = [("v", f, f"v_{f}") for f in ALL_FUNCTIONS] + [("", "count_all", "rows")]
    with sn.MorselExecutor(threads=2, morsel_bytes=8 * 1024) as executor:
        result = sn.aggregate(table, ["key"], aggregations, executor=executor)
    assert result.schema.field("key").type == TYPES[key_type][0]
    assert_matches_duckdb(result, table, ["key"], aggregations)
    assert plain_table(result).num_rows == result.num_rows
