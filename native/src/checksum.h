// Order-independent checksum of a table: the wrapping (mod 2^64) sum over all rows of the row hash
// (hash.h, native/README.md) of *all* columns, in column order, with the given seed. Duplicate rows
// count twice; an empty table sums to 0; a table sums to the sum of its chunks' checksums.
// Morsel-parallel on `executor` when one is given (the result does not depend on the split). Throws
// UnsupportedType naming a column that cannot be hashed.
#pragma once

#include <cstdint>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

uint64_t batch_checksum(const TableView& table, uint64_t seed, MorselExecutor* executor, int64_t morsel_bytes);

}  // namespace sabot
