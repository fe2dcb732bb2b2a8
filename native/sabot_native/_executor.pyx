# cython: language_level=3
"""Thin wrappers over the C++ MorselExecutor and TaskSlotManager (native/src)."""
from libc.stdint cimport int64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native cimport executor, task_slots

# Chosen from bench/morsel_scaling.py: large enough that per-morsel dispatch stays far below 1% of
# the kernel's time, small enough that a 10 M-row batch still splits into dozens of morsels.
DEFAULT_MORSEL_BYTES = 1 << 20


def default_thread_count():
    """The cores this process may run on: the default never runs more threads than that."""
    return executor.available_cores()


cdef class MorselExecutor:
    """A fixed pool of native threads that runs morsels of record batches without the GIL."""

    def __cinit__(self, threads=None, int64_t morsel_bytes=DEFAULT_MORSEL_BYTES):
        cdef int count = default_thread_count() if threads is None else threads
        if morsel_bytes <= 0:
            raise ValueError(f"morsel_bytes must be > 0, got {morsel_bytes}")
        self.impl = new executor.MorselExecutor(count)
        self.morsel_bytes = morsel_bytes

    def __dealloc__(self):
        if self.impl is not NULL:
            with nogil:
                self.impl.shutdown()
            del self.impl
            self.impl = NULL

    @property
    def threads(self):
        return self.impl.threads()

    def morsel_ranges(self, batch):
        """Zero-copy split of a record batch into (offset, length) ranges of about morsel_bytes."""
        cdef int64_t rows = batch.num_rows
        cdef double bytes_per_row = batch.nbytes / rows if rows else 0.0
        cdef vector[executor.MorselRange] ranges = executor.split_morsels(rows, bytes_per_row, self.morsel_bytes)
        return [(r.offset, r.length) for r in ranges]

    def stats(self):
        cdef executor.ExecutorStats s = self.impl.stats()
        return {
            "threads": s.threads,
            "morsels_created": s.morsels_created,
            "morsels_processed": s.morsels_processed,
            "morsels_failed": s.morsels_failed,
            "morsels_cancelled": s.morsels_cancelled,
            "batches": s.batches,
            "queue_depth": s.queue_depth,
            "busy_seconds": s.busy_seconds,
        }

    def shutdown(self):
        """Cancels queued morsels, waits for running ones and joins the threads."""
        with nogil:
            self.impl.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.shutdown()


cdef class TaskSlotManager:
    """N task slots bounding the concurrent tasks of an agent; the tasks run their kernels on the
    agent's one MorselExecutor, which shares its threads fairly between them (the manager only counts slots)."""
    cdef task_slots.TaskSlotManager* impl

    def __cinit__(self, int slots):
        self.impl = new task_slots.TaskSlotManager(slots)

    def __dealloc__(self):
        del self.impl

    def acquire(self, task):
        """Waits (without the GIL) for a free slot; a context manager that releases it on exit.
        Raises RuntimeError once the manager is closed."""
        cdef string name = task.encode("utf-8")
        cdef int slot_id
        with nogil:
            slot_id = self.impl.acquire(name)
        return Slot(self, slot_id)

    def close(self):
        """Wakes every waiting acquire with RuntimeError; tasks holding slots keep them until they exit."""
        self.impl.close()

    @property
    def total(self):
        return self.impl.total()

    @property
    def busy(self):
        return self.impl.busy()


cdef class Slot:
    """One acquired task slot: released when its `with` block exits."""
    cdef TaskSlotManager manager
    cdef int slot_id
    cdef bint held

    def __cinit__(self, TaskSlotManager manager, int slot_id):
        self.manager = manager
        self.slot_id = slot_id
        self.held = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.held:
            self.held = False
            self.manager.impl.release(self.slot_id)
