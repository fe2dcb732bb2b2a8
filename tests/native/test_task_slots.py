"""TaskSlotManager: bounded concurrency with a blocking acquire (a context manager), total/busy, close."""
import threading
import time

import pytest

from sabot_native import TaskSlotManager


def wait_until(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_acquire_blocks_while_all_slots_are_busy_and_wakes_on_release():
    slots = TaskSlotManager(2)
    assert slots.total == 2 and slots.busy == 0
    first = slots.acquire("a").__enter__()
    with slots.acquire("b"):
        assert slots.busy == 2
        got = threading.Event()

        def third():
            with slots.acquire("c"):
                got.set()

        waiter = threading.Thread(target=third)
        waiter.start()
        time.sleep(0.1)
        assert not got.is_set(), "acquire must block while every slot is held"
        first.__exit__(None, None, None)
        assert got.wait(5), "releasing a slot must wake the waiter"
        waiter.join(5)
    assert slots.busy == 0


def test_concurrency_never_exceeds_the_slots():
    """Exactly 3 run at once: in the first round every task waits inside its slot until 3 are there
    (a barrier, so the peak does not depend on timing), and 6 such tasks pass as two groups of 3.
    Then 6 threads run 20 tasks each and never more than 3 at once."""
    slots = TaskSlotManager(3)
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "done": 0}
    errors = []

    def worker(tasks, barrier=None):
        for _ in range(tasks):
            with slots.acquire("work"):
                with lock:
                    state["running"] += 1
                    state["peak"] = max(state["peak"], state["running"])
                try:
                    if barrier is not None:
                        barrier.wait()
                    else:
                        time.sleep(0.001)
                except threading.BrokenBarrierError:
                    errors.append("fewer than 3 tasks ran at once")
                with lock:
                    state["running"] -= 1
                    state["done"] += 1

    def run(threads, tasks, barrier=None):
        workers = [threading.Thread(target=worker, args=(tasks, barrier)) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert not any(w.is_alive() for w in workers)

    run(6, 1, threading.Barrier(3, timeout=10))
    assert errors == [] and state["peak"] == 3 and state["done"] == 6
    run(6, 20)
    assert state["done"] == 126 and state["peak"] <= 3 and slots.busy == 0


def test_a_slot_is_released_when_its_block_raises():
    slots = TaskSlotManager(1)
    with pytest.raises(KeyError):
        with slots.acquire("fails"):
            raise KeyError("boom")
    assert slots.busy == 0
    with slots.acquire("next"):
        assert slots.busy == 1


def test_close_wakes_waiters_with_an_error_and_running_tasks_keep_their_slot():
    slots = TaskSlotManager(1)
    errors = []

    def wait():
        try:
            slots.acquire("waiter")
        except RuntimeError as error:
            errors.append(str(error))

    with slots.acquire("holder"):
        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)
        slots.close()
        waiter.join(5)
        assert errors == ["the task slot manager is closed (task 'waiter')"]
        assert slots.busy == 1
    assert slots.busy == 0
    with pytest.raises(RuntimeError, match="closed"):
        slots.acquire("late")


def test_waiting_acquire_does_not_hold_the_gil():
    slots = TaskSlotManager(1)
    with slots.acquire("holder"):
        waiter = threading.Thread(target=lambda: slots.acquire("waiter").__exit__(None, None, None))
        waiter.start()
        spins, started = 0, time.monotonic()
        while time.monotonic() - started < 0.1:
            spins += 1
        assert spins > 10_000
    waiter.join(5)
    assert wait_until(lambda: slots.busy == 0)


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_slot_counts_are_rejected(bad):
    with pytest.raises(ValueError, match="slots must be > 0"):
        TaskSlotManager(bad)

