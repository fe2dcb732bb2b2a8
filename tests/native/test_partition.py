"""Hash partitioning: every row exactly once, equal keys together, input order kept within a
partition, the documented partition function, the same result in every process, every column type
carried (also from unaligned and sliced buffers), and clear errors for bad input."""
import decimal
import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import sabot_native as sn

ROWS = 3000


def mixed_batch(rows=ROWS, seed=1):
    """One column of every layout the kernel carries, with nulls, plus a row number to track rows."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows) < 0.1
    words = np.array(["alpha", "beta", "", "gamma-long-string-value", "Zürich", "δ"])
    strings = pa.array(words[rng.integers(0, len(words), rows)], mask=nulls)
    return pa.record_batch({
        "row": pa.array(np.arange(rows, dtype=np.int64)),
        "i64": pa.array(rng.integers(-50, 50, rows), mask=nulls),
        "i32": pa.array(rng.integers(-50, 50, rows).astype(np.int32), mask=rng.random(rows) < 0.1),
        "i8": pa.array(rng.integers(-100, 100, rows).astype(np.int8)),
        "f64": pa.array(np.round(rng.normal(size=rows), 1), mask=rng.random(rows) < 0.1),
        "flag": pa.array(rng.random(rows) < 0.5, mask=rng.random(rows) < 0.1),
        "s": strings,
        "ls": strings.cast(pa.large_string()),
        "bin": strings.cast(pa.binary()),
        "dict": strings.dictionary_encode(),
        "fsb": pa.array([bytes([i % 251, 7, 9]) for i in range(rows)], pa.binary(3)),
        "dec": pa.array([decimal.Decimal(i) / 100 for i in range(rows)], pa.decimal128(12, 2)),
        "ts": pa.array(rng.integers(0, 10**12, rows), pa.timestamp("us")),
        "day": pa.array(rng.integers(0, 20000, rows).astype(np.int32), pa.date32()),
    })


def check_partitioning(batch, parts, keys, num_partitions, seed=sn.DEFAULT_HASH_SEED):
    assert len(parts) == num_partitions
    assert all(part.schema.equals(batch.schema) for part in parts)
    for part in parts:
        part.validate(full=True)
    # Every row exactly once, with all its values intact.
    combined = pa.Table.from_batches(parts, schema=batch.schema).combine_chunks()
    assert combined.num_rows == batch.num_rows
    original = pa.Table.from_batches([batch])
    assert combined.sort_by("row").equals(original.sort_by("row"))
    # Each row sits in the partition the documented function gives, so equal keys are together.
    hashes = sn.hash_rows(batch, keys, seed=seed).to_numpy().astype(object)
    expected_partition = {row: (int(h) * num_partitions) >> 64 for row, h in zip(batch.column("row").to_pylist(), hashes)}
    for index, part in enumerate(parts):
        rows = part.column("row").to_pylist()
        assert all(expected_partition[row] == index for row in rows)
        # Input order kept within the partition.
        assert rows == sorted(rows)


KEY_SETS = [["i64"], ["i32"], ["i8"], ["f64"], ["flag"], ["s"], ["ls"], ["bin"], ["dict"], ["fsb"], ["dec"],
            ["ts"], ["day"], ["s", "i64"], ["dict", "f64", "flag"]]


@pytest.mark.parametrize("keys", KEY_SETS, ids=lambda keys: "+".join(keys))
def test_partition_every_key_type_inline(keys):
    batch = mixed_batch()
    check_partitioning(batch, sn.partition_batch(batch, keys, 7), keys, 7)


@pytest.mark.parametrize("keys", [["i64"], ["s"], ["dict", "flag"]], ids=lambda keys: "+".join(keys))
def test_partition_on_executor_with_many_morsels_equals_inline(keys):
    batch = mixed_batch(rows=20000)
    inline = sn.partition_batch(batch, keys, 16)
    with sn.MorselExecutor(threads=2, morsel_bytes=4096) as executor:
        parallel = sn.partition_batch(batch, keys, 16, executor=executor)
        assert executor.stats()["morsels_processed"] > 16
    check_partitioning(batch, parallel, keys, 16)
    assert all(a.equals(b) for a, b in zip(inline, parallel))


def test_equal_keys_of_different_representations_land_in_the_same_partition():
    values = ["a", "b", None, "c", "a", "d"] * 50
    numbers = [None if v is None else ord(v) for v in values]
    batches = [pa.record_batch({"k": array, "row": pa.array(range(len(values)))}) for array in (
        pa.array(values), pa.array(values, pa.large_string()), pa.array(values).dictionary_encode())]
    layouts = [[part.column("row").to_pylist() for part in sn.partition_batch(b, ["k"], 5)] for b in batches]
    assert layouts[0] == layouts[1] == layouts[2]
    int_layouts = [[part.column("row").to_pylist() for part in sn.partition_batch(
        pa.record_batch({"k": pa.array(numbers, t), "row": pa.array(range(len(values)))}), ["k"], 5)]
        for t in (pa.int32(), pa.int64())]
    assert int_layouts[0] == int_layouts[1]


def test_slices_with_nonzero_offsets_partition_like_a_copy():
    batch = mixed_batch()
    for offset, length in ((1, 100), (13, 1000), (2999, 1), (5, 0)):
        sliced = batch.slice(offset, length)
        copy = batch.take(pa.array(np.arange(offset, offset + length, dtype=np.int64)))
        assert all(column.offset == 0 for column in copy.columns)
        for keys in (["i64"], ["s", "flag"], ["dict"]):
            parts = sn.partition_batch(sliced, keys, 4)
            check_partitioning(sliced, parts, keys, 4)
            assert [p.to_pylist() for p in parts] == [p.to_pylist() for p in sn.partition_batch(copy, keys, 4)]


def unaligned(buffer, shift):
    """A copy of `buffer` at an address `shift` bytes past 64-byte alignment (as Flight may deliver)."""
    moved = pa.py_buffer(bytearray(buffer.size + 64))
    start = (64 - moved.address % 64) % 64 + shift
    np.frombuffer(moved, dtype=np.uint8)[start:start + buffer.size] = np.frombuffer(buffer, dtype=np.uint8)
    return moved.slice(start, buffer.size)


def test_unaligned_buffers_like_received_flight_messages():
    batch = mixed_batch()
    columns = []
    for index, column in enumerate(batch.columns):
        buffers = [None if b is None else unaligned(b, 1 + (index + i) % 7) for i, b in enumerate(column.buffers())]
        if pa.types.is_dictionary(column.type):
            dictionary = column.dictionary
            indices = pa.Array.from_buffers(column.type.index_type, len(column), buffers, offset=column.offset)
            columns.append(pa.DictionaryArray.from_arrays(indices, dictionary))
        else:
            columns.append(pa.Array.from_buffers(column.type, len(column), buffers, offset=column.offset))
    moved = pa.record_batch(columns, schema=batch.schema)
    assert any(b is not None and b.address % 8 for c in moved.columns for b in c.buffers())
    assert moved.equals(batch)
    for keys in (["i64"], ["s", "f64"], ["dict"], ["dec"]):
        parts = sn.partition_batch(moved, keys, 5)
        check_partitioning(moved, parts, keys, 5)
        assert [p.to_pylist() for p in parts] == [p.to_pylist() for p in sn.partition_batch(batch, keys, 5)]


def test_ipc_round_trip_into_an_odd_offset_buffer():
    batch = mixed_batch(rows=500)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    received = unaligned(sink.getvalue(), 3)
    read = pa.ipc.open_stream(received).read_next_batch()
    parts = sn.partition_batch(read, ["s", "i32"], 3)
    check_partitioning(read, parts, ["s", "i32"], 3)


def test_dictionary_is_shared_and_outlives_the_input():
    batch = mixed_batch()
    dictionary = batch.column("dict").dictionary
    parts = sn.partition_batch(batch, ["i64"], 4)
    for part in parts:
        assert part.column("dict").dictionary.equals(dictionary)
        assert part.column("dict").dictionary.buffers()[2].address == dictionary.buffers()[2].address
    expected = [part.to_pylist() for part in parts]
    del batch, dictionary
    gc.collect()
    assert [part.to_pylist() for part in parts] == expected


def test_one_partition_and_more_partitions_than_rows():
    batch = mixed_batch(rows=10)
    (only,) = sn.partition_batch(batch, ["i64"], 1)
    assert only.equals(batch)
    many = sn.partition_batch(batch, ["s"], 1000)
    check_partitioning(batch, many, ["s"], 1000)
    assert sum(part.num_rows == 0 for part in many) >= 990


def test_zero_row_batch_and_empty_table_give_empty_partitions():
    batch = mixed_batch().slice(0, 0)
    parts = sn.partition_batch(batch, ["s"], 3)
    assert [p.num_rows for p in parts] == [0, 0, 0]
    assert all(p.schema.equals(batch.schema) for p in parts)
    table_parts = sn.partition_batch(pa.Table.from_batches([], schema=batch.schema), ["i64"], 2)
    assert [p.num_rows for p in table_parts] == [0, 0]


def test_seed_changes_the_assignment():
    batch = mixed_batch()
    default = [p.column("row").to_pylist() for p in sn.partition_batch(batch, ["i64"], 4)]
    seeded = [p.column("row").to_pylist() for p in sn.partition_batch(batch, ["i64"], 4, seed=12345)]
    assert default != seeded
    check_partitioning(batch, sn.partition_batch(batch, ["i64"], 4, seed=12345), ["i64"], 4, seed=12345)


ASSIGNMENT_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import pyarrow as pa
    import sabot_native as sn
    keys = [f"key-{i % 97}" for i in range(2000)]
    batch = pa.record_batch({"k": pa.array(keys), "n": pa.array([i % 13 for i in range(2000)])})
    parts = sn.partition_batch(batch, ["k", "n"], 8)
    digest = hashlib.sha256(repr([p.to_pylist() for p in parts]).encode()).hexdigest()
    print(hash("salted"), digest)
""")


