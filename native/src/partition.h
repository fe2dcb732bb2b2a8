// Hash partitioning of a record batch into P batches by scatter, morsel-parallel:
//   1. per morsel: hash the key columns, compute each row's partition, count rows per partition;
//   2. prefix sums over (morsel, partition) give every morsel a disjoint output region per partition;
//   3. per morsel and column: copy each row to the next free slot of its partition's region.
// Because morsels are numbered in row order and regions are laid out in morsel order, rows keep their
// input order within each partition. Scatter writes each value once, sequentially per partition; the
// alternative (stable sort by partition, then gather) is 3x slower (see shared/design/baselines.md).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

// Runs the morsels of one kernel call: on a MorselExecutor when one is given (which raises
// ExecutorShutdown once it was shut down), otherwise inline on the calling thread, one after another.
class KernelRunner {
 public:
  KernelRunner(MorselExecutor* executor, int64_t morsel_bytes);

  std::vector<MorselRange> split(int64_t num_rows, double bytes_per_row) const;
  void run(size_t count, const std::function<void(size_t)>& task) const;
  int threads() const { return executor_ == nullptr ? 1 : executor_->threads(); }

 private:
  MorselExecutor* executor_;
  int64_t morsel_bytes_;
};

// Where every row goes: its partition, and for each (morsel, partition) the first output row.
struct PartitionLayout {
  uint32_t num_partitions = 0;
  std::vector<MorselRange> morsels;
  std::vector<uint32_t> partition_of_row;
  std::vector<int64_t> morsel_starts;   // [morsel * num_partitions + partition]
  std::vector<int64_t> partition_rows;  // [partition]
};

// Computes the layout from row hashes produced by `hash_rows(begin, end, out)` (called once per
// morsel, concurrently). If `keep_hashes` is not null, every row's hash is also stored there.
PartitionLayout plan_partitions(int64_t num_rows, uint32_t num_partitions, std::vector<MorselRange> morsels,
                                const std::function<void(int64_t, int64_t, uint64_t*)>& hash_rows,
                                uint64_t* keep_hashes, const KernelRunner& runner);

// Scatters columns into num_partitions arrays each, following `layout`: result[column][partition].
std::vector<std::vector<OutputArray>> scatter_columns(const std::vector<const ColumnView*>& columns,
                                                      const PartitionLayout& layout, const KernelRunner& runner);

// Partitions `batch` by the hash of `keys` into exactly num_partitions struct arrays (record
// batches with the input's schema; empty partitions have zero rows). Throws InvalidArgument for an
// empty key list, an unknown key or num_partitions <= 0, and UnsupportedType for unhashable keys.
std::vector<OutputArray> partition_batch(const BatchView& batch, const std::vector<std::string>& keys,
                                         int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                         int64_t morsel_bytes);

// The row hashes of `keys` as a uint64 array.
OutputArray hash_rows(const BatchView& batch, const std::vector<std::string>& keys, uint64_t seed);

// Resolves key names to column indices, checking that there is at least one and that each exists.
std::vector<int> resolve_keys(const BatchView& batch, const std::vector<std::string>& keys);

// Average bytes per row of the given columns, for sizing morsels.
double estimated_row_bytes(const BatchView& batch, const std::vector<int>& columns);

}  // namespace sabot
