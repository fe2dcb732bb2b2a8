#include "partition.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "errors.h"
#include "hash.h"

namespace sabot {
namespace {

// Copies fixed-width values of one morsel to their partitions. A compile-time width turns the memcpy
// into a single load and store. `values` points at the value of the morsel batch's row 0, which is row
// `base` in the numbering across batches the layout uses.
template <int kWidth>
void scatter_fixed_morsel(const uint8_t* values, int64_t width, int64_t base, const MorselRange& morsel,
                          const uint32_t* partition_of_row, uint8_t* const* outputs, int64_t* cursors) {
  const int64_t step = kWidth > 0 ? kWidth : width;
  for (int64_t row = morsel.offset; row < morsel.offset + morsel.length; ++row) {
    const uint32_t partition = partition_of_row[row];
    std::memcpy(outputs[partition] + cursors[partition] * step, values + (row - base) * step,
                static_cast<size_t>(step));
    ++cursors[partition];
  }
}

std::vector<int64_t> morsel_cursors(const PartitionLayout& layout, size_t morsel) {
  const size_t partitions = layout.num_partitions;
  return std::vector<int64_t>(layout.morsel_starts.begin() + static_cast<ptrdiff_t>(morsel * partitions),
                              layout.morsel_starts.begin() + static_cast<ptrdiff_t>((morsel + 1) * partitions));
}

std::vector<uint8_t*> pointers_of(const std::vector<std::shared_ptr<uint8_t>>& buffers) {
  std::vector<uint8_t*> pointers;
  for (const auto& buffer : buffers) pointers.push_back(buffer.get());
  return pointers;
}

// One bit per row (validity, or the values of a bool column). Neighbouring morsels' regions can share
// a byte of a bitmap, so bits are scattered as whole bytes (no two threads write one byte) and packed
// per partition afterwards.
struct BitScatter {
  std::vector<std::shared_ptr<uint8_t>> bytes;  // per partition, one byte per row
  std::vector<std::shared_ptr<const uint8_t>> bits;
  std::vector<int64_t> zeros;

  void allocate(const PartitionLayout& layout) {
    for (int64_t rows : layout.partition_rows) bytes.push_back(allocate_buffer(rows));
    bits.resize(bytes.size());
    zeros.assign(bytes.size(), 0);
  }

  // bit_of(local row of the morsel's batch)
  template <typename BitOf>
  void scatter(const PartitionLayout& layout, size_t morsel, BitOf bit_of) {
    std::vector<int64_t> cursors = morsel_cursors(layout, morsel);
    std::vector<uint8_t*> outputs = pointers_of(bytes);
    const MorselRange& range = layout.morsels[morsel];
    const int64_t base = layout.batch_starts[range.batch];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      const uint32_t partition = layout.partition_of_row[row];
      outputs[partition][cursors[partition]++] = bit_of(row - base);
    }
  }

  void pack(const PartitionLayout& layout, uint32_t partition) {
    const int64_t rows = layout.partition_rows[partition];
    auto packed = allocate_buffer((rows + 7) / 8);
    const uint8_t* source = bytes[partition].get();
    int64_t ones = 0;
    for (int64_t byte = 0; byte * 8 < rows; ++byte) {
      uint8_t packed_byte = 0;
      const int64_t limit = std::min<int64_t>(8, rows - byte * 8);
      for (int64_t bit = 0; bit < limit; ++bit) packed_byte |= static_cast<uint8_t>(source[byte * 8 + bit] << bit);
      packed.get()[byte] = packed_byte;
      ones += __builtin_popcount(packed_byte);
    }
    bits[partition] = std::move(packed);
    zeros[partition] = rows - ones;
    bytes[partition].reset();
  }
};

// Scatter state of one column across all partitions. The phases are driven for all columns at once
// (see scatter_columns), so a morsel's partition ids are read from cache for every column and each
// phase costs one dispatch on the executor.
class ColumnScatter {
 public:
  ColumnScatter(const ScatterSources& sources, const PartitionLayout& layout, bool widen_offsets)
      : sources_(sources), column_(*sources.front()), layout_(layout), widen_offsets_(widen_offsets) {
    require_supported(column_, "input");
    out_large_ = column_.layout == Layout::kLargeBinary;
    for (const ColumnView* source : sources_) nulls_ = nulls_ || source->has_nulls;
    if (column_.is_var_binary()) byte_starts_.assign(layout.morsels.size() * layout.num_partitions, 0);
  }

