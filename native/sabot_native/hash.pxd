# Declarations for native/src/hash.h.
from libc.stdint cimport uint64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport OutputArray, TableView
from sabot_native.errors cimport raise_py_error


cdef extern from "hash.h" namespace "sabot" nogil:
    const uint64_t kDefaultHashSeed
    const uint64_t kAggregateHashSeed

    OutputArray hash_rows(const TableView& table, const vector[string]& keys, uint64_t seed) except +raise_py_error
