"""Hash aggregation: equal to pyarrow.Table.group_by on random data with nulls, strings and skew
(property-based), partial -> partition -> final equal to one-shot, both execution strategies, integer
overflow, and clear errors for bad input."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sabot_native as sn

FUNCTIONS = ("count", "sum", "min", "max", "mean")


def all_aggregations(columns):
    return [(column, function, f"{column}_{function}") for column in columns for function in FUNCTIONS]


def pyarrow_reference(table, keys, aggregations):
    grouped = table.group_by(keys, use_threads=False).aggregate([(c, f) for c, f, _ in aggregations])
    return grouped.select(keys + [name for _, _, name in aggregations])


def canonical(table, keys):
    """Rows sorted by key so results of different engines compare; dictionary keys decoded."""
    columns = {}
    for name in table.schema.names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column
    return pa.table(columns).sort_by([(k, "ascending") for k in keys])


def assert_same_groups(ours, theirs, keys):
    assert ours.schema.names == theirs.schema.names
    ours, theirs = canonical(ours, keys), canonical(theirs, keys)
    assert ours.num_rows == theirs.num_rows
    for name in ours.schema.names:
        a, b = ours.column(name), theirs.column(name)
        if pa.types.is_floating(b.type):
            assert a.type == b.type, name
            assert a.is_null().equals(b.is_null()), name
            x, y = a.fill_null(0).to_numpy(), b.fill_null(0).to_numpy()
            assert np.allclose(x, y, rtol=1e-9, atol=1e-9), name
        else:
            assert a.equals(b), (name, a, b)


@st.composite
def group_by_tables(draw):
    rows = draw(st.integers(0, 200))
    key_pool = draw(st.lists(st.integers(-5, 5), min_size=1, max_size=6, unique=True))
    word_pool = draw(st.lists(st.text(max_size=4), min_size=1, max_size=5, unique=True))
    null_key = st.none()
    # Skew: the first pool entry is drawn far more often than the others.
    int_key = st.one_of(st.just(key_pool[0]), st.just(key_pool[0]), st.sampled_from(key_pool), null_key)
    str_key = st.one_of(st.just(word_pool[0]), st.sampled_from(word_pool), null_key)
    ints = st.one_of(st.none(), st.integers(-(2**40), 2**40))
    floats = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
    row = st.tuples(int_key, str_key, ints, floats)
    data = draw(st.lists(row, min_size=rows, max_size=rows))
    columns = list(zip(*data)) if data else [[], [], [], []]
    return pa.table({
        "k": pa.array(columns[0], pa.int64()),
        "s": pa.array(columns[1], pa.string()),
        "i": pa.array(columns[2], pa.int64()),
        "f": pa.array(columns[3], pa.float64()),
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=group_by_tables(), keys=st.sampled_from([["k"], ["s"], ["k", "s"], ["s", "k"]]))
def test_aggregate_equals_pyarrow_group_by(table, keys):
    aggregations = all_aggregations(["i", "f"])
    expected = pyarrow_reference(table, keys, aggregations)
    assert_same_groups(sn.aggregate(table, keys, aggregations), expected, keys)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=group_by_tables(), producers=st.integers(1, 3), partitions=st.integers(1, 4))
def test_partial_partition_final_equals_one_shot(table, producers, partitions):
    keys = ["s", "k"]
    aggregations = all_aggregations(["i", "f"])
    one_shot = sn.aggregate(table, keys, aggregations)
    # Each producer pre-aggregates its share, partitions the partial state by key and "ships" it.
    shares = np.array_split(np.arange(table.num_rows), producers)
    received = [[] for _ in range(partitions)]
    for share in shares:
        partial = sn.aggregate_partial(table.take(pa.array(share, pa.int64())), keys, aggregations)
        for index, part in enumerate(sn.partition_batch(partial, keys, partitions)):
            received[index].append(pa.Table.from_batches([part]))
    finals = [sn.aggregate_final(parts, keys, aggregations) for parts in received]
    assert_same_groups(pa.concat_tables(finals), one_shot, keys)
    assert_same_groups(one_shot, pyarrow_reference(table, keys, aggregations), keys)


def random_table(rows, keys, seed, null_fraction=0.05):
    rng = np.random.default_rng(seed)
    key = rng.zipf(1.3, rows) % keys  # skewed
    return pa.table({
        "key": pa.array(key, mask=rng.random(rows) < null_fraction),
        "name": pa.array(np.char.add("n", (key % 1000).astype(str)), mask=rng.random(rows) < null_fraction),
        "i32": pa.array(rng.integers(-1000, 1000, rows).astype(np.int32), mask=rng.random(rows) < null_fraction),
        "value": pa.array(rng.normal(size=rows), mask=rng.random(rows) < null_fraction),
    })


@pytest.mark.parametrize("executor_threads", [None, 1, 2])
@pytest.mark.parametrize("distinct_keys", [50, 60_000])  # per-morsel tables, and radix partitioning
def test_both_strategies_on_the_executor_equal_pyarrow(executor_threads, distinct_keys):
    table = random_table(150_000, distinct_keys, seed=distinct_keys)
    if distinct_keys > 10_000:  # make sure the sample sees many distinct keys: uniform keys
        table = table.set_column(0, "key", pa.array(np.random.default_rng(4).integers(0, distinct_keys, table.num_rows)))
    aggregations = all_aggregations(["i32", "value"])
    expected = pyarrow_reference(table, ["key"], aggregations)
    if executor_threads is None:
        result = sn.aggregate(table, ["key"], aggregations)
    else:
        with sn.MorselExecutor(threads=executor_threads, morsel_bytes=64 * 1024) as executor:
            result = sn.aggregate(table, ["key"], aggregations, executor=executor)
    assert_same_groups(result, expected, ["key"])
    assert result.schema.field("i32_min").type == pa.int32()
    assert result.schema.field("i32_sum").type == pa.int64()


def test_string_and_multi_column_keys_with_many_groups_on_the_executor():
    table = random_table(100_000, 20_000, seed=9)
    aggregations = all_aggregations(["value"])
    with sn.MorselExecutor(threads=2, morsel_bytes=32 * 1024) as executor:
        for keys in (["name"], ["name", "key"]):
            assert_same_groups(sn.aggregate(table, keys, aggregations, executor=executor),
                               pyarrow_reference(table, keys, aggregations), keys)


def test_dictionary_keys_group_by_decoded_value_and_keep_their_type():
    words = pa.array(["b", "a", None, "b", "c", "a"] * 10)
    table = pa.table({"w": words.dictionary_encode(), "v": pa.array(range(60), pa.int64())})
    result = sn.aggregate(table, ["w"], [("v", "sum", "total"), ("v", "count", "n")])
    assert pa.types.is_dictionary(result.schema.field("w").type)
    plain = pa.table({"w": words, "v": pa.array(range(60), pa.int64())})
    expected = plain.group_by("w").aggregate([("v", "sum"), ("v", "count")]).rename_columns(["w", "total", "n"])
    assert_same_groups(result, expected.select(["w", "total", "n"]), ["w"])


def test_multi_chunk_table_and_record_batch_input():
    table = random_table(5_000, 40, seed=3)
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=700))
    assert chunked.column(0).num_chunks > 1
    aggregations = all_aggregations(["value"])
    expected = pyarrow_reference(table, ["key"], aggregations)
    assert_same_groups(sn.aggregate(chunked, ["key"], aggregations), expected, ["key"])
    assert_same_groups(sn.aggregate(table.combine_chunks().to_batches()[0], ["key"], aggregations), expected, ["key"])


def test_partial_state_columns_are_named_after_the_output():
    table = pa.table({"k": [1, 1, 2], "v": [1.0, None, 3.0]})
    aggregations = [("v", "mean", "avg"), ("v", "count", "n"), ("v", "min", "lo"), ("v", "max", "hi"),
                    ("v", "sum", "total")]
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    assert partial.schema.names == ["k", "avg__sum", "avg__count", "n__count", "lo__min", "hi__max", "total__sum"]
    assert sorted(partial.to_pylist(), key=lambda r: r["k"]) == [
        {"k": 1, "avg__sum": 1.0, "avg__count": 1, "n__count": 1, "lo__min": 1.0, "hi__max": 1.0, "total__sum": 1.0},
        {"k": 2, "avg__sum": 3.0, "avg__count": 1, "n__count": 1, "lo__min": 3.0, "hi__max": 3.0, "total__sum": 3.0},
    ]
    final = sn.aggregate_final([partial, partial], ["k"], aggregations)
    assert sorted(final.to_pylist(), key=lambda r: r["k"]) == [
        {"k": 1, "avg": 1.0, "n": 2, "lo": 1.0, "hi": 1.0, "total": 2.0},
        {"k": 2, "avg": 3.0, "n": 2, "lo": 3.0, "hi": 3.0, "total": 6.0},
    ]


def test_integer_sum_overflow_raises_overflow_error():
    table = pa.table({"k": [1, 1], "v": pa.array([2**62, 2**62], pa.int64())})
    with pytest.raises(OverflowError, match="'v'"):
        sn.aggregate(table, ["k"], [("v", "sum", "total")])
    partial = sn.aggregate_partial(table.slice(0, 1), ["k"], [("v", "sum", "total")])
    with pytest.raises(OverflowError, match="total__sum"):
        sn.aggregate_final([partial, partial], ["k"], [("v", "sum", "total")])


def test_empty_and_zero_row_inputs_give_empty_results_with_the_right_schema():
    table = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int32())})
    aggregations = [("v", "sum", "s"), ("v", "min", "lo"), ("v", "mean", "m"), ("v", "count", "n")]
    result = sn.aggregate(table, ["k"], aggregations)
    assert result.num_rows == 0
    assert result.schema == pa.schema([("k", pa.string()), ("s", pa.int64()), ("lo", pa.int32()),
                                       ("m", pa.float64()), ("n", pa.int64())])
    assert sn.aggregate(pa.Table.from_batches([], schema=table.schema), ["k"], aggregations).num_rows == 0
    partial = sn.aggregate_partial(table, ["k"], aggregations)
    assert sn.aggregate_final([partial], ["k"], aggregations).schema == result.schema


def test_bad_input_raises_clear_errors():
    table = pa.table({"k": [1, 2], "v": [1.0, 2.0], "s": ["a", "b"], "tags": [[1], [2]]})
    with pytest.raises(ValueError, match="unknown key column 'nope'"):
        sn.aggregate(table, ["nope"], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="'missing'"):
        sn.aggregate(table, ["k"], [("missing", "sum", "x")])
    with pytest.raises(ValueError, match="unknown aggregate function 'median'"):
        sn.aggregate(table, ["k"], [("v", "median", "x")])
    with pytest.raises(TypeError, match="'tags'"):
        sn.aggregate(table, ["tags"], [("v", "sum", "x")])
    with pytest.raises(TypeError, match="sum of column 's'"):
        sn.aggregate(table, ["k"], [("s", "sum", "x")])
    with pytest.raises(ValueError, match="at least one"):
        sn.aggregate(table, [], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="at least one"):
        sn.aggregate(table, ["k"], [])
    with pytest.raises(ValueError, match="'x'"):
        sn.aggregate(table, ["k"], [("v", "sum", "x"), ("v", "max", "x")])
    with pytest.raises(ValueError, match="tuple"):
        sn.aggregate(table, ["k"], [("v", "sum")])
    with pytest.raises(ValueError, match="'x__sum'"):
        sn.aggregate_final([table], ["k"], [("v", "sum", "x")])
    with pytest.raises(ValueError, match="at least one partial"):
        sn.aggregate_final([], ["k"], [("v", "sum", "x")])
    with pytest.raises(TypeError, match="Table"):
        sn.aggregate({"k": [1]}, ["k"], [("v", "sum", "x")])
    # A column the aggregation does not read may have any type.
    assert sn.aggregate(table, ["k"], [("v", "count", "n")]).num_rows == 2


def test_count_counts_non_null_values_of_any_type():
    table = pa.table({"k": [1, 1, 2], "s": ["a", None, None]})
    result = sn.aggregate(table, ["k"], [("s", "count", "n")])
    assert sorted(result.to_pylist(), key=lambda r: r["k"]) == [{"k": 1, "n": 1}, {"k": 2, "n": 0}]
    assert pc.sum(result.column("n")).as_py() == 1


def test_final_merges_partials_whose_dictionaries_differ():
    first = pa.table({"w": pa.array(["x", "y"]).dictionary_encode(), "v": [1, 2]})
    second = pa.table({"w": pa.array(["y", "z", "x"]).dictionary_encode(), "v": [3, 4, 5]})
    aggregations = [("v", "sum", "total")]
    partials = [sn.aggregate_partial(t, ["w"], aggregations) for t in (first, second)]
    merged = sn.aggregate_final(partials, ["w"], aggregations)
    assert sorted(merged.to_pylist(), key=lambda r: r["w"]) == [
        {"w": "x", "total": 6}, {"w": "y", "total": 5}, {"w": "z", "total": 4}]


@pytest.mark.parametrize("key_type", [pa.bool_(), pa.int32(), pa.float64(), pa.large_string(), pa.binary(),
                                      pa.date32(), pa.dictionary(pa.int16(), pa.string())], ids=str)
def test_every_key_type_groups_like_pyarrow(key_type):
    rng = np.random.default_rng(8)
    rows = 5_000
    codes = rng.integers(0, 7, rows)
    mask = rng.random(rows) < 0.1
    if pa.types.is_boolean(key_type):
        keys = pa.array(codes % 2 == 0, mask=mask)
    elif pa.types.is_dictionary(key_type):
        keys = pa.array(np.char.add("w", codes.astype(str)), mask=mask).dictionary_encode().cast(key_type)
    elif pa.types.is_large_string(key_type) or pa.types.is_binary(key_type):
        keys = pa.array(np.char.add("w", codes.astype(str)), mask=mask).cast(key_type)
    elif pa.types.is_date32(key_type):
        keys = pa.array((codes * 3 + 5).astype(np.int32), mask=mask).view(key_type)
    else:
        keys = pa.array(codes * 3 - 5, mask=mask).cast(key_type)
    table = pa.table({"key": keys, "v": pa.array(rng.integers(0, 100, rows), mask=rng.random(rows) < 0.1)})
    aggregations = all_aggregations(["v"])
    with sn.MorselExecutor(threads=2, morsel_bytes=8 * 1024) as executor:
        result = sn.aggregate(table, ["key"], aggregations, executor=executor)
    assert result.schema.field("key").type == key_type
    plain = table.set_column(0, "key", keys.cast(key_type.value_type)) if pa.types.is_dictionary(key_type) else table
    assert_same_groups(result, pyarrow_reference(plain, ["key"], aggregations), ["key"])