  bool needs_byte_counts() const { return column_.is_var_binary(); }
  bool has_bits() const { return nulls_ || column_.layout == Layout::kBool; }
  Layout output_layout() const { return column_.is_var_binary() && out_large_ ? Layout::kLargeBinary : column_.layout; }

  // Var-binary: bytes each morsel sends to each partition.
  void count_bytes(size_t morsel) {
    int64_t* counts = byte_starts_.data() + morsel * layout_.num_partitions;
    const MorselRange& range = layout_.morsels[morsel];
    const ColumnView& column = *sources_[range.batch];
    const int64_t base = layout_.batch_starts[range.batch];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      counts[layout_.partition_of_row[row]] += column.value_end(row - base) - column.value_begin(row - base);
    }
  }

  void allocate() {
    const uint32_t partitions = layout_.num_partitions;
    if (nulls_) validity_.allocate(layout_);
    if (column_.layout == Layout::kBool) {
      bool_values_.allocate(layout_);
    } else if (column_.is_var_binary()) {
      allocate_var_binary();
    } else {
      for (uint32_t p = 0; p < partitions; ++p) {
        values_.push_back(allocate_buffer(layout_.partition_rows[p] * column_.byte_width));
      }
    }
  }

  void scatter(size_t morsel) {
    const ColumnView& column = *sources_[layout_.morsels[morsel].batch];
    if (nulls_) {
      validity_.scatter(layout_, morsel, [&](int64_t row) {
        return static_cast<uint8_t>(column.is_valid(row));
      });
    }
    if (column.layout == Layout::kBool) {
      bool_values_.scatter(layout_, morsel, [&](int64_t row) {
        return static_cast<uint8_t>(bit_is_set(column.values, column.offset + row));
      });
    } else if (column.is_var_binary()) {
      out_large_ ? scatter_var_binary<true>(morsel) : scatter_var_binary<false>(morsel);
    } else {
      scatter_fixed(morsel);
    }
  }

  void pack(uint32_t partition) {
    if (nulls_) validity_.pack(layout_, partition);
    if (column_.layout == Layout::kBool) bool_values_.pack(layout_, partition);
  }

  std::vector<OutputArray> finish() {
    const uint32_t partitions = layout_.num_partitions;
    std::shared_ptr<const OutputArray> dictionary;
    if (column_.layout == Layout::kDictionary) dictionary = share_dictionary(column_);
    std::vector<OutputArray> outputs(partitions);
    for (uint32_t p = 0; p < partitions; ++p) {
      OutputArray& output = outputs[p];
      output.length = layout_.partition_rows[p];
      const bool nulls = nulls_ && validity_.zeros[p] > 0;
      output.null_count = nulls ? validity_.zeros[p] : 0;
      output.buffers.push_back(nulls ? std::move(validity_.bits[p]) : nullptr);
      if (column_.layout == Layout::kBool) {
        output.buffers.push_back(std::move(bool_values_.bits[p]));
      } else if (column_.is_var_binary()) {
        output.buffers.push_back(std::move(offsets_[p]));
        output.buffers.push_back(std::move(values_[p]));
      } else {
        output.buffers.push_back(std::move(values_[p]));
      }
      output.dictionary = dictionary;
    }
    return outputs;
  }

