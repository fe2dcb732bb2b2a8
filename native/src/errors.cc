#include "errors.h"

#include <new>

namespace sabot {

ErrorKind classify_current_exception(std::string* message) noexcept {
  try {
    throw;
  } catch (const InvalidArgument& e) {
    *message = e.what();
    return ErrorKind::kInvalidArgument;
  } catch (const UnsupportedType& e) {
    *message = e.what();
    return ErrorKind::kUnsupportedType;
  } catch (const Overflow& e) {
    *message = e.what();
    return ErrorKind::kOverflow;
  } catch (const ExecutorShutdown& e) {
    *message = e.what();
    return ErrorKind::kExecutorShutdown;
  } catch (const std::bad_alloc&) {
    *message = "out of memory";
    return ErrorKind::kMemory;
  } catch (const std::exception& e) {
    *message = e.what();
    return ErrorKind::kOther;
  } catch (...) {
    *message = "unknown native error";
    return ErrorKind::kOther;
  }
}

}  // namespace sabot
