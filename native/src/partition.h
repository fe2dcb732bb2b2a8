// Hash partitioning of a table into P batches by scatter, morsel-parallel:
//   1. per morsel: hash the key columns, compute each row's partition, count rows per partition;
//   2. prefix sums over (morsel, partition) give every morsel a disjoint output region per partition;
//   3. per morsel and column: copy each row to the next free slot of its partition's region.
// Because morsels are numbered in row order and regions are laid out in morsel order, rows keep their
// input order within each partition. Scatter writes each value once, sequentially per partition; the
// alternative (stable sort by partition, then gather by the sorted index) measured 3x slower on the
// 2-core build machine (10 M rows, 64 partitions).
//
// Input of several batches (a table's chunks) is read where it lies: morsels never span two batches,
// rows are numbered across batches, and each output column is filled from the same column of every
// batch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

// Where every row goes: its partition, and for each (morsel, partition) the first output row.
struct PartitionLayout {
  uint32_t num_partitions = 0;
  std::vector<MorselRange> morsels;     // rows numbered across batches; each morsel within one batch
  std::vector<int64_t> batch_starts;    // first row of each batch, then the total
  std::vector<uint32_t> partition_of_row;
  std::vector<int64_t> morsel_starts;   // [morsel * num_partitions + partition]
  std::vector<int64_t> partition_rows;  // [partition]
};

// Computes the layout from row hashes produced by `hash_morsel(morsel, out)` (called once per morsel,
// concurrently; out has morsel.length entries). If `keep_hashes` is not null, every row's hash is also
// stored there (indexed by row number across batches).
PartitionLayout plan_partitions(uint32_t num_partitions, std::vector<MorselRange> morsels,
                                std::vector<int64_t> batch_starts,
                                const std::function<void(const MorselRange&, uint64_t*)>& hash_morsel,
                                uint64_t* keep_hashes, const KernelRunner& runner);

// The columns of one scatter: sources[b] is the column in batch b of the layout.
using ScatterSources = std::vector<const ColumnView*>;

struct ScatteredColumn {
  std::vector<OutputArray> parts;  // one per partition
  Layout layout;                   // of the parts: kLargeBinary where 32-bit offsets were widened
};

// Scatters columns into num_partitions arrays each, following `layout`. A 32-bit-offset string or
// binary column whose partition would exceed 2 GiB gets 64-bit offsets if `widen_offsets` (for
// intermediates only ever read by kernels) and throws Overflow otherwise.
std::vector<ScatteredColumn> scatter_columns(const std::vector<ScatterSources>& columns, const PartitionLayout& layout,
                                             const KernelRunner& runner, bool widen_offsets);

// Partitions `table` by the hash of `keys` into exactly num_partitions struct arrays per run of
// batches: result[run][partition] (record batches with the input's schema; empty partitions have zero
// rows). Consecutive batches form one run as long as each 32-bit-offset string/binary column of the
// run holds at most 2 GiB, so no partition of a run can overflow its offsets; a table under 2 GiB of
// such data is one run. Throws InvalidArgument for an empty key list, an unknown key or
// num_partitions <= 0, and UnsupportedType for unhashable keys or columns that cannot be carried.
std::vector<std::vector<OutputArray>> partition_table(const TableView& table, const std::vector<std::string>& keys,
                                                      int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                                      int64_t morsel_bytes);

}  // namespace sabot
