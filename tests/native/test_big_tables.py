"""Tables with more than 2 GiB of string data (more than 32-bit offsets can address in one array): every
kernel reads them chunk by chunk and gives the whole answer; outputs that would overflow one array come
back in several chunks. References: pyarrow compute over the chunks, and the kernels' per-chunk results."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import sabot_native as sn

ROWS_PER_CHUNK = 1 << 18
VALUE_BYTES = 1024  # a chunk holds 256 MiB of strings
CHUNKS = 9          # 2.25 GiB in all
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_prefixes(numbers):
    """16 lowercase hex digits of each number, as a (rows, 16) uint8 array."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    return HEX[(numbers.astype(np.uint64)[:, None] >> shifts[None, :]) & np.uint64(15)]


def string_chunk(first_row):
    """ROWS_PER_CHUNK strings of VALUE_BYTES: the row number in hex, then filler."""
    rows = np.arange(first_row, first_row + ROWS_PER_CHUNK, dtype=np.int64)
    data = np.empty((ROWS_PER_CHUNK, VALUE_BYTES), dtype=np.uint8)
    data[:] = np.frombuffer((b"sabot-" * (VALUE_BYTES // 6 + 1))[:VALUE_BYTES], dtype=np.uint8)
    data[:, :16] = hex_prefixes(rows)
    offsets = (np.arange(ROWS_PER_CHUNK + 1, dtype=np.int64) * VALUE_BYTES).astype(np.int32)
    strings = pa.Array.from_buffers(pa.string(), ROWS_PER_CHUNK, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pa.record_batch({"s": strings, "k": pa.array(rows % 1000), "v": pa.array(rows)})


@pytest.fixture(scope="module")
def distinct():
    """2.25 GiB of distinct strings in 9 chunks."""
    return pa.Table.from_batches([string_chunk(c * ROWS_PER_CHUNK) for c in range(CHUNKS)])


@pytest.fixture(scope="module")
def repeated():
    """One 256 MiB chunk, 9 times (2.25 GiB of strings, each distinct one 9 times; shared memory)."""
    return pa.Table.from_batches([string_chunk(0)] * CHUNKS)


def test_the_tables_are_beyond_32_bit_offsets(distinct, repeated):
    for table in (distinct, repeated):
        assert sum(chunk.buffers()[2].size for chunk in table.column("s").chunks) > 2**31


def test_hash_rows_and_checksum_read_every_chunk(repeated):
    chunk = repeated.to_batches()[0]
    hashes = sn.hash_rows(repeated, ["s", "k"])
    assert len(hashes) == repeated.num_rows
    assert hashes.equals(pa.concat_arrays([sn.hash_rows(chunk, ["s", "k"])] * CHUNKS))
    with sn.MorselExecutor(threads=2) as executor:
        assert sn.batch_checksum(repeated, executor=executor) == (sn.batch_checksum(chunk) * CHUNKS) % 2**64


def test_aggregate_of_repeated_strings(repeated):
    chunk = pa.Table.from_batches([repeated.to_batches()[0]])
    aggregations = [("", "count_all", "rows"), ("v", "sum", "total"), ("k", "min", "k_min")]
    with sn.MorselExecutor(threads=2) as executor:
        result = sn.aggregate(repeated, ["s"], aggregations, executor=executor)
        by_k = sn.aggregate(repeated, ["k"], [("s", "min", "lo"), ("s", "max", "hi"), ("s", "count", "n")],
                            executor=executor)
    assert result.num_rows == ROWS_PER_CHUNK
    expected = chunk.group_by("s").aggregate([("v", "sum"), ("k", "min")])
    ours = result.sort_by("total")
    theirs = expected.sort_by("v_sum")
    assert pc.all(pc.equal(ours.column("s"), theirs.column("s"))).as_py()
    assert ours.column("total").to_pylist() == [9 * v for v in theirs.column("v_sum").to_pylist()]
    assert set(ours.column("rows").to_pylist()) == {CHUNKS}
    assert ours.column("k_min").equals(theirs.column("k_min"))
    reference = chunk.group_by("k").aggregate([("s", "min"), ("s", "max"), ("s", "count")]).sort_by("k")
    by_k = by_k.sort_by("k")
    assert by_k.column("lo").equals(reference.column("s_min")) and by_k.column("hi").equals(reference.column("s_max"))
    assert by_k.column("n").to_pylist() == [9 * n for n in reference.column("s_count").to_pylist()]


def test_aggregate_with_more_than_2_gib_of_distinct_keys_returns_several_chunks(distinct):
    with sn.MorselExecutor(threads=2) as executor:
        result = sn.aggregate(distinct, ["s"], [("", "count_all", "rows"), ("v", "max", "v")], executor=executor)
    assert result.num_rows == distinct.num_rows
    assert result.schema.field("s").type == pa.string()
    assert result.column("s").num_chunks >= 2  # 2.25 GiB of keys cannot be one string array
    assert set(result.column("rows").to_pylist()) == {1}
    # every key is the hex of its row number, and every row number appears once
    v = result.column("v").to_numpy()
    assert np.array_equal(np.sort(v), np.arange(distinct.num_rows))
    for offset, chunk in zip(np.cumsum([0] + [len(c) for c in result.column("s").chunks]), result.column("s").chunks):
        prefixes = pc.utf8_slice_codeunits(chunk, 0, 16)
        expected = pa.array(hex_prefixes(v[offset:offset + len(chunk)]).view("S16").ravel()).cast(pa.string())
        assert pc.all(pc.equal(prefixes, expected)).as_py()
        assert pc.all(pc.equal(pc.binary_length(chunk), VALUE_BYTES)).as_py()


def test_partition_of_more_than_2_gib_of_strings(distinct):
    with sn.MorselExecutor(threads=2) as executor:
        parts = sn.partition_batch(distinct, ["k"], 2, executor=executor)
    assert sum(part.num_rows for part in parts) == distinct.num_rows
    hashes = np.concatenate([sn.hash_rows(chunk, ["k"]).to_numpy() for chunk in distinct.to_batches()])
    owner = (hashes.astype(object) * 2 >> 64).astype(np.int64)
    values = distinct.column("v").to_numpy()
    for index, part in enumerate(parts):
        assert part.schema == distinct.schema
        assert part.column("s").num_chunks >= 2, "more than 2 GiB of strings per partition needs several arrays"
        rows = part.column("v").to_numpy()
        assert np.array_equal(rows, values[owner == index]), "every row, in input order, in its partition"
        prefixes = pc.utf8_slice_codeunits(part.column("s"), 0, 16).to_numpy(zero_copy_only=False).astype("S16")
        assert np.array_equal(prefixes.view(np.uint8).reshape(-1, 16), hex_prefixes(rows))


def test_a_left_join_with_more_than_2_gib_of_strings_returns_every_row(repeated):
    """One agent's task of a join stage (the engine's operator over its exchange inputs): 2.25 GiB of
    left strings, half of the keys without a match. The output cannot be one string array: it comes in
    pieces (piece_bounds in native/src/join.cc), and every left row is in one of them, matched or padded."""
    from sabot_agent.engine.operators import TaskInputs, execute
    from sabot_agent.plan import physical as P

    right = pa.table({"k": pa.array(np.arange(0, 1000, 2)), "w": pa.array(np.arange(0, 1000, 2) * 10)})
    sides = {0: repeated, 1: right}
    op = P.JoinOp(P.ExchangeRead(0, "hash"), P.ExchangeRead(1, "broadcast"), "left", ["k"], ["k"])
    inputs = TaskInputs(scan=None, exchange=lambda read: sides[read.stage], aggregate=None)
    result = execute(op, inputs)  # columns s, k, v (left), k, w (right)
    assert result.num_rows == repeated.num_rows
    assert result.column("s").num_chunks >= 2  # 2.25 GiB of strings cannot be one string array
    v = result.column("v").to_numpy()
    assert np.array_equal(np.sort(v), np.repeat(np.arange(ROWS_PER_CHUNK), CHUNKS))  # every left row, once
    k = result.column(1).to_numpy()  # the left side's k
    w = result.column("w")
    assert np.array_equal(k, v % 1000) and w.null_count == np.count_nonzero(k % 2)
    assert np.array_equal(w.to_numpy(zero_copy_only=False)[k % 2 == 0], k[k % 2 == 0] * 10)
    for offset, chunk in zip(np.cumsum([0] + [len(c) for c in result.column("s").chunks]), result.column("s").chunks):
        prefixes = pc.utf8_slice_codeunits(chunk, 0, 16).to_numpy(zero_copy_only=False).astype("S16")
        assert np.array_equal(prefixes.view(np.uint8).reshape(-1, 16), hex_prefixes(v[offset:offset + len(chunk)]))
        assert pc.all(pc.equal(pc.binary_length(chunk), VALUE_BYTES)).as_py()
