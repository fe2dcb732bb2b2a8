"""The partition hash: golden vectors, a pure-Python implementation of the spec in native/README.md,
type normalization, nulls, unaligned input and the order-independent batch checksum."""
import json
import math
import pathlib
import struct

import numpy as np
import pyarrow as pa
import pytest

import sabot_native as sn

GOLDEN = pathlib.Path(__file__).with_name("hash_golden.json")
M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
NULL_HASH = 0x4E554C4C4E554C4C
PRIME1, PRIME2, PRIME3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
PRIME4, PRIME5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


# --- The specification, written independently of the C++ -----------------------------------------

def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def hash_word(word, seed):
    return mix64((word + seed + GAMMA) & M64)


def rotl(value, bits):
    return ((value << bits) | (value >> (64 - bits))) & M64


def xxh64(data, seed):
    def round_(acc, lane):
        return (rotl((acc + lane * PRIME2) & M64, 31) * PRIME1) & M64

    def word(at, size):
        return int.from_bytes(data[at:at + size], "little")

    length, at = len(data), 0
    if length >= 32:
        v = [(seed + PRIME1 + PRIME2) & M64, (seed + PRIME2) & M64, seed, (seed - PRIME1) & M64]
        while at + 32 <= length:
            v = [round_(v[i], word(at + 8 * i, 8)) for i in range(4)]
            at += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for lane in v:
            h = ((h ^ round_(0, lane)) * PRIME1 + PRIME4) & M64
    else:
        h = (seed + PRIME5) & M64
    h = (h + length) & M64
    while at + 8 <= length:
        h = (rotl(h ^ round_(0, word(at, 8)), 27) * PRIME1 + PRIME4) & M64
        at += 8
    if at + 4 <= length:
        h = (rotl(h ^ (word(at, 4) * PRIME1 & M64), 23) * PRIME2 + PRIME3) & M64
        at += 4
    while at < length:
        h = (rotl(h ^ (data[at] * PRIME5 & M64), 11) * PRIME1) & M64
        at += 1
    h = ((h ^ (h >> 33)) * PRIME2) & M64
    h = ((h ^ (h >> 29)) * PRIME3) & M64
    return h ^ (h >> 32)


def value_hash(type_name, value, seed):
    if value is None:
        return NULL_HASH
    if type_name in ("int32", "int64"):
        return hash_word(value & M64, seed)
    if type_name == "bool":
        return hash_word(int(value), seed)
    if type_name == "float64":
        if math.isnan(value):
            bits = 0x7FF8000000000000
        elif value == 0.0:
            bits = 0
        else:
            bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        return hash_word(bits, seed)
    if type_name == "binary":
        return xxh64(value, seed)
    return xxh64(value.encode("utf-8"), seed)  # string, large_string, dictionary of strings


def reference_row_hashes(columns, seed):
    rows = len(columns[0]["values"])
    hashes = []
    for row in range(rows):
        h = value_hash(columns[0]["type"], decode(columns[0], row), seed)
        for column in columns[1:]:
            h = mix64((h * GAMMA + value_hash(column["type"], decode(column, row), seed)) & M64)
        hashes.append(h)
    return hashes


def partition_of(h, partitions):
    return (h * partitions) >> 64


# --- Golden table I/O ----------------------------------------------------------------------------

ARROW_TYPES = {
    "int32": pa.int32(), "int64": pa.int64(), "bool": pa.bool_(), "float64": pa.float64(),
    "string": pa.string(), "large_string": pa.large_string(), "binary": pa.binary(),
}


def decode(column, row):
    """JSON cannot hold NaN, -0.0 or bytes: floats are stored as repr strings, binary as hex."""
    value = column["values"][row]
    if value is None:
        return None
    if column["type"] == "float64":
        return float(value)
    if column["type"] == "binary":
        return bytes.fromhex(value)
    return value


def to_arrow(column):
    values = [decode(column, row) for row in range(len(column["values"]))]
    if column["type"] == "dictionary_string":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, ARROW_TYPES[column["type"]])


