# Declarations for native/src/aggregate.h.
from libc.stdint cimport int64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport BatchView, OutputArray
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
        string format

    cdef cppclass AggregateResult:
        OutputArray batch
        vector[ResultColumn] columns

    AggregateResult aggregate(const BatchView& input, const vector[string]& keys,
                              const vector[AggregateSpec]& aggregations, AggregateStage stage,
                              MorselExecutor* executor, int64_t morsel_bytes) except +raise_py_error
