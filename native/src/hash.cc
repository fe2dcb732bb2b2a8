#include "hash.h"

#include <type_traits>

#include "checksum.h"
#include "errors.h"

namespace sabot {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotate_left(uint64_t value, int bits) { return (value << bits) | (value >> (64 - bits)); }

inline uint64_t xxh_round(uint64_t accumulator, uint64_t input) {
  accumulator += input * kPrime2;
  return rotate_left(accumulator, 31) * kPrime1;
}

inline uint64_t xxh_merge_round(uint64_t accumulator, uint64_t value) {
  accumulator ^= xxh_round(0, value);
  return accumulator * kPrime1 + kPrime4;
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
    case Layout::kBinary:
    case Layout::kLargeBinary:
      hash_rows_of(column, begin, end, first, out, [&](int64_t row) {
        const int64_t start = column.value_begin(row);
        return xxh64(column.values + start, static_cast<size_t>(column.value_end(row) - start), seed);
      });
      return;
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
  const uint8_t* cursor = data;
  const uint8_t* const end = data + length;
  uint64_t h;
  if (length >= 32) {
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
    h = rotate_left(v1, 1) + rotate_left(v2, 7) + rotate_left(v3, 12) + rotate_left(v4, 18);
    h = xxh_merge_round(h, v1);
    h = xxh_merge_round(h, v2);
    h = xxh_merge_round(h, v3);
    h = xxh_merge_round(h, v4);
  } else {
    h = seed + kPrime5;
  }
  h += static_cast<uint64_t>(length);
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

KeyHasher::KeyHasher(const BatchView& batch, const std::vector<int>& key_columns, uint64_t seed)
    : seed_(seed) {
  for (int index : key_columns) {
    const ColumnView& column = batch.columns[static_cast<size_t>(index)];
    require_supported(column, "key");
    KeyColumn key{&column, {}};
    if (column.layout == Layout::kDictionary) {
      key.dictionary_hashes = hash_column_values(*column.dictionary, seed);
    }
    keys_.push_back(std::move(key));
  }
}

void KeyHasher::hash_column(const KeyColumn& key, int64_t begin, int64_t end, bool first,
                            uint64_t* out) const {
  const ColumnView& column = *key.column;
  if (column.layout != Layout::kDictionary) {
    // integers and floats: the branch-free loop compiled for AVX-512 too (checksum.cc)
    if (fold_fixed_width_column(column, begin, end - begin, seed_, first, out)) return;
    hash_values(column, seed_, begin, end, first, out);
    return;
  }
  const uint64_t* dictionary_hashes = key.dictionary_hashes.data();
  hash_rows_of(column, begin, end, first, out,
               [&](int64_t row) { return dictionary_hashes[column.dictionary_index(row)]; });
}

void KeyHasher::hash(int64_t begin, int64_t end, uint64_t* out) const {
  for (size_t k = 0; k < keys_.size(); ++k) hash_column(keys_[k], begin, end, k == 0, out);
}

}  // namespace sabot
