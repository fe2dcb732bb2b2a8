# Declarations for native/src/task_slots.h.
from libcpp.string cimport string

from sabot_native.errors cimport raise_py_error


cdef extern from "task_slots.h" namespace "sabot" nogil:
    cdef cppclass TaskSlotManager:
        TaskSlotManager(int slots) except +raise_py_error
        int acquire(const string& task) except +raise_py_error
        void release(int slot_id) except +raise_py_error
        void close() noexcept
        int total() noexcept
        int busy() noexcept