def test_same_assignment_in_processes_with_different_pythonhashseed():
    outputs = []
    for python_hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=python_hash_seed)
        result = subprocess.run([sys.executable, "-c", ASSIGNMENT_SCRIPT], env=env, capture_output=True, text=True,
                                timeout=120, check=True)
        outputs.append(result.stdout.split())
    assert outputs[0][0] != outputs[1][0], "the two processes must really use different string hash salts"
    assert outputs[0][1] == outputs[1][1]


def test_bad_input_raises_clear_errors():
    batch = pa.record_batch({"k": pa.array([1, 2, 3]), "tags": pa.array([[1], [2, 3], []])})
    with pytest.raises(ValueError, match="unknown key column 'nope'"):
        sn.partition_batch(batch, ["nope"], 2)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="num_partitions"):
            sn.partition_batch(batch, ["k"], bad)
    with pytest.raises(TypeError, match="'tags'"):
        sn.partition_batch(batch, ["tags"], 2)
    with pytest.raises(TypeError, match="'tags'"):  # nested payload columns are not carried (yet)
        sn.partition_batch(batch, ["k"], 2)
    with pytest.raises(ValueError, match="at least one"):
        sn.partition_batch(batch, [], 2)
    with pytest.raises(TypeError, match="keys"):
        sn.partition_batch(batch, [1], 2)
    with pytest.raises(TypeError, match="executor"):
        sn.partition_batch(batch, ["k"], 2, executor="threads")
    with pytest.raises(ValueError, match="unknown key column"):
        sn.partition_batch(pa.record_batch([]), ["k"], 2)


