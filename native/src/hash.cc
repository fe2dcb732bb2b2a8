#include "hash.h"

#include <algorithm>
#include <type_traits>

#include "errors.h"

namespace sabot {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

// Rows hashed per step: the running row hashes of one step stay in L1 while each key column is
// folded into them.
constexpr int64_t kStepRows = 1024;

inline uint64_t rotate_left(uint64_t value, int bits) { return (value << bits) | (value >> (64 - bits)); }

inline uint64_t xxh_round(uint64_t accumulator, uint64_t input) {
  accumulator += input * kPrime2;
  return rotate_left(accumulator, 31) * kPrime1;
}

inline uint64_t xxh_merge_round(uint64_t accumulator, uint64_t value) {
  accumulator ^= xxh_round(0, value);
  return accumulator * kPrime1 + kPrime4;
}

// XXH64's tail (the last < 32 bytes) and avalanche.
inline uint64_t xxh_finish(uint64_t h, const uint8_t* cursor, const uint8_t* end) {
  while (cursor + 8 <= end) {
    h ^= xxh_round(0, load_unaligned<uint64_t>(cursor));
    h = rotate_left(h, 27) * kPrime1 + kPrime4;
    cursor += 8;
  }
  if (cursor + 4 <= end) {
    h ^= static_cast<uint64_t>(load_unaligned<uint32_t>(cursor)) * kPrime1;
    h = rotate_left(h, 23) * kPrime2 + kPrime3;
    cursor += 4;
  }
  while (cursor < end) {
    h ^= (*cursor) * kPrime5;
    h = rotate_left(h, 11) * kPrime1;
    ++cursor;
  }
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

// XXH64 of fewer than 32 bytes, inlined into the string loops: most keys are short, and the call
// cost more than the hash.
inline uint64_t xxh64_short(const uint8_t* data, size_t length, uint64_t seed) {
  return xxh_finish(seed + kPrime5 + static_cast<uint64_t>(length), data, data + length);
}

// The columns the fused loops handle (hash_kernel.inc).
enum class FastKind { kNone, kSigned, kUnsigned, kFloat32, kFloat64 };

FastKind fast_kind_of(const ColumnView& column) {
  switch (column.layout) {
    case Layout::kSignedInt: return FastKind::kSigned;
    case Layout::kUnsignedInt: return FastKind::kUnsigned;
    case Layout::kFloat32: return FastKind::kFloat32;
    case Layout::kFloat64: return FastKind::kFloat64;
    default: return FastKind::kNone;
  }
}

namespace baseline {
#include "hash_kernel.inc"
}  // namespace baseline

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw")
namespace avx512 {
#include "hash_kernel.inc"
}  // namespace avx512
#pragma GCC pop_options

bool has_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  return supported;
}
#endif

void fold_fixed_width_column(const ColumnView& column, FastKind kind, int64_t begin, int64_t count, uint64_t seed,
                             bool first, uint64_t* row_hashes) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx512()) return avx512::fold_column(column, kind, begin, count, seed, first, row_hashes);
#endif
  baseline::fold_column(column, kind, begin, count, seed, first, row_hashes);
}

// Runs `loop` with the null check and the combine step resolved at compile time, so the common case
// (first key, no nulls) is a branch-free loop.
template <typename ValueHash>
void hash_rows_of(const ColumnView& column, int64_t begin, int64_t end, bool first, uint64_t* out,
                  ValueHash value_hash) {
  auto run = [&](auto first_tag, auto nulls_tag) {
    constexpr bool kFirst = decltype(first_tag)::value;
    constexpr bool kNulls = decltype(nulls_tag)::value;
    for (int64_t row = begin; row < end; ++row) {
      const uint64_t h =
          (kNulls && !bit_is_set(column.validity, column.offset + row)) ? kNullHash : value_hash(row);
      out[row - begin] = kFirst ? h : combine_hashes(out[row - begin], h);
    }
  };
  using True = std::true_type;
  using False = std::false_type;
  if (first) {
    column.has_nulls ? run(True{}, True{}) : run(True{}, False{});
  } else {
    column.has_nulls ? run(False{}, True{}) : run(False{}, False{});
  }
}

template <typename Int>
void hash_integers(const ColumnView& column, uint64_t seed, int64_t begin, int64_t end, bool first,
                   uint64_t* out) {
  const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(Int));
  hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
    // Signed values widen by sign extension, so equal int32 and int64 values hash equal.
    const int64_t widened = static_cast<int64_t>(load_unaligned<Int>(values + row * sizeof(Int)));
    return hash_word(static_cast<uint64_t>(widened), seed);
  });
}