 private:
  void allocate_var_binary() {
    const uint32_t partitions = layout_.num_partitions;
    const size_t morsels = layout_.morsels.size();
    std::vector<int64_t> totals(partitions, 0);
    for (uint32_t p = 0; p < partitions; ++p) {
      int64_t running = 0;
      for (size_t m = 0; m < morsels; ++m) {
        const int64_t count = byte_starts_[m * partitions + p];
        byte_starts_[m * partitions + p] = running;
        running += count;
      }
      totals[p] = running;
      if (!out_large_ && running > kMaxBinaryBytes) {
        if (!widen_offsets_) {
          throw Overflow("partition " + std::to_string(p) + " of column '" + column_.name +
                         "' needs more than 2 GiB of data; use large_string/large_binary");
        }
        out_large_ = true;  // every partition of the column then gets 64-bit offsets
      }
    }
    for (uint32_t p = 0; p < partitions; ++p) {
      const int64_t rows = layout_.partition_rows[p];
      offsets_.push_back(allocate_buffer((rows + 1) * (out_large_ ? 8 : 4)));
      values_.push_back(allocate_buffer(totals[p]));
      if (out_large_) {
        reinterpret_cast<int64_t*>(offsets_[p].get())[rows] = totals[p];
      } else {
        reinterpret_cast<int32_t*>(offsets_[p].get())[rows] = static_cast<int32_t>(totals[p]);
      }
    }
  }

  template <bool kLargeOut>
  void scatter_var_binary(size_t morsel) {
    const uint32_t partitions = layout_.num_partitions;
    std::vector<int64_t> row_cursors = morsel_cursors(layout_, morsel);
    std::vector<int64_t> byte_cursors(byte_starts_.begin() + static_cast<ptrdiff_t>(morsel * partitions),
                                      byte_starts_.begin() + static_cast<ptrdiff_t>((morsel + 1) * partitions));
    std::vector<uint8_t*> offsets = pointers_of(offsets_);
    std::vector<uint8_t*> data = pointers_of(values_);
    const MorselRange& range = layout_.morsels[morsel];
    const ColumnView& column = *sources_[range.batch];
    const int64_t base = layout_.batch_starts[range.batch];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      const uint32_t p = layout_.partition_of_row[row];
      const int64_t begin = column.value_begin(row - base);
      const int64_t size = column.value_end(row - base) - begin;
      const int64_t position = byte_cursors[p];
      if constexpr (kLargeOut) {
        reinterpret_cast<int64_t*>(offsets[p])[row_cursors[p]] = position;
      } else {
        reinterpret_cast<int32_t*>(offsets[p])[row_cursors[p]] = static_cast<int32_t>(position);
      }
      std::memcpy(data[p] + position, column.values + begin, static_cast<size_t>(size));
      byte_cursors[p] = position + size;
      ++row_cursors[p];
    }
  }

  void scatter_fixed(size_t morsel) {
    const int64_t width = column_.byte_width;
    const MorselRange& range = layout_.morsels[morsel];
    const ColumnView& column = *sources_[range.batch];
    const uint8_t* values = column.values + column.offset * width;
    const int64_t base = layout_.batch_starts[range.batch];
    std::vector<int64_t> cursors = morsel_cursors(layout_, morsel);
    std::vector<uint8_t*> outputs = pointers_of(values_);
    const uint32_t* rows = layout_.partition_of_row.data();
    switch (width) {
      case 1: return scatter_fixed_morsel<1>(values, width, base, range, rows, outputs.data(), cursors.data());
      case 2: return scatter_fixed_morsel<2>(values, width, base, range, rows, outputs.data(), cursors.data());
      case 4: return scatter_fixed_morsel<4>(values, width, base, range, rows, outputs.data(), cursors.data());
      case 8: return scatter_fixed_morsel<8>(values, width, base, range, rows, outputs.data(), cursors.data());
      case 16: return scatter_fixed_morsel<16>(values, width, base, range, rows, outputs.data(), cursors.data());
      default: return scatter_fixed_morsel<0>(values, width, base, range, rows, outputs.data(), cursors.data());
    }
  }

  const ScatterSources& sources_;
  const ColumnView& column_;  // batch 0's: the type every batch shares
  const PartitionLayout& layout_;
  const bool widen_offsets_;
  bool out_large_ = false;
  bool nulls_ = false;
  BitScatter validity_;
  BitScatter bool_values_;
  std::vector<std::shared_ptr<uint8_t>> values_;   // fixed-width values or var-binary bytes
  std::vector<std::shared_ptr<uint8_t>> offsets_;  // var-binary offsets
  std::vector<int64_t> byte_starts_;               // var-binary: [morsel * partitions + partition]
};