def test_executor_that_was_shut_down_raises():
    executor = sn.MorselExecutor(threads=2, morsel_bytes=4096)
    executor.shutdown()
    with pytest.raises(RuntimeError):
        sn.partition_batch(mixed_batch(), ["i64"], 4, executor=executor)


def chunked(batch, sizes):
    """The batch's rows as a Table of chunks of the given sizes (zero-row chunks included)."""
    chunks, offset = [], 0
    for size in sizes:
        chunks.append(batch.slice(offset, size))
        offset += size
    chunks.append(batch.slice(offset))
    return pa.Table.from_batches(chunks, schema=batch.schema)


@pytest.mark.parametrize("threads", [None, 2])
def test_a_table_of_many_chunks_partitions_like_its_combined_batch(threads):
    batch = mixed_batch(rows=5000)
    table = chunked(batch, [0, 1, 700, 0, 1299, 3, 997])
    assert table.column(0).num_chunks == 8
    executor = None if threads is None else sn.MorselExecutor(threads=threads, morsel_bytes=2048)
    try:
        for keys in (["i64"], ["s", "dict"], ["fsb", "flag"]):
            parts = sn.partition_batch(table, keys, 6, executor=executor)
            expected = sn.partition_batch(batch, keys, 6)
            assert all(isinstance(part, pa.Table) for part in parts)
            assert [part.num_rows for part in parts] == [part.num_rows for part in expected]
            for part, want in zip(parts, expected):
                assert part.column(0).num_chunks == 1  # well under 2 GiB: one array per partition
                assert part.schema == batch.schema
                assert part.to_batches()[0].equals(want) if part.num_rows else want.num_rows == 0
            check_partitioning(batch, [part.combine_chunks().to_batches()[0] if part.num_rows else
                                       batch.slice(0, 0) for part in parts], keys, 6)
    finally:
        if executor is not None:
            executor.shutdown()


def test_chunks_with_different_dictionaries_are_unified():
    first = pa.record_batch({"d": pa.array(["x", "y", "x"]).dictionary_encode(), "row": pa.array([0, 1, 2])})
    second = pa.record_batch({"d": pa.array(["z", "x"]).dictionary_encode(), "row": pa.array([3, 4])})
    table = pa.Table.from_batches([first, second])
    assert not table.column("d").chunk(0).dictionary.equals(table.column("d").chunk(1).dictionary)
    parts = sn.partition_batch(table, ["d"], 3)
    rows = {row["row"]: row["d"] for part in parts for row in part.to_pylist()}
    assert rows == {0: "x", 1: "y", 2: "x", 3: "z", 4: "x"}
    plain = pa.Table.from_batches([first, second]).unify_dictionaries().combine_chunks()
    assert [sorted(p.column("row").to_pylist()) for p in parts] == [
        sorted(p.column("row").to_pylist()) for p in sn.partition_batch(plain.to_batches()[0], ["d"], 3)]