def golden_batch(case):
    return pa.record_batch([to_arrow(c) for c in case["columns"]], names=[f"c{i}" for i in range(len(case["columns"]))])


def golden_cases():
    return json.loads(GOLDEN.read_text())["cases"]


# --- Tests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", golden_cases(), ids=lambda case: case["name"])
def test_native_hash_matches_golden_vectors(case):
    batch = golden_batch(case)
    hashes = sn.hash_rows(batch, batch.schema.names, seed=int(case["seed"]))
    assert [int(h) for h in case["expected"]] == hashes.to_pylist()


@pytest.mark.parametrize("case", golden_cases(), ids=lambda case: case["name"])
def test_specification_in_readme_reproduces_golden_vectors(case):
    assert reference_row_hashes(case["columns"], int(case["seed"])) == [int(h) for h in case["expected"]]


def test_golden_table_covers_every_key_type_nulls_and_several_columns():
    cases = golden_cases()
    types = {column["type"] for case in cases for column in case["columns"]}
    assert types >= {"int32", "int64", "bool", "float64", "string", "large_string", "binary", "dictionary_string"}
    assert any(None in column["values"] for case in cases for column in case["columns"])
    assert any(len(case["columns"]) >= 3 for case in cases)
    assert len({case["seed"] for case in cases}) >= 2


def test_string_hash_is_xxh64_with_published_vectors():
    batch = pa.record_batch({"s": pa.array([b"", b"a", b"abc"], pa.binary())})
    assert sn.hash_rows(batch, ["s"], seed=0).to_pylist() == [
        0xEF46DB3751D8E999, 0xD24EC4F1A98C6E5B, 0x44BC2CF5AD770999]


def test_default_seed_is_the_documented_constant():
    assert sn.DEFAULT_HASH_SEED == int.from_bytes(b"sabot-h1", "big")


def test_int32_and_int64_of_equal_value_hash_equal():
    values = [0, 1, -1, 2**31 - 1, -(2**31), None]
    as_int32 = sn.hash_rows(pa.record_batch({"k": pa.array(values, pa.int32())}), ["k"])
    as_int64 = sn.hash_rows(pa.record_batch({"k": pa.array(values, pa.int64())}), ["k"])
    assert as_int32.equals(as_int64)


def test_string_representations_hash_equal():
    values = ["", "a", "Zürich", "x" * 100, None, "a"]
    plain = sn.hash_rows(pa.record_batch({"k": pa.array(values, pa.string())}), ["k"])
    for array in (pa.array(values, pa.large_string()), pa.array(values, pa.string()).dictionary_encode(),
                  pa.array([None if v is None else v.encode() for v in values], pa.binary()),
                  pa.array(values, pa.string()).dictionary_encode().cast(pa.dictionary(pa.int64(), pa.large_string()))):
        assert sn.hash_rows(pa.record_batch({"k": array}), ["k"]).equals(plain), array.type


def test_float_normalization_and_nulls():
    nans = [float("nan"), struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0], -float("nan")]
    batch = pa.record_batch({"f": pa.array([0.0, -0.0, *nans, None], pa.float64())})
    hashes = sn.hash_rows(batch, ["f"]).to_pylist()
    assert hashes[0] == hashes[1]
    assert hashes[2] == hashes[3] == hashes[4]
    assert hashes[5] == NULL_HASH


def test_null_hashes_to_one_constant_for_every_type_and_seed():
    for array in (pa.array([None], pa.int64()), pa.array([None], pa.string()), pa.array([None], pa.bool_()),
                  pa.array([None], pa.string()).dictionary_encode()):
        for seed in (0, 1, sn.DEFAULT_HASH_SEED):
            assert sn.hash_rows(pa.record_batch({"k": array}), ["k"], seed=seed).to_pylist() == [NULL_HASH]