// Bytes of 32-bit-offset string/binary data in a batch: what limits how many batches one partitioning
// run may combine.
std::vector<int64_t> small_offset_bytes(const BatchView& batch) {
  std::vector<int64_t> bytes;
  for (const ColumnView& column : batch.columns) {
    // (dictionary columns copy only their indices; the dictionary is shared)
    const bool small = column.layout == Layout::kBinary;
    bytes.push_back(small && batch.num_rows > 0 ? column.value_end(batch.num_rows - 1) - column.value_begin(0) : 0);
  }
  return bytes;
}

std::vector<OutputArray> partition_run(const TableView& table, const std::vector<int>& key_columns,
                                       uint32_t num_partitions, uint64_t seed, const KernelRunner& runner) {
  const std::vector<std::unique_ptr<KeyHasher>> hashers = make_hashers(table, key_columns, seed);
  std::vector<int> all_columns(static_cast<size_t>(table.num_columns()));
  for (size_t i = 0; i < all_columns.size(); ++i) all_columns[i] = static_cast<int>(i);
  const PartitionLayout layout = plan_partitions(
      num_partitions, runner.split_batches(table.starts, estimated_row_bytes(table, all_columns)), table.starts,
      [&](const MorselRange& morsel, uint64_t* out) {
        const int64_t begin = morsel.offset - table.starts[morsel.batch];
        hashers[morsel.batch]->hash(begin, begin + morsel.length, out);
      },
      nullptr, runner);

  std::vector<ScatterSources> columns(all_columns.size());
  for (size_t c = 0; c < columns.size(); ++c) {
    for (const BatchView& batch : table.batches) columns[c].push_back(&batch.columns[c]);
  }
  std::vector<ScatteredColumn> scattered = scatter_columns(columns, layout, runner, false);
  std::vector<std::vector<OutputArray>> columns_by_partition(num_partitions);
  for (ScatteredColumn& column : scattered) {
    for (size_t p = 0; p < column.parts.size(); ++p) columns_by_partition[p].push_back(std::move(column.parts[p]));
  }
  std::vector<OutputArray> batches;
  for (size_t p = 0; p < columns_by_partition.size(); ++p) {
    batches.push_back(make_struct(layout.partition_rows[p], std::move(columns_by_partition[p])));
  }
  return batches;
}

}  // namespace

PartitionLayout plan_partitions(uint32_t num_partitions, std::vector<MorselRange> morsels,
                                std::vector<int64_t> batch_starts,
                                const std::function<void(const MorselRange&, uint64_t*)>& hash_morsel,
                                uint64_t* keep_hashes, const KernelRunner& runner) {
  PartitionLayout layout;
  layout.num_partitions = num_partitions;
  layout.morsels = std::move(morsels);
  layout.batch_starts = std::move(batch_starts);
  layout.partition_of_row.resize(static_cast<size_t>(layout.batch_starts.back()));
  layout.morsel_starts.assign(layout.morsels.size() * num_partitions, 0);
  layout.partition_rows.assign(num_partitions, 0);
  runner.run(layout.morsels.size(), [&](size_t m) {
    const MorselRange& morsel = layout.morsels[m];
    std::unique_ptr<uint64_t[]> scratch;
    uint64_t* hashes = keep_hashes != nullptr ? keep_hashes + morsel.offset : nullptr;
    if (hashes == nullptr) {
      scratch.reset(new uint64_t[static_cast<size_t>(morsel.length)]);  // not zero-filled: fully written
      hashes = scratch.get();
    }
    hash_morsel(morsel, hashes);
    uint32_t* partition_of_row = layout.partition_of_row.data() + morsel.offset;
    int64_t* counts = layout.morsel_starts.data() + m * num_partitions;
    for (int64_t i = 0; i < morsel.length; ++i) {
      const uint32_t partition = partition_of(hashes[i], num_partitions);
      partition_of_row[i] = partition;
      ++counts[partition];
    }
  });
  for (uint32_t p = 0; p < num_partitions; ++p) {
    int64_t running = 0;
    for (size_t m = 0; m < layout.morsels.size(); ++m) {
      const int64_t count = layout.morsel_starts[m * num_partitions + p];
      layout.morsel_starts[m * num_partitions + p] = running;
      running += count;
    }
    layout.partition_rows[p] = running;
  }
  return layout;
}

