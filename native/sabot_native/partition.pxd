# Declarations for native/src/partition.h.
from libc.stdint cimport int64_t, uint64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport BatchView, OutputArray
from sabot_native.errors cimport raise_py_error
from sabot_native.executor cimport MorselExecutor


cdef extern from "partition.h" namespace "sabot" nogil:
    vector[OutputArray] partition_batch(const BatchView& batch, const vector[string]& keys,
                                        int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                        int64_t morsel_bytes) except +raise_py_error
    OutputArray hash_rows(const BatchView& batch, const vector[string]& keys,
                          uint64_t seed) except +raise_py_error


cdef extern from "checksum.h" namespace "sabot" nogil:
    uint64_t batch_checksum(const BatchView& batch, uint64_t seed, MorselExecutor* executor,
                            int64_t morsel_bytes) except +raise_py_error
