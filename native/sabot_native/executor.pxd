# Declarations for native/src/executor.h.
from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool
from libcpp.functional cimport function
from libcpp.vector cimport vector

from sabot_native.errors cimport raise_py_error


cdef extern from "executor.h" namespace "sabot" nogil:
    cdef struct MorselRange:
        int64_t offset
        int64_t length

    vector[MorselRange] split_morsels(int64_t num_rows, double bytes_per_row,
                                      int64_t target_bytes) except +raise_py_error

    cdef struct ExecutorStats:
        int threads
        uint64_t morsels_created
        uint64_t morsels_processed
        uint64_t morsels_failed
        uint64_t morsels_cancelled
        uint64_t batches
        uint64_t queue_depth
        double busy_seconds

    cdef cppclass MorselExecutor:
        MorselExecutor(int threads) except +raise_py_error
        void parallel_for(size_t count, const function[void(size_t)]& fn) except +raise_py_error
        void shutdown() noexcept
        int threads() noexcept
        ExecutorStats stats() noexcept

    int available_cores() noexcept