std::vector<ScatteredColumn> scatter_columns(const std::vector<ScatterSources>& columns, const PartitionLayout& layout,
                                             const KernelRunner& runner, bool widen_offsets) {
  std::vector<std::unique_ptr<ColumnScatter>> scatters;
  bool byte_counts = false;
  bool bits = false;
  for (const ScatterSources& sources : columns) {
    scatters.push_back(std::make_unique<ColumnScatter>(sources, layout, widen_offsets));
    byte_counts = byte_counts || scatters.back()->needs_byte_counts();
    bits = bits || scatters.back()->has_bits();
  }
  const size_t morsels = layout.morsels.size();
  if (byte_counts) {
    runner.run(morsels, [&](size_t m) {
      for (auto& scatter : scatters) {
        if (scatter->needs_byte_counts()) scatter->count_bytes(m);
      }
    });
  }
  for (auto& scatter : scatters) scatter->allocate();
  runner.run(morsels, [&](size_t m) {
    for (auto& scatter : scatters) scatter->scatter(m);
  });
  if (bits) {
    runner.run(layout.num_partitions, [&](size_t p) {
      for (auto& scatter : scatters) scatter->pack(static_cast<uint32_t>(p));
    });
  }
  std::vector<ScatteredColumn> outputs;
  for (auto& scatter : scatters) outputs.push_back({scatter->finish(), scatter->output_layout()});
  return outputs;
}

std::vector<std::vector<OutputArray>> partition_table(const TableView& table, const std::vector<std::string>& keys,
                                                      int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                                      int64_t morsel_bytes) {
  if (num_partitions <= 0 || num_partitions > UINT32_MAX) {
    throw InvalidArgument("num_partitions must be between 1 and 2^32-1, got " + std::to_string(num_partitions));
  }
  const std::vector<int> key_columns = resolve_keys(table.first(), keys);
  for (const ColumnView& column : table.first().columns) require_supported(column, "input");
  for (int c = 0; c < table.num_columns(); ++c) table.require_one_dictionary(c);
  const KernelRunner runner(executor, morsel_bytes);

  // Runs of consecutive batches whose 32-bit-offset data fits one array per column.
  std::vector<std::vector<OutputArray>> runs;
  size_t begin = 0;
  while (begin < table.batches.size()) {
    std::vector<int64_t> totals = small_offset_bytes(table.batches[begin]);
    size_t end = begin + 1;
    while (end < table.batches.size()) {
      const std::vector<int64_t> next = small_offset_bytes(table.batches[end]);
      bool fits = true;
      for (size_t c = 0; c < totals.size(); ++c) fits = fits && totals[c] + next[c] <= kMaxBinaryBytes;
      if (!fits) break;
      for (size_t c = 0; c < totals.size(); ++c) totals[c] += next[c];
      ++end;
    }
    std::vector<BatchView> batches(table.batches.begin() + static_cast<ptrdiff_t>(begin),
                                   table.batches.begin() + static_cast<ptrdiff_t>(end));
    runs.push_back(partition_run(make_table(std::move(batches)), key_columns, static_cast<uint32_t>(num_partitions),
                                 seed, runner));
    begin = end;
  }
  return runs;
}

}  // namespace sabot
