"""TaskSlotManager: bounded concurrency, blocking acquire, elastic resize that never interrupts a task."""
import threading
import time

import pytest

from sabot_native import MorselExecutor, TaskSlotManager


@pytest.fixture
def executor():
    with MorselExecutor(threads=2) as ex:
        yield ex


def test_acquire_blocks_when_all_slots_busy(executor):
    slots = TaskSlotManager(2, executor)
    first = slots.acquire("a")
    second = slots.acquire("b")
    assert slots.busy == 2
    with pytest.raises(TimeoutError, match="task 'c'"):
        slots.acquire("c", timeout=0.05)
    first.release()
    third = slots.acquire("c", timeout=1)
    assert {s["current_task"] for s in slots.stats()} == {"b", "c"}
    second.release()
    third.release()
    assert slots.busy == 0


def test_waiting_acquire_wakes_when_a_slot_is_released(executor):
    slots = TaskSlotManager(1, executor)
    held = slots.acquire("holder")
    got = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire("waiter", timeout=5)))
    waiter.start()
    time.sleep(0.05)
    assert got == []
    held.release()
    waiter.join(5)
    assert len(got) == 1 and slots.stats()[0]["current_task"] == "waiter"
    got[0].release()


def test_stats_count_tasks_morsels_and_busy_time(executor):
    slots = TaskSlotManager(1, executor)
    with slots.acquire("map") as slot:
        slot.record_morsels(local=3, network=2)
        time.sleep(0.02)
    with slots.acquire("reduce") as slot:
        slot.record_morsels(network=5)
    (stats,) = slots.stats()
    assert stats["tasks_run"] == 2
    assert stats["local_morsels"] == 3 and stats["network_morsels"] == 7
    assert stats["busy_seconds"] >= 0.02
    assert stats["busy"] is False and stats["current_task"] == ""


def test_shrink_retires_busy_slots_only_after_their_task_ends(executor):
    slots = TaskSlotManager(3, executor)
    held = [slots.acquire(f"t{i}") for i in range(3)]
    slots.resize(1)
    assert slots.total == 1
    assert slots.busy == 3, "a shrink must not interrupt running tasks"
    assert sum(s["retiring"] for s in slots.stats()) == 2
    held[2].release()
    held[1].release()
    assert len(slots.stats()) == 1
    with pytest.raises(TimeoutError):
        slots.acquire("new", timeout=0.05)
    held[0].release()
    with slots.acquire("new", timeout=1):
        assert slots.busy == 1


def test_shrink_removes_free_slots_first(executor):
    slots = TaskSlotManager(3, executor)
    busy = slots.acquire("kept")
    slots.resize(1)
    stats = slots.stats()
    assert len(stats) == 1 and stats[0]["current_task"] == "kept" and not stats[0]["retiring"]
    busy.release()


def test_grow_brings_back_retiring_slots_before_adding_new_ones(executor):
    slots = TaskSlotManager(2, executor)
    held = [slots.acquire("a"), slots.acquire("b")]
    slots.resize(1)
    slots.resize(3)
    stats = slots.stats()
    assert len(stats) == 3 and not any(s["retiring"] for s in stats)
    for slot in held:
        slot.release()


def test_resize_under_load_bounds_concurrency(executor):
    slots = TaskSlotManager(4, executor)
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "done": 0}
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                slot = slots.acquire("work", timeout=0.2)
            except TimeoutError:
                continue
            with lock:
                state["running"] += 1
                state["peak"] = max(state["peak"], state["running"])
            time.sleep(0.002)
            with lock:
                state["running"] -= 1
                state["done"] += 1
            slot.release()

    workers = [threading.Thread(target=worker) for _ in range(6)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        assert state["peak"] == 4
        slots.resize(1)
        deadline = time.monotonic() + 5
        while len(slots.stats()) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(slots.stats()) == 1, "retiring slots must drain"
        with lock:
            state["peak"] = state["running"]
        time.sleep(0.3)
        assert state["peak"] <= 1
        slots.resize(3)
        with lock:
            state["peak"] = 0
        time.sleep(0.3)
        assert 1 < state["peak"] <= 3
    finally:
        stop.set()
        for w in workers:
            w.join(5)
    assert not any(w.is_alive() for w in workers)
    assert sum(s["tasks_run"] for s in slots.stats()) <= state["done"]
    assert slots.busy == 0


def test_close_wakes_waiters_with_an_error(executor):
    slots = TaskSlotManager(1, executor)
    held = slots.acquire("holder")
    errors = []

    def wait():
        try:
            slots.acquire("waiter")
        except RuntimeError as error:
            errors.append(str(error))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    slots.close()
    waiter.join(5)
    assert errors == ["the task slot manager is closed"]
    held.release()


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_slot_counts_are_rejected(executor, bad):
    with pytest.raises(ValueError, match="slots must be > 0"):
        TaskSlotManager(bad, executor)
    slots = TaskSlotManager(1, executor)
    with pytest.raises(ValueError, match="slots must be > 0"):
        slots.resize(bad)


def test_releasing_twice_is_harmless_and_negative_timeout_rejected(executor):
    slots = TaskSlotManager(1, executor)
    slot = slots.acquire("a")
    slot.release()
    slot.release()
    assert slots.busy == 0
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        slots.acquire("b", timeout=-1)