def test_column_order_and_seed_change_the_hash():
    batch = pa.record_batch({"a": pa.array([1, 2, 3]), "b": pa.array([4, 5, 6])})
    assert sn.hash_rows(batch, ["a", "b"]) != sn.hash_rows(batch, ["b", "a"])
    assert sn.hash_rows(batch, ["a"], seed=1) != sn.hash_rows(batch, ["a"], seed=2)


def test_hash_of_unaligned_and_sliced_buffers_equals_aligned():
    rows = 1000
    values = np.arange(rows, dtype=np.int64) * 7919 - 5000
    raw = values.tobytes()
    unaligned = pa.py_buffer(b"\x00" * 3 + raw).slice(3)
    assert unaligned.address % 8 != 0
    strings = [f"s{i}" for i in range(rows)]
    aligned_strings = pa.array(strings)
    offsets = pa.py_buffer(b"\x00" + aligned_strings.buffers()[1].to_pybytes()).slice(1)
    data = pa.py_buffer(b"\x00" * 5 + aligned_strings.buffers()[2].to_pybytes()).slice(5)
    batch = pa.record_batch({
        "i": pa.Array.from_buffers(pa.int64(), rows, [None, unaligned]),
        "s": pa.Array.from_buffers(pa.string(), rows, [None, offsets, data]),
    })
    expected = pa.record_batch({"i": pa.array(values), "s": aligned_strings})
    assert sn.hash_rows(batch, ["i", "s"]).equals(sn.hash_rows(expected, ["i", "s"]))
    assert sn.hash_rows(batch.slice(13, 500), ["i", "s"]).equals(sn.hash_rows(expected, ["i", "s"]).slice(13, 500))


def test_checksum_is_order_independent_and_sensitive_to_every_value():
    rng = np.random.default_rng(2)
    batch = pa.record_batch({"k": rng.integers(0, 50, 500), "s": pa.array([f"v{i % 7}" for i in range(500)]),
                             "f": rng.random(500)})
    shuffled = batch.take(pa.array(rng.permutation(500)))
    assert sn.batch_checksum(batch) == sn.batch_checksum(shuffled)
    assert sn.batch_checksum(pa.Table.from_batches([batch.slice(0, 200), batch.slice(200)])) == sn.batch_checksum(batch)
    changed = batch.set_column(2, "f", pa.array(np.where(np.arange(500) == 17, 0.5, batch.column(2).to_numpy())))
    assert sn.batch_checksum(changed) != sn.batch_checksum(batch)
    assert sn.batch_checksum(batch.slice(0, 0)) == 0


@pytest.mark.parametrize("case", [c for c in golden_cases() if int(c["seed"]) == sn.DEFAULT_HASH_SEED], ids=lambda case: case["name"])
def test_checksum_is_the_sum_of_the_golden_row_hashes(case):
    """The checksum's definition (native/README.md) pinned by the golden vectors: the wrapping sum of
    the row hashes over all columns with the default seed."""
    assert sn.batch_checksum(golden_batch(case)) == sum(int(h) for h in case["expected"]) & M64


def mixed_batch(rows, seed):
    """Every layout the checksum handles, nulls in each, NaN/-0.0, sliced at an odd offset."""
    rng = np.random.default_rng(seed)
    nulls = rng.random(rows + 3) < 0.1
    floats = rng.random(rows + 3)
    floats[::17] = np.nan
    floats[::19] = -0.0
    columns = {
        "i64": pa.array(rng.integers(-1 << 62, 1 << 62, rows + 3), mask=nulls),
        "i8": pa.array(rng.integers(-128, 128, rows + 3).astype(np.int8)),
        "u32": pa.array(rng.integers(0, 1 << 32, rows + 3).astype(np.uint32), mask=np.roll(nulls, 1)),
        "f32": pa.array(floats.astype(np.float32)),
        "f64": pa.array(floats, mask=np.roll(nulls, 2)),
        "ts": pa.array(rng.integers(0, 1 << 50, rows + 3), pa.timestamp("us")),
        "b": pa.array(rng.random(rows + 3) < 0.5, mask=np.roll(nulls, 3)),
        "s": pa.array([f"v{i % 13}" if not n else None for i, n in enumerate(nulls)]),
        "d": pa.array([f"d{i % 5}" for i in range(rows + 3)]).dictionary_encode(),
    }
    return pa.record_batch(columns).slice(3, rows)


