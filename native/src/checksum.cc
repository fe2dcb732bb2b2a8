// batch_checksum: the wrapping sum over all rows of the row hash (hash.h) of *all* columns. The
// definition is the partition hash's, so it is pinned by the same golden vectors; only the evaluation
// order differs from KeyHasher:
//   - rows are taken in chunks of kChunkRows (the running row hashes of a chunk stay in L1);
//   - per chunk, one loop per column folds that column's value hashes into the running row hashes. For
//     fixed-width columns (ints of any width, floats, and their temporal aliases) the loop is fused and
//     branch-free (nulls and float normalization are selects), so the compiler vectorizes it; other
//     layouts (bool, binary, fixed bytes, dictionaries) compute value hashes through a one-column
//     KeyHasher first and fold them in with the same loop;
//   - the chunk loop is compiled twice, for the baseline ISA and for AVX-512 (which has a 64-bit
//     vector multiply; the hash is two multiplies per value), picked once at run time;
//   - with an executor, morsels are checksummed in parallel and their sums added (addition mod 2^64
//     is associative and commutative, so the result does not depend on the split).
#include "checksum.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>

#include "errors.h"
#include "hash.h"
#include "partition.h"

namespace sabot {
namespace {

constexpr int64_t kChunkRows = 1024;

enum class FastKind { kNone, kSigned, kUnsigned, kFloat32, kFloat64 };

struct ChecksumColumn {
  const ColumnView* column;
  FastKind kind = FastKind::kNone;
  std::unique_ptr<KeyHasher> hasher;  // kind == kNone: value hashes of this column alone
};

// The kernel, compiled for the baseline ISA and (x86-64) for AVX-512, which has a 64-bit vector
// multiply: the hash is two multiplies per value. The variant is picked once at run time.
namespace baseline {
#include "checksum_kernel.inc"
}  // namespace baseline

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw")
namespace avx512 {
#include "checksum_kernel.inc"
}  // namespace avx512
#pragma GCC pop_options

bool has_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  return supported;
}
#endif

uint64_t checksum_rows(const std::vector<ChecksumColumn>& columns, int64_t begin, int64_t end, uint64_t seed) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx512()) return avx512::checksum_rows(columns, begin, end, seed);
#endif
  return baseline::checksum_rows(columns, begin, end, seed);
}

FastKind fast_kind_of(const ColumnView& column) {
  switch (column.layout) {
    case Layout::kSignedInt: return FastKind::kSigned;
    case Layout::kUnsignedInt: return FastKind::kUnsigned;
    case Layout::kFloat32: return FastKind::kFloat32;
    case Layout::kFloat64: return FastKind::kFloat64;
    default: return FastKind::kNone;
  }
}

}  // namespace

bool fold_fixed_width_column(const ColumnView& column, int64_t begin, int64_t count, uint64_t seed, bool first,
                             uint64_t* row_hashes) {
  const FastKind kind = fast_kind_of(column);
  if (kind == FastKind::kNone) return false;
  const ChecksumColumn entry{&column, kind, nullptr};
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx512()) {
    avx512::fold_column(entry, begin, count, seed, first, row_hashes, nullptr);
    return true;
  }
#endif
  baseline::fold_column(entry, begin, count, seed, first, row_hashes, nullptr);
  return true;
}

uint64_t batch_checksum(const BatchView& batch, uint64_t seed, MorselExecutor* executor, int64_t morsel_bytes) {
  if (batch.columns.empty() || batch.num_rows == 0) return 0;
  std::vector<ChecksumColumn> columns;
  std::vector<int> all_columns;
  for (size_t index = 0; index < batch.columns.size(); ++index) {
    const ColumnView& column = batch.columns[index];
    require_supported(column, "input");
    ChecksumColumn entry{&column, fast_kind_of(column), nullptr};
    if (entry.kind == FastKind::kNone) {
      entry.hasher = std::make_unique<KeyHasher>(batch, std::vector<int>{static_cast<int>(index)}, seed);
    }
    columns.push_back(std::move(entry));
    all_columns.push_back(static_cast<int>(index));
  }
  const KernelRunner runner(executor, morsel_bytes);
  const std::vector<MorselRange> morsels = runner.split(batch.num_rows, estimated_row_bytes(batch, all_columns));
  if (executor == nullptr || morsels.size() <= 1) return checksum_rows(columns, 0, batch.num_rows, seed);
  std::vector<uint64_t> sums(morsels.size(), 0);
  runner.run(morsels.size(), [&](size_t m) {
    sums[m] = checksum_rows(columns, morsels[m].offset, morsels[m].offset + morsels[m].length, seed);
  });
  uint64_t sum = 0;
  for (uint64_t value : sums) sum += value;
  return sum;
}

}  // namespace sabot
