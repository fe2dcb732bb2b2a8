# Declarations for native/src/decimal.h.
from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool

from sabot_native.arrow_data cimport ColumnView, OutputArray
from sabot_native.errors cimport raise_py_error


cdef extern from "decimal.h" namespace "sabot" nogil:
    cdef enum class DecimalOp(int):
        kAdd
        kSubtract
        kMultiply

    cdef cppclass DecimalOperand:
        const ColumnView* column
        uint64_t constant_low
        int64_t constant_high
        bool constant_null
        int scale

    OutputArray decimal_arithmetic(DecimalOp op, const DecimalOperand& a, const DecimalOperand& b, int64_t length, int precision,
                                   int scale) except +raise_py_error
