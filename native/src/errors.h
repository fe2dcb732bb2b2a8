// Error kinds raised by native code. The Cython layer maps each kind to one Python exception type
// in exactly one place (raise_py_error in native/sabot_native/errors.pxd), so C++ stays free of Python.
#pragma once

#include <stdexcept>
#include <string>

namespace sabot {

// A caller passed something that can never work (unknown column, non-positive count).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A column has a type the kernel does not handle.
class UnsupportedType : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// An integer result does not fit its type.
class Overflow : public std::overflow_error {
 public:
  using std::overflow_error::overflow_error;
};

// Work was submitted to, or still queued on, an executor that is shutting down.
class ExecutorShutdown : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ErrorKind : int {
  kInvalidArgument = 1,
  kUnsupportedType = 2,
  kOverflow = 3,
  kExecutorShutdown = 4,
  kMemory = 5,
  kOther = 6,
};

// Classifies the exception currently being handled. Must be called inside a catch block.
ErrorKind classify_current_exception(std::string* message) noexcept;

}  // namespace sabot
