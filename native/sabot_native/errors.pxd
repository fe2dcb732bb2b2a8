# Declarations for native/src/errors.h, and the one place where C++ errors become Python exceptions.
from libcpp.string cimport string


cdef extern from "errors.h" namespace "sabot" nogil:
    cpdef enum class ErrorKind(int):
        kInvalidArgument
        kUnsupportedType
        kOverflow
        kExecutorShutdown
        kMemory
        kOther

    ErrorKind classify_current_exception(string* message) noexcept


cdef inline int raise_py_error() except -1:
    """Used as `except +raise_py_error` on every C++ call: called inside the C++ catch block."""
    cdef string message
    cdef ErrorKind kind = classify_current_exception(&message)
    text = message.decode("utf-8", "replace")
    if kind == ErrorKind.kInvalidArgument:
        raise ValueError(text)
    if kind == ErrorKind.kUnsupportedType:
        raise TypeError(text)
    if kind == ErrorKind.kOverflow:
        raise OverflowError(text)
    if kind == ErrorKind.kMemory:
        raise MemoryError(text)
    raise RuntimeError(text)
