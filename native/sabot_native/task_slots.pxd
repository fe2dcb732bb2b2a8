# Declarations for native/src/task_slots.h.
from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.errors cimport raise_py_error


cdef extern from "task_slots.h" namespace "sabot" nogil:
    cdef struct SlotStats:
        int64_t slot_id
        bool busy
        bool retiring
        string current_task
        uint64_t tasks_run
        uint64_t local_morsels
        uint64_t network_morsels
        double busy_seconds

    cdef cppclass TaskSlotManager:
        TaskSlotManager(int slots) except +raise_py_error
        int64_t acquire(const string& task, double timeout_seconds) except +raise_py_error
        void release(int64_t slot_id) except +raise_py_error
        void record_morsels(int64_t slot_id, uint64_t local, uint64_t network) except +raise_py_error
        void resize(int slots) except +raise_py_error
        void close() noexcept
        int total() noexcept
        int busy() noexcept
        vector[SlotStats] stats() except +raise_py_error