// Strings and binary, with the offsets read at their compile-time width.
template <typename Offset>
void hash_binary(const ColumnView& column, uint64_t seed, int64_t begin, int64_t end, bool first, uint64_t* out) {
  const uint8_t* offsets = column.offsets + column.offset * static_cast<int64_t>(sizeof(Offset));
  hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
    const int64_t start = load_unaligned<Offset>(offsets + row * static_cast<int64_t>(sizeof(Offset)));
    const int64_t stop = load_unaligned<Offset>(offsets + (row + 1) * static_cast<int64_t>(sizeof(Offset)));
    const size_t size = static_cast<size_t>(stop - start);
    return size < 32 ? xxh64_short(column.values + start, size, seed) : xxh64(column.values + start, size, seed);
  });
}

void hash_values(const ColumnView& column, uint64_t seed, int64_t begin, int64_t end, bool first,
                 uint64_t* out) {
  const int64_t offset = column.offset;
  switch (column.layout) {
    case Layout::kBool:
      hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
        return hash_word(bit_is_set(column.values, offset + row) ? 1 : 0, seed);
      });
      return;
    case Layout::kSignedInt:
      switch (column.byte_width) {
        case 1: return hash_integers<int8_t>(column, seed, begin, end, first, out);
        case 2: return hash_integers<int16_t>(column, seed, begin, end, first, out);
        case 4: return hash_integers<int32_t>(column, seed, begin, end, first, out);
        default: return hash_integers<int64_t>(column, seed, begin, end, first, out);
      }
    case Layout::kUnsignedInt:
      switch (column.byte_width) {
        case 1: return hash_integers<uint8_t>(column, seed, begin, end, first, out);
        case 2: return hash_integers<uint16_t>(column, seed, begin, end, first, out);
        case 4: return hash_integers<uint32_t>(column, seed, begin, end, first, out);
        default: return hash_integers<uint64_t>(column, seed, begin, end, first, out);
      }
    case Layout::kFloat32:
      hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
        const float value = load_unaligned<float>(column.values + (offset + row) * 4);
        return hash_word(normalized_double_bits(static_cast<double>(value)), seed);
      });
      return;
    case Layout::kFloat64:
      hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
        const double value = load_unaligned<double>(column.values + (offset + row) * 8);
        return hash_word(normalized_double_bits(value), seed);
      });
      return;
    case Layout::kFixedBytes: {
      const int64_t width = column.byte_width;
      hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
        return xxh64(column.values + (offset + row) * width, static_cast<size_t>(width), seed);
      });
      return;
    }
    case Layout::kBinary: return hash_binary<int32_t>(column, seed, begin, end, first, out);
    case Layout::kLargeBinary: return hash_binary<int64_t>(column, seed, begin, end, first, out);
    case Layout::kDictionary:
    case Layout::kUnsupported:
      require_supported(column, "key");
      throw UnsupportedType("column '" + column.name + "': a dictionary of dictionaries cannot be hashed");
  }
}

// Value hashes of every row of a flat column: a dictionary's entries, hashed once per call.
std::vector<uint64_t> hash_column_values(const ColumnView& column, uint64_t seed) {
  std::vector<uint64_t> hashes(static_cast<size_t>(column.length));
  hash_values(column, seed, 0, column.length, true, hashes.data());
  return hashes;
}

}  // namespace

uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed) {
  if (length < 32) return xxh64_short(data, length, seed);
  const uint8_t* cursor = data;
  const uint8_t* const end = data + length;
  uint64_t v1 = seed + kPrime1 + kPrime2;
  uint64_t v2 = seed + kPrime2;
  uint64_t v3 = seed;
  uint64_t v4 = seed - kPrime1;
  const uint8_t* const limit = end - 32;
  do {
    v1 = xxh_round(v1, load_unaligned<uint64_t>(cursor));
    v2 = xxh_round(v2, load_unaligned<uint64_t>(cursor + 8));
    v3 = xxh_round(v3, load_unaligned<uint64_t>(cursor + 16));
    v4 = xxh_round(v4, load_unaligned<uint64_t>(cursor + 24));
    cursor += 32;
  } while (cursor <= limit);
  uint64_t h = rotate_left(v1, 1) + rotate_left(v2, 7) + rotate_left(v3, 12) + rotate_left(v4, 18);
  h = xxh_merge_round(h, v1);
  h = xxh_merge_round(h, v2);
  h = xxh_merge_round(h, v3);
  h = xxh_merge_round(h, v4);
  h += static_cast<uint64_t>(length);
  return xxh_finish(h, cursor, end);
}

KeyHasher::KeyHasher(const BatchView& batch, const std::vector<int>& columns, uint64_t seed, const char* role,
                     const KeyHasher* previous)
    : seed_(seed) {
  for (size_t k = 0; k < columns.size(); ++k) {
    const ColumnView& column = batch.columns[static_cast<size_t>(columns[k])];
    require_supported(column, role);
    KeyColumn key{&column, static_cast<int>(fast_kind_of(column)), nullptr};
    if (column.layout == Layout::kDictionary) {
      const KeyColumn* before = previous != nullptr && k < previous->keys_.size() ? &previous->keys_[k] : nullptr;
      if (before != nullptr && before->dictionary_hashes && previous->seed_ == seed &&
          same_values(*before->column->dictionary, *column.dictionary)) {
        key.dictionary_hashes = before->dictionary_hashes;
      } else {
        key.dictionary_hashes = std::make_shared<const std::vector<uint64_t>>(hash_column_values(*column.dictionary, seed));
      }
    }
    keys_.push_back(std::move(key));
  }
}

