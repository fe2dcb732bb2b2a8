# Declarations for native/src/checksum.h.
from libc.stdint cimport int64_t, uint64_t

from sabot_native.arrow_data cimport TableView
from sabot_native.errors cimport raise_py_error
from sabot_native.executor cimport MorselExecutor


cdef extern from "checksum.h" namespace "sabot" nogil:
    uint64_t batch_checksum(const TableView& table, uint64_t seed, MorselExecutor* executor,
                            int64_t morsel_bytes) except +raise_py_error
