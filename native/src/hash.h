// The partition hash: a seeded 64-bit hash of a row's key columns, identical in every process and on
// every machine (it depends only on the values, never on addresses, ASLR or PYTHONHASHSEED). This is
// the one definition of a value's hash: partitioning, aggregation, hash_rows and batch_checksum all
// use it. The full specification, with the reasons for each choice, is in native/README.md; golden
// vectors are in tests/native/hash_golden.json.
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
#include <memory>
#include <string>
#include <vector>

#include "arrow_data.h"

namespace sabot {

// "sabot-h1" in ASCII: the seed of the exchange between processes (partition_batch's default).
constexpr uint64_t kDefaultHashSeed = 0x7361626F742D6831ULL;
// "sabot-a1" in ASCII: the seed the aggregation hashes keys with inside one process, for its radix
// partitions and hash-table slots. It must differ from the exchange's seed: a reducer receives only
// rows whose exchange hash has the same high bits, and with the same hash its radix partitioning
// (also high bits) would fill only 1/N of its partitions after an N-way exchange.
constexpr uint64_t kAggregateHashSeed = 0x7361626F742D6131ULL;
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

// Hashes rows of a fixed set of columns of one batch. Construction prepares per-column state (the
// hashes of every dictionary value, computed once) so hash() can be called for many row ranges
// concurrently. Integer and float columns go through a fused, branch-free loop compiled for the
// baseline ISA and for AVX-512 (picked once at run time); other layouts hash value by value.
class KeyHasher {
 public:
  // Throws UnsupportedType naming the column (as a `role` column) if its type cannot be hashed.
  // `previous` (optional), a hasher of the same columns of another chunk of the same table, lends
  // its dictionary hashes where the dictionaries are the same.
  KeyHasher(const BatchView& batch, const std::vector<int>& columns, uint64_t seed, const char* role = "key",
            const KeyHasher* previous = nullptr);

  // Writes the row hashes of rows [begin, end) to out[0 .. end - begin).
  void hash(int64_t begin, int64_t end, uint64_t* out) const;
  uint64_t hash_one(int64_t row) const {
    uint64_t h;
    hash(row, row + 1, &h);
    return h;
  }

 private:
  struct KeyColumn {
    const ColumnView* column;
    int fast_kind;  // the fused loop's type, or 0 for the value-by-value path
    std::shared_ptr<const std::vector<uint64_t>> dictionary_hashes;  // value hash per dictionary entry
  };
  void hash_column(const KeyColumn& key, int64_t begin, int64_t end, bool first, uint64_t* out) const;

  uint64_t seed_;
  std::vector<KeyColumn> keys_;
};

// One KeyHasher per batch of `table` over the same columns (dictionary hashes shared between chunks
// that share a dictionary).
std::vector<std::unique_ptr<KeyHasher>> make_hashers(const TableView& table, const std::vector<int>& columns,
                                                     uint64_t seed, const char* role = "key");

// The row hashes of `keys` for every row of the table, in row order, as a uint64 array.
OutputArray hash_rows(const TableView& table, const std::vector<std::string>& keys, uint64_t seed);

// Key equality consistent with the hash (equal values hash equal): nulls equal nulls, floats compare
// normalized (-0.0 == 0.0, NaN == NaN), dictionary values compare decoded, and strings equal their
// large_string form. Row `a` of column `x` against row `b` of column `y` (the same column of two
// chunks or partitions, or the same view twice).
bool values_equal(const ColumnView& x, int64_t a, const ColumnView& y, int64_t b);

}  // namespace sabot