@pytest.mark.parametrize("rows", [0, 1, 7, 1023, 1024, 1025, 5000])
def test_checksum_equals_sum_of_hash_rows_serially_and_in_parallel(rows):
    """The fast per-column kernel (vectorized fixed-width loops) against the row hasher, for every
    layout, chunk boundary and morsel split."""
    batch = mixed_batch(rows, rows)
    expected = int(sn.hash_rows(batch, batch.schema.names).to_numpy().sum(dtype=np.uint64)) if rows else 0
    assert sn.batch_checksum(batch) == expected
    executor = sn.MorselExecutor(threads=2, morsel_bytes=4096)  # many small morsels
    try:
        assert sn.batch_checksum(batch, executor=executor) == expected
    finally:
        executor.shutdown()
    for name in batch.schema.names:  # each layout alone (the first column takes another code path)
        single = batch.select([name])
        assert sn.batch_checksum(single) == (int(sn.hash_rows(single, [name]).to_numpy().sum(dtype=np.uint64)) if rows else 0)


def test_checksum_binds_values_to_rows():
    """Swapping two rows' values in one column keeps every column's multiset of values but changes rows."""
    batch = pa.record_batch({"a": pa.array([1, 2, 3]), "b": pa.array([10.0, 20.0, 30.0])})
    swapped = pa.record_batch({"a": pa.array([1, 2, 3]), "b": pa.array([20.0, 10.0, 30.0])})
    assert sn.batch_checksum(batch) != sn.batch_checksum(swapped)


def test_hash_rows_bad_input_raises_clear_errors():
    batch = pa.record_batch({"k": pa.array([1, 2]), "l": pa.array([[1], [2]])})
    with pytest.raises(ValueError, match="'missing'"):
        sn.hash_rows(batch, ["missing"])
    with pytest.raises(TypeError, match="'l'"):
        sn.hash_rows(batch, ["l"])
    with pytest.raises(ValueError, match="at least one"):
        sn.hash_rows(batch, [])
    with pytest.raises(TypeError, match="RecordBatch"):
        sn.hash_rows({"k": [1]}, ["k"])


def test_hash_rows_and_checksum_of_a_table_of_many_chunks_equal_its_combined_batch():
    batch = mixed_batch(3000, 7)
    sizes = [0, 1, 1022, 0, 977, 500]
    chunks, offset = [], 0
    for size in sizes:
        chunks.append(batch.slice(offset, size))
        offset += size
    chunks.append(batch.slice(offset))
    table = pa.Table.from_batches(chunks, schema=batch.schema)
    assert table.column(0).num_chunks == len(sizes) + 1
    names = batch.schema.names
    assert sn.hash_rows(table, names).equals(sn.hash_rows(batch, names))
    assert sn.hash_rows(table, ["s", "d"]).equals(sn.hash_rows(batch, ["s", "d"]))
    with sn.MorselExecutor(threads=2, morsel_bytes=4096) as executor:
        assert sn.batch_checksum(table, executor=executor) == sn.batch_checksum(batch)
    assert sn.batch_checksum(table) == sn.batch_checksum(batch)
    # chunks whose dictionaries differ hash by decoded value
    other = pa.Table.from_batches([pa.record_batch({"d": pa.array(["q", "d1"]).dictionary_encode()}),
                                   pa.record_batch({"d": pa.array(["d1"]).dictionary_encode()})])
    assert sn.hash_rows(other, ["d"]).to_pylist()[1:] == [sn.hash_rows(other, ["d"]).to_pylist()[1]] * 2
    assert sn.hash_rows(pa.Table.from_batches([], schema=batch.schema), names).to_pylist() == []
