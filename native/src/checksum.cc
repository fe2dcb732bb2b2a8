// batch_checksum: the wrapping sum over all rows of the row hash (hash.h) of *all* columns. It is
// computed by the row hasher itself (KeyHasher over every column, which hashes 1024 rows at a time
// with the fused integer/float loops), so it is pinned by the same golden vectors as the partition
// hash. With an executor, morsels are checksummed in parallel and their sums added (addition mod 2^64
// is associative and commutative, so the result does not depend on the split).
#include "checksum.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "hash.h"

namespace sabot {
namespace {

constexpr int64_t kStepRows = 1024;

uint64_t checksum_rows(const KeyHasher& hasher, int64_t begin, int64_t end) {
  alignas(64) uint64_t hashes[kStepRows];
  uint64_t sum = 0;
  for (int64_t step = begin; step < end; step += kStepRows) {
    const int64_t count = std::min(kStepRows, end - step);
    hasher.hash(step, step + count, hashes);
    for (int64_t i = 0; i < count; ++i) sum += hashes[i];
  }
  return sum;
}

}  // namespace

uint64_t batch_checksum(const TableView& table, uint64_t seed, MorselExecutor* executor, int64_t morsel_bytes) {
  if (table.num_columns() == 0 || table.num_rows == 0) return 0;
  std::vector<int> all_columns(static_cast<size_t>(table.num_columns()));
  for (size_t i = 0; i < all_columns.size(); ++i) all_columns[i] = static_cast<int>(i);
  const std::vector<std::unique_ptr<KeyHasher>> hashers = make_hashers(table, all_columns, seed, "input");
  const KernelRunner runner(executor, morsel_bytes);
  const std::vector<MorselRange> morsels = runner.split_batches(table.starts, estimated_row_bytes(table, all_columns));
  std::vector<uint64_t> sums(morsels.size(), 0);
  auto checksum_morsel = [&](size_t m) {
    const MorselRange& morsel = morsels[m];
    const int64_t begin = morsel.offset - table.starts[morsel.batch];
    sums[m] = checksum_rows(*hashers[morsel.batch], begin, begin + morsel.length);
  };
  runner.run(morsels.size(), checksum_morsel);
  uint64_t sum = 0;
  for (uint64_t value : sums) sum += value;
  return sum;
}

}  // namespace sabot
