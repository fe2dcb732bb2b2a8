// Order-independent checksum of a record batch: the wrapping (mod 2^64) sum over all rows of the row
// hash (hash.h, native/README.md) of *all* columns, in column order, with the given seed. Duplicate
// rows count twice; an empty batch sums to 0. Morsel-parallel on `executor` when one is given (the
// result does not depend on the split). Throws UnsupportedType naming a column that cannot be hashed.
#pragma once

#include <cstdint>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

uint64_t batch_checksum(const BatchView& batch, uint64_t seed, MorselExecutor* executor, int64_t morsel_bytes);

// The vectorized fixed-width fold the checksum uses, for KeyHasher: for rows [begin, begin + count) of
// an integer or float column, row_hashes[i] = value hash (first) or combine_hashes(row_hashes[i], value
// hash). Returns false, doing nothing, for any other layout.
bool fold_fixed_width_column(const ColumnView& column, int64_t begin, int64_t count, uint64_t seed, bool first,
                             uint64_t* row_hashes);

}  // namespace sabot
