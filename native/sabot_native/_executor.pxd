# The Python-visible executor, cimported by other native modules to run their kernels on it.
from libc.stdint cimport int64_t

from sabot_native cimport executor


cdef class MorselExecutor:
    cdef executor.MorselExecutor* impl
    cdef readonly int64_t morsel_bytes