void KeyHasher::hash_column(const KeyColumn& key, int64_t begin, int64_t end, bool first, uint64_t* out) const {
  const ColumnView& column = *key.column;
  if (key.fast_kind != static_cast<int>(FastKind::kNone)) {
    fold_fixed_width_column(column, static_cast<FastKind>(key.fast_kind), begin, end - begin, seed_, first, out);
  } else if (column.layout != Layout::kDictionary) {
    hash_values(column, seed_, begin, end, first, out);
  } else {
    const uint64_t* dictionary_hashes = key.dictionary_hashes->data();
    hash_rows_of(column, begin, end, first, out,
                 [&](int64_t row) { return dictionary_hashes[column.dictionary_index(row)]; });
  }
}

void KeyHasher::hash(int64_t begin, int64_t end, uint64_t* out) const {
  if (keys_.size() == 1) {
    hash_column(keys_[0], begin, end, true, out);
    return;
  }
  for (int64_t step = begin; step < end; step += kStepRows) {
    const int64_t step_end = std::min(end, step + kStepRows);
    for (size_t k = 0; k < keys_.size(); ++k) hash_column(keys_[k], step, step_end, k == 0, out + (step - begin));
  }
}

std::vector<std::unique_ptr<KeyHasher>> make_hashers(const TableView& table, const std::vector<int>& columns,
                                                     uint64_t seed, const char* role) {
  std::vector<std::unique_ptr<KeyHasher>> hashers;
  for (const BatchView& batch : table.batches) {
    const KeyHasher* previous = hashers.empty() ? nullptr : hashers.back().get();
    hashers.push_back(std::make_unique<KeyHasher>(batch, columns, seed, role, previous));
  }
  return hashers;
}

OutputArray hash_rows(const TableView& table, const std::vector<std::string>& keys, uint64_t seed) {
  const std::vector<std::unique_ptr<KeyHasher>> hashers = make_hashers(table, resolve_keys(table.first(), keys), seed);
  auto values = allocate_buffer(table.num_rows * 8);
  for (size_t b = 0; b < table.batches.size(); ++b) {
    hashers[b]->hash(0, table.batches[b].num_rows, reinterpret_cast<uint64_t*>(values.get()) + table.starts[b]);
  }
  OutputArray out;
  out.length = table.num_rows;
  out.buffers = {nullptr, std::move(values)};
  return out;
}

bool values_equal(const ColumnView& x, int64_t a, const ColumnView& y, int64_t b) {
  bool valid_a = x.is_valid(a);
  bool valid_b = y.is_valid(b);
  if (x.layout == Layout::kDictionary) {  // an index to a null entry is a null, like a null index
    valid_a = valid_a && x.dictionary->is_valid(x.dictionary_index(a));
    valid_b = valid_b && y.dictionary->is_valid(y.dictionary_index(b));
  }
  if (!valid_a || !valid_b) return valid_a == valid_b;
  switch (x.layout) {
    case Layout::kBool:
      return bit_is_set(x.values, x.offset + a) == bit_is_set(y.values, y.offset + b);
    case Layout::kFloat32:
      return normalized_double_bits(load_unaligned<float>(x.values + (x.offset + a) * 4)) ==
             normalized_double_bits(load_unaligned<float>(y.values + (y.offset + b) * 4));
    case Layout::kFloat64:
      return normalized_double_bits(load_unaligned<double>(x.values + (x.offset + a) * 8)) ==
             normalized_double_bits(load_unaligned<double>(y.values + (y.offset + b) * 8));
    case Layout::kBinary:
    case Layout::kLargeBinary: {
      const int64_t begin_a = x.value_begin(a);
      const int64_t begin_b = y.value_begin(b);
      const int64_t size = x.value_end(a) - begin_a;
      return size == y.value_end(b) - begin_b &&
             std::memcmp(x.values + begin_a, y.values + begin_b, static_cast<size_t>(size)) == 0;
    }
    case Layout::kDictionary: {
      const int64_t index_a = x.dictionary_index(a);
      const int64_t index_b = y.dictionary_index(b);
      if (index_a == index_b && x.dictionary_array == y.dictionary_array) return true;
      return values_equal(*x.dictionary, index_a, *y.dictionary, index_b);
    }
    default: {
      const int64_t width = x.byte_width;
      return std::memcmp(x.values + (x.offset + a) * width, y.values + (y.offset + b) * width,
                         static_cast<size_t>(width)) == 0;
    }
  }
}

}  // namespace sabot
