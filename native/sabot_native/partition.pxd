# Declarations for native/src/partition.h.
from libc.stdint cimport int64_t, uint64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport OutputArray, TableView
from sabot_native.errors cimport raise_py_error
from sabot_native.executor cimport MorselExecutor


cdef extern from "partition.h" namespace "sabot" nogil:
    vector[vector[OutputArray]] partition_table(const TableView& table, const vector[string]& keys,
                                                int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                                int64_t morsel_bytes) except +raise_py_error
