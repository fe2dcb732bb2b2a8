"""MorselExecutor: morsel split, thread count, idle blocking, stats and shutdown.

Tests that run real kernels on the executor (order, errors, shutdown under load, fairness) live in
test_executor_kernels.py.
"""
import os
import time

import pyarrow as pa
import pytest

from sabot_native import DEFAULT_MORSEL_BYTES, MorselExecutor, default_thread_count


def int64_batch(rows):
    return pa.record_batch({"k": pa.array(range(rows), pa.int64()), "v": pa.array(range(rows), pa.float64())})


def test_default_thread_count_never_exceeds_available_cores():
    assert default_thread_count() == len(os.sched_getaffinity(0))
    with MorselExecutor() as ex:
        assert ex.threads == default_thread_count()
        assert ex.stats()["threads"] == ex.threads
        assert ex.morsel_bytes == DEFAULT_MORSEL_BYTES


def test_morsel_ranges_cover_every_row_once_at_the_byte_target():
    batch = int64_batch(100_000)  # 16 bytes a row -> 1.6 MB
    with MorselExecutor(threads=1, morsel_bytes=64 * 1024) as ex:
        ranges = ex.morsel_ranges(batch)
    assert ranges[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert sum(length for _, length in ranges) == batch.num_rows
    lengths = {length for _, length in ranges}
    assert max(lengths) <= 4096 and min(lengths) > 2048, "at most 64 KiB each, not a tiny tail"
    assert max(lengths) - min(lengths) <= 1, "evenly sized"


def test_morsel_ranges_of_an_empty_batch_are_empty():
    with MorselExecutor(threads=1) as ex:
        assert ex.morsel_ranges(int64_batch(0)) == []
        assert ex.morsel_ranges(int64_batch(1)) == [(0, 1)]


def test_idle_threads_block_instead_of_spinning():
    with MorselExecutor(threads=2):
        before = time.process_time()
        time.sleep(0.5)
        burned = time.process_time() - before
    assert burned < 0.05, f"idle pool used {burned:.3f} s of CPU in 0.5 s"


def test_shutdown_joins_threads_and_is_idempotent():
    ex = MorselExecutor(threads=2)
    ex.shutdown()
    ex.shutdown()
    assert ex.stats()["threads"] == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "threads must be > 0"),
    ({"threads": -1}, "threads must be > 0"),
    ({"threads": 1, "morsel_bytes": 0}, "morsel_bytes must be > 0"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MorselExecutor(**kwargs)
