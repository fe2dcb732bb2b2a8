# Declarations for native/src/aggregate.h.
from libc.stdint cimport int64_t, uint32_t
from libcpp cimport bool
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport OutputArray, TableView
from sabot_native.errors cimport raise_py_error
from sabot_native.executor cimport MorselExecutor


cdef extern from "aggregate.h" namespace "sabot" nogil:
    cpdef enum class AggregateStage(int):
        kPartial
        kFinal
        kComplete

    cdef struct AggregateSpec:
        string column
        string function
        string output_name

    cdef struct ResultColumn:
        string name
        int type_of_input
        bool dictionary_value
        string format

    cdef cppclass AggregateStats:
        string strategy
        uint32_t radix_partitions
        uint32_t radix_partitions_used
        int64_t groups

    cdef cppclass AggregateResult:
        vector[OutputArray] batches
        vector[ResultColumn] columns
        AggregateStats stats

    AggregateResult aggregate(const TableView& input, const vector[string]& keys,
                              const vector[AggregateSpec]& aggregations, AggregateStage stage,
                              MorselExecutor* executor, int64_t morsel_bytes) except +raise_py_error
