// The partition hash: a seeded 64-bit hash of a row's key columns, identical in every process and on
// every machine (it depends only on the values, never on addresses, ASLR or PYTHONHASHSEED). The full
// specification, with the reasons for each choice, is in native/README.md; golden vectors are in
// tests/native/hash_golden.json.
//
// value hash (per column, per row):
//   null                            -> kNullHash
//   integer-like (ints of any width, bool, dates, times, timestamps, durations)
//                                   -> hash_word(int64 value, seed)   (unsigned: the value's bits)
//   float32/float64                 -> hash_word(bits of (double)value, seed), with -0.0 -> +0.0 and
//                                      every NaN -> 0x7FF8000000000000 first
//   string/binary (32- or 64-bit offsets), fixed-size bytes (decimals)
//                                   -> xxh64(bytes, seed)
//   dictionary                      -> the value hash of the decoded dictionary value
// row hash: h = value hash of key 0; for each further key k: h = combine_hashes(h, value hash of k)
// partition of a row: partition_of(h, P) = (h * P) >> 64 (the high word of the 128-bit product)
#pragma once

#include <cstdint>
#include <vector>

#include "arrow_data.h"

namespace sabot {

// "sabot-h1" in ASCII.
constexpr uint64_t kDefaultHashSeed = 0x7361626F742D6831ULL;
// "NULLNULL" in ASCII: the value hash of a null, whatever the seed and type.
constexpr uint64_t kNullHash = 0x4E554C4C4E554C4CULL;
// 2^64 / golden ratio, the splitmix64 increment.
constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kCanonicalNaNBits = 0x7FF8000000000000ULL;

// The splitmix64 finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The hash of one 64-bit word: splitmix64's output for state word + seed.
inline uint64_t hash_word(uint64_t word, uint64_t seed) { return mix64(word + seed + kGoldenGamma); }

// Bits of a double with -0.0 and all NaNs normalized, so equal keys hash equal.
inline uint64_t normalized_double_bits(double value) {
  if (value != value) return kCanonicalNaNBits;
  if (value == 0.0) return 0;
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Folds the value hash of the next key column into the running row hash. Multiplying by an odd
// constant first makes the combination depend on column order.
inline uint64_t combine_hashes(uint64_t row_hash, uint64_t value_hash) {
  return mix64(row_hash * kGoldenGamma + value_hash);
}

// Partition id in [0, partitions): the high 64 bits of hash * partitions. Uses the hash's high bits,
// is unbiased for any partition count (not only powers of two) and needs no division.
inline uint32_t partition_of(uint64_t hash, uint32_t partitions) {
  return static_cast<uint32_t>((static_cast<unsigned __int128>(hash) * partitions) >> 64);
}

// XXH64 (xxHash specification, 64-bit variant) of `length` bytes.
uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed);

// Hashes rows of a fixed set of key columns. Construction prepares per-column state (the hashes of
// every dictionary value, computed once) so hash() can be called for many row ranges concurrently.
class KeyHasher {
 public:
  // Throws UnsupportedType naming the column if a key column's type cannot be hashed.
  KeyHasher(const BatchView& batch, const std::vector<int>& key_columns, uint64_t seed);

  // Writes the row hashes of rows [begin, end) to out[0 .. end - begin).
  void hash(int64_t begin, int64_t end, uint64_t* out) const;

 private:
  struct KeyColumn {
    const ColumnView* column;
    std::vector<uint64_t> dictionary_hashes;  // dictionary columns: value hash per dictionary entry
  };
  void hash_column(const KeyColumn& key, int64_t begin, int64_t end, bool first, uint64_t* out) const;

  uint64_t seed_;
  std::vector<KeyColumn> keys_;
};

}  // namespace sabot
