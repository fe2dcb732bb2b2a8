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
// into a single load and store.
template <int kWidth>
void scatter_fixed_morsel(const uint8_t* values, int64_t width, const MorselRange& morsel,
                          const uint32_t* partition_of_row, uint8_t* const* outputs, int64_t* cursors) {
  const int64_t step = kWidth > 0 ? kWidth : width;
  for (int64_t row = morsel.offset; row < morsel.offset + morsel.length; ++row) {
    const uint32_t partition = partition_of_row[row];
    std::memcpy(outputs[partition] + cursors[partition] * step, values + row * step,
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

  template <typename BitOf>
  void scatter(const PartitionLayout& layout, size_t morsel, BitOf bit_of) {
    std::vector<int64_t> cursors = morsel_cursors(layout, morsel);
    std::vector<uint8_t*> outputs = pointers_of(bytes);
    const MorselRange& range = layout.morsels[morsel];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      const uint32_t partition = layout.partition_of_row[row];
      outputs[partition][cursors[partition]++] = bit_of(row);
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
  ColumnScatter(const ColumnView& column, const PartitionLayout& layout) : column_(column), layout_(layout) {
    require_supported(column, "input");
    if (column.is_var_binary()) byte_starts_.assign(layout.morsels.size() * layout.num_partitions, 0);
  }

  bool needs_byte_counts() const { return column_.is_var_binary(); }
  bool has_bits() const { return column_.has_nulls || column_.layout == Layout::kBool; }

  // Var-binary: bytes each morsel sends to each partition.
  void count_bytes(size_t morsel) {
    int64_t* counts = byte_starts_.data() + morsel * layout_.num_partitions;
    const MorselRange& range = layout_.morsels[morsel];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      counts[layout_.partition_of_row[row]] += column_.value_end(row) - column_.value_begin(row);
    }
  }

  void allocate() {
    const uint32_t partitions = layout_.num_partitions;
    if (column_.has_nulls) validity_.allocate(layout_);
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
    const ColumnView& column = column_;
    if (column.has_nulls) {
      validity_.scatter(layout_, morsel, [&](int64_t row) {
        return static_cast<uint8_t>(bit_is_set(column.validity, column.offset + row));
      });
    }
    if (column.layout == Layout::kBool) {
      bool_values_.scatter(layout_, morsel, [&](int64_t row) {
        return static_cast<uint8_t>(bit_is_set(column.values, column.offset + row));
      });
    } else if (column.is_var_binary()) {
      scatter_var_binary(morsel);
    } else {
      scatter_fixed(morsel);
    }
  }

  void pack(uint32_t partition) {
    if (column_.has_nulls) validity_.pack(layout_, partition);
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
      const bool nulls = column_.has_nulls && validity_.zeros[p] > 0;
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
  bool large() const { return column_.layout == Layout::kLargeBinary; }

  void allocate_var_binary() {
    const uint32_t partitions = layout_.num_partitions;
    const size_t morsels = layout_.morsels.size();
    for (uint32_t p = 0; p < partitions; ++p) {
      int64_t running = 0;
      for (size_t m = 0; m < morsels; ++m) {
        const int64_t count = byte_starts_[m * partitions + p];
        byte_starts_[m * partitions + p] = running;
        running += count;
      }
      if (!large() && running > INT32_MAX) {
        throw Overflow("partition " + std::to_string(p) + " of column '" + column_.name +
                       "' needs more than 2 GiB of data; use large_string/large_binary");
      }
      const int64_t rows = layout_.partition_rows[p];
      offsets_.push_back(allocate_buffer((rows + 1) * (large() ? 8 : 4)));
      values_.push_back(allocate_buffer(running));
      if (large()) {
        reinterpret_cast<int64_t*>(offsets_[p].get())[rows] = running;
      } else {
        reinterpret_cast<int32_t*>(offsets_[p].get())[rows] = static_cast<int32_t>(running);
      }
    }
  }

  void scatter_var_binary(size_t morsel) {
    const uint32_t partitions = layout_.num_partitions;
    std::vector<int64_t> row_cursors = morsel_cursors(layout_, morsel);
    std::vector<int64_t> byte_cursors(byte_starts_.begin() + static_cast<ptrdiff_t>(morsel * partitions),
                                      byte_starts_.begin() + static_cast<ptrdiff_t>((morsel + 1) * partitions));
    std::vector<uint8_t*> offsets = pointers_of(offsets_);
    std::vector<uint8_t*> data = pointers_of(values_);
    const MorselRange& range = layout_.morsels[morsel];
    for (int64_t row = range.offset; row < range.offset + range.length; ++row) {
      const uint32_t p = layout_.partition_of_row[row];
      const int64_t begin = column_.value_begin(row);
      const int64_t size = column_.value_end(row) - begin;
      const int64_t position = byte_cursors[p];
      if (large()) {
        reinterpret_cast<int64_t*>(offsets[p])[row_cursors[p]] = position;
      } else {
        reinterpret_cast<int32_t*>(offsets[p])[row_cursors[p]] = static_cast<int32_t>(position);
      }
      std::memcpy(data[p] + position, column_.values + begin, static_cast<size_t>(size));
      byte_cursors[p] = position + size;
      ++row_cursors[p];
    }
  }

  void scatter_fixed(size_t morsel) {
    const int64_t width = column_.byte_width;
    const uint8_t* values = column_.values + column_.offset * width;
    std::vector<int64_t> cursors = morsel_cursors(layout_, morsel);
    std::vector<uint8_t*> outputs = pointers_of(values_);
    const MorselRange& range = layout_.morsels[morsel];
    const uint32_t* rows = layout_.partition_of_row.data();
    switch (width) {
      case 1: return scatter_fixed_morsel<1>(values, width, range, rows, outputs.data(), cursors.data());
      case 2: return scatter_fixed_morsel<2>(values, width, range, rows, outputs.data(), cursors.data());
      case 4: return scatter_fixed_morsel<4>(values, width, range, rows, outputs.data(), cursors.data());
      case 8: return scatter_fixed_morsel<8>(values, width, range, rows, outputs.data(), cursors.data());
      case 16: return scatter_fixed_morsel<16>(values, width, range, rows, outputs.data(), cursors.data());
      default: return scatter_fixed_morsel<0>(values, width, range, rows, outputs.data(), cursors.data());
    }
  }

  const ColumnView& column_;
  const PartitionLayout& layout_;
  BitScatter validity_;
  BitScatter bool_values_;
  std::vector<std::shared_ptr<uint8_t>> values_;   // fixed-width values or var-binary bytes
  std::vector<std::shared_ptr<uint8_t>> offsets_;  // var-binary offsets
  std::vector<int64_t> byte_starts_;               // var-binary: [morsel * partitions + partition]
};

}  // namespace

KernelRunner::KernelRunner(MorselExecutor* executor, int64_t morsel_bytes)
    : executor_(executor), morsel_bytes_(morsel_bytes) {
  if (morsel_bytes <= 0) throw InvalidArgument("morsel_bytes must be > 0, got " + std::to_string(morsel_bytes));
}

std::vector<MorselRange> KernelRunner::split(int64_t num_rows, double bytes_per_row) const {
  return split_morsels(num_rows, bytes_per_row, morsel_bytes_);
}

void KernelRunner::run(size_t count, const std::function<void(size_t)>& task) const {
  if (executor_ != nullptr && count > 0) {
    executor_->parallel_for(count, task);
    return;
  }
  for (size_t i = 0; i < count; ++i) task(i);
}

PartitionLayout plan_partitions(int64_t num_rows, uint32_t num_partitions, std::vector<MorselRange> morsels,
                                const std::function<void(int64_t, int64_t, uint64_t*)>& hash_rows,
                                uint64_t* keep_hashes, const KernelRunner& runner) {
  PartitionLayout layout;
  layout.num_partitions = num_partitions;
  layout.morsels = std::move(morsels);
  layout.partition_of_row.resize(static_cast<size_t>(num_rows));
  layout.morsel_starts.assign(layout.morsels.size() * num_partitions, 0);
  layout.partition_rows.assign(num_partitions, 0);
  runner.run(layout.morsels.size(), [&](size_t m) {
    const MorselRange& morsel = layout.morsels[m];
    std::vector<uint64_t> scratch;
    uint64_t* hashes = keep_hashes != nullptr ? keep_hashes + morsel.offset : nullptr;
    if (hashes == nullptr) {
      scratch.resize(static_cast<size_t>(morsel.length));
      hashes = scratch.data();
    }
    hash_rows(morsel.offset, morsel.offset + morsel.length, hashes);
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

std::vector<std::vector<OutputArray>> scatter_columns(const std::vector<const ColumnView*>& columns,
                                                      const PartitionLayout& layout, const KernelRunner& runner) {
  std::vector<std::unique_ptr<ColumnScatter>> scatters;
  bool byte_counts = false;
  bool bits = false;
  for (const ColumnView* column : columns) {
    scatters.push_back(std::make_unique<ColumnScatter>(*column, layout));
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
  std::vector<std::vector<OutputArray>> outputs;
  for (auto& scatter : scatters) outputs.push_back(scatter->finish());
  return outputs;
}

std::vector<int> resolve_keys(const BatchView& batch, const std::vector<std::string>& keys) {
  if (keys.empty()) throw InvalidArgument("keys must name at least one column, got an empty list");
  std::vector<int> indices;
  for (const std::string& key : keys) indices.push_back(batch.column_index(key, "key"));
  return indices;
}

double estimated_row_bytes(const BatchView& batch, const std::vector<int>& columns) {
  double bytes = 0;
  for (int index : columns) {
    const ColumnView& column = batch.columns[static_cast<size_t>(index)];
    if (column.is_var_binary() && batch.num_rows > 0) {
      bytes += (column.layout == Layout::kBinary ? 4 : 8) +
               static_cast<double>(column.value_end(batch.num_rows - 1) - column.value_begin(0)) /
                   static_cast<double>(batch.num_rows);
    } else {
      bytes += column.byte_width > 0 ? column.byte_width : 1;
    }
  }
  return bytes;
}

std::vector<OutputArray> partition_batch(const BatchView& batch, const std::vector<std::string>& keys,
                                         int64_t num_partitions, uint64_t seed, MorselExecutor* executor,
                                         int64_t morsel_bytes) {
  if (num_partitions <= 0 || num_partitions > UINT32_MAX) {
    throw InvalidArgument("num_partitions must be between 1 and 2^32-1, got " + std::to_string(num_partitions));
  }
  const std::vector<int> key_columns = resolve_keys(batch, keys);
  for (const ColumnView& column : batch.columns) require_supported(column, "input");
  const KernelRunner runner(executor, morsel_bytes);
  const KeyHasher hasher(batch, key_columns, seed);
  std::vector<int> all_columns(batch.columns.size());
  for (size_t i = 0; i < all_columns.size(); ++i) all_columns[i] = static_cast<int>(i);
  const PartitionLayout layout = plan_partitions(
      batch.num_rows, static_cast<uint32_t>(num_partitions),
      runner.split(batch.num_rows, estimated_row_bytes(batch, all_columns)),
      [&](int64_t begin, int64_t end, uint64_t* out) { hasher.hash(begin, end, out); }, nullptr, runner);

  std::vector<const ColumnView*> columns;
  for (const ColumnView& column : batch.columns) columns.push_back(&column);
  std::vector<std::vector<OutputArray>> scattered = scatter_columns(columns, layout, runner);
  std::vector<std::vector<OutputArray>> columns_by_partition(static_cast<size_t>(num_partitions));
  for (std::vector<OutputArray>& parts : scattered) {
    for (size_t p = 0; p < parts.size(); ++p) columns_by_partition[p].push_back(std::move(parts[p]));
  }
  std::vector<OutputArray> batches;
  for (size_t p = 0; p < columns_by_partition.size(); ++p) {
    batches.push_back(make_struct(layout.partition_rows[p], std::move(columns_by_partition[p])));
  }
  return batches;
}

OutputArray hash_rows(const BatchView& batch, const std::vector<std::string>& keys, uint64_t seed) {
  const KeyHasher hasher(batch, resolve_keys(batch, keys), seed);
  auto values = allocate_buffer(batch.num_rows * 8);
  hasher.hash(0, batch.num_rows, reinterpret_cast<uint64_t*>(values.get()));
  OutputArray out;
  out.length = batch.num_rows;
  out.buffers = {nullptr, std::move(values)};
  return out;
}

}  // namespace sabot
