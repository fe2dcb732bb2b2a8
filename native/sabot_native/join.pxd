# Declarations for native/src/join.h.
from libcpp cimport bool
from libcpp.string cimport string
from libcpp.vector cimport vector

from sabot_native.arrow_data cimport OutputArray, TableView
from sabot_native.errors cimport raise_py_error


cdef extern from "join.h" namespace "sabot" nogil:
    cdef enum class JoinKind(int):
        kInner
        kLeft
        kRight
        kFull
        kSemi
        kAnti

    vector[OutputArray] hash_join(const TableView& left, const vector[string]& left_keys, const TableView& right,
                                  const vector[string]& right_keys, JoinKind kind, bool build_right) except +raise_py_error
