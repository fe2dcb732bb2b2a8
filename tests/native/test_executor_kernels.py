"""Real kernels on the MorselExecutor: input order kept, first error re-raised, shutdown under load,
fair sharing between concurrent jobs, and the GIL released while native work runs."""
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

import sabot_native as sn


def numbered_batch(rows, keys=1000, seed=3):
    rng = np.random.default_rng(seed)
    return pa.record_batch({
        "row": pa.array(np.arange(rows, dtype=np.int64)),
        "key": pa.array(rng.integers(0, keys, rows)),
        "value": pa.array(rng.random(rows)),
    })


def run_in_thread(fn):
    outcome = {}

    def target():
        try:
            outcome["result"] = fn()
        except BaseException as error:  # the test inspects whatever the native call raised
            outcome["error"] = error
        outcome["finished_at"] = time.perf_counter()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_results_come_back_in_input_order():
    batch = numbered_batch(200_000)
    with sn.MorselExecutor(threads=2, morsel_bytes=16 * 1024) as ex:
        parts = sn.partition_batch(batch, ["key"], 16, executor=ex)
        assert ex.stats()["morsels_processed"] > 50
    inline = sn.partition_batch(batch, ["key"], 16)
    assert [p.equals(q) for p, q in zip(parts, inline)] == [True] * 16
    for part in parts:
        rows = part.column("row").to_numpy()
        assert np.all(np.diff(rows) > 0), "rows of one partition must keep their input order"
    assert sum(p.num_rows for p in parts) == batch.num_rows


def test_first_error_is_raised_in_the_caller():
    rows = 400_000
    values = np.ones(rows, dtype=np.int64)
    # Two huge decimals with one key in the middle of the batch: only the morsel holding them overflows
    # (their 128-bit sum wraps), and that morsel's error reaches the caller.
    huge = 9 * 10**37  # twice that exceeds 2^127
    words = np.zeros((rows, 2), dtype=np.uint64)
    words[:, 0] = values.astype(np.uint64)
    for row in (250_000, 250_001):
        words[row] = [huge & (2**64 - 1), huge >> 64]
    decimals = pa.Array.from_buffers(pa.decimal128(38, 0), rows, [None, pa.py_buffer(words)])
    table = pa.table({"key": np.zeros(rows, dtype=np.int64), "value": decimals})
    with sn.MorselExecutor(threads=2, morsel_bytes=64 * 1024) as ex:
        with pytest.raises(OverflowError, match="value"):
            sn.aggregate(table, ["key"], [("value", "sum", "total")], executor=ex)
        assert ex.stats()["morsels_failed"] == 1
        # The pool survives a failed job and keeps serving.
        ok = sn.aggregate(table.slice(0, 1000), ["key"], [("value", "sum", "total")], executor=ex)
        assert ok.column("total").to_pylist() == [1000]


def test_shutdown_under_load_cancels_queued_morsels_and_joins():
    batch = numbered_batch(4_000_000)
    ex = sn.MorselExecutor(threads=2, morsel_bytes=8 * 1024)
    thread, outcome = run_in_thread(lambda: sn.partition_batch(batch, ["key"], 64, executor=ex))
    deadline = time.monotonic() + 10
    while ex.stats()["morsels_processed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    ex.shutdown()
    thread.join(30)
    assert not thread.is_alive(), "the caller must not hang after shutdown"
    stats = ex.stats()
    assert stats["threads"] == 0
    assert stats["morsels_cancelled"] > 0
    assert isinstance(outcome.get("error"), RuntimeError) and "shut down" in str(outcome["error"])
    with pytest.raises(RuntimeError, match="shut down"):
        sn.partition_batch(batch.slice(0, 10), ["key"], 4, executor=ex)


def test_concurrent_jobs_share_the_threads_fairly():
    big = numbered_batch(3_000_000)
    small = numbered_batch(30_000)
    with sn.MorselExecutor(threads=1, morsel_bytes=16 * 1024) as ex:
        big_thread, big_outcome = run_in_thread(lambda: sn.partition_batch(big, ["key"], 8, executor=ex))
        while ex.stats()["morsels_processed"] < 5:
            time.sleep(0.001)
        small_thread, small_outcome = run_in_thread(lambda: sn.partition_batch(small, ["key"], 8, executor=ex))
        small_thread.join(60)
        big_thread.join(60)
    assert "error" not in big_outcome and "error" not in small_outcome
    assert small_outcome["finished_at"] < big_outcome["finished_at"], (
        "a small job submitted while a big one runs must not wait for the big one to finish")


def test_native_work_releases_the_gil():
    batch = numbered_batch(3_000_000)
    with sn.MorselExecutor(threads=1) as ex:
        thread, outcome = run_in_thread(lambda: sn.partition_batch(batch, ["key"], 64, executor=ex))
        spins = 0
        while thread.is_alive():
            spins += 1
        thread.join()
    assert "error" not in outcome
    assert spins > 10_000, f"the Python thread ran only {spins} iterations while native work ran"
