#include "join.h"

#include <algorithm>
#include <cctype>
#include <memory>

#include "errors.h"
#include "hash.h"

namespace sabot {
namespace {

// "sabot-j1" in ASCII. A join usually runs after a hash exchange on its keys; with the exchange's
// seed every row of one reducer would share the hash's high bits, which here are the slot tags.
constexpr uint64_t kJoinHashSeed = 0x7361626F742D6A31ULL;
constexpr uint32_t kNoGroup = UINT32_MAX;
// Rows are hashed this many at a time, then their slots are prefetched, then they are looked up: the
// cache misses of a block overlap instead of following one another.
constexpr int64_t kBlockRows = 256;
constexpr uint64_t kTagMask = 0xFFFFFFFF00000000ULL;

struct Side {
  const TableView* table;
  std::vector<int> keys;
  std::vector<std::unique_ptr<KeyHasher>> hashers;

  const ColumnView& key(size_t batch, size_t k) const { return table->batches[batch].columns[static_cast<size_t>(keys[k])]; }
  // A key column of Arrow's null type: every row has a NULL key (such a side has no hashers).
  bool never_matches() const {
    for (size_t k = 0; k < keys.size(); ++k) {
      if (key(0, k).null_type) return true;
    }
    return false;
  }
};

bool same_key_type(const ColumnView& a, const ColumnView& b) {
  if (a.layout == Layout::kDictionary || b.layout == Layout::kDictionary) {
    return a.layout == b.layout && same_key_type(*a.dictionary, *b.dictionary);
  }
  if (a.is_var_binary() && b.is_var_binary()) {  // 32- and 64-bit offsets of one type
    return std::tolower(static_cast<unsigned char>(a.format[0])) == std::tolower(static_cast<unsigned char>(b.format[0]));
  }
  return a.format == b.format;
}

bool key_is_null(const ColumnView& column, int64_t row) {
  if (column.null_type || !column.is_valid(row)) return true;
  return column.layout == Layout::kDictionary && !column.dictionary->is_valid(column.dictionary_index(row));
}

bool may_hold_nulls(const ColumnView& column) {
  return column.null_type || column.has_nulls || (column.layout == Layout::kDictionary && column.dictionary->has_nulls);
}

// Whether row `row` of batch `batch` has a NULL in any key column.
struct NullKeys {
  const Side* side;
  std::vector<std::vector<const ColumnView*>> nullable;  // [batch]: the key columns that may hold nulls

  explicit NullKeys(const Side& s) : side(&s), nullable(s.table->batches.size()) {
    for (size_t b = 0; b < nullable.size(); ++b) {
      for (size_t k = 0; k < s.keys.size(); ++k) {
        if (may_hold_nulls(s.key(b, k))) nullable[b].push_back(&s.key(b, k));
      }
    }
  }
  bool any(size_t batch) const { return !nullable[batch].empty(); }
  bool operator()(size_t batch, int64_t row) const {
    for (const ColumnView* column : nullable[batch]) {
      if (key_is_null(*column, row)) return true;
    }
    return false;
  }
};

// One integer-like key of the same type on both sides: its raw bytes, zero-extended, are the key.
bool word_key(const Side& build, const Side& probe) {
  if (build.keys.size() != 1 || build.never_matches() || probe.never_matches()) return false;
  const ColumnView& key = build.key(0, 0);
  return (key.layout == Layout::kSignedInt || key.layout == Layout::kUnsignedInt) && key.byte_width <= 8 &&
         key.format == probe.key(0, 0).format;
}

// Reads the key words of rows [begin, end) of an integer column of byte width 1, 2, 4 or 8 (a
// compile-time width: a memcpy of a runtime size is a libc call per row).
void load_words(const ColumnView& column, int64_t begin, int64_t end, uint64_t* out) {
  auto load = [&](auto word_tag) {
    using Word = decltype(word_tag);
    const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(Word));
    for (int64_t row = begin; row < end; ++row) {
      out[row - begin] = load_unaligned<Word>(values + row * static_cast<int64_t>(sizeof(Word)));
    }
  };
  switch (column.byte_width) {
    case 1: return load(uint8_t{});
    case 2: return load(uint16_t{});
    case 4: return load(uint32_t{});
    default: return load(uint64_t{});
  }
}

// Rows of a side named by batch and row: (batch << 40) | row, so a reference decodes without a search.
constexpr int kBatchShift = 40;
inline int64_t row_ref(size_t batch, int64_t row) { return (static_cast<int64_t>(batch) << kBatchShift) | row; }
inline uint32_t batch_of_ref(int64_t ref) { return static_cast<uint32_t>(ref >> kBatchShift); }
inline int64_t row_of_ref(int64_t ref) { return ref & ((int64_t{1} << kBatchShift) - 1); }

// A blocked Bloom filter of the build keys' hashes (two bits in one 64-bit word per key, ~16 bits per
// key): most probe rows without a match are turned away without touching the hash table, whose slot
// search branches unpredictably when lookups mostly miss.
class KeyFilter {
 public:
  explicit KeyFilter(int64_t keys) {
    int shift = 64;
    size_t words = 1;
    while (words * 4 < static_cast<size_t>(keys)) {
      words *= 2;
      --shift;
    }
    shift_ = shift;
    words_.assign(words, 0);
  }
  void add(uint64_t hash) { words_[index(hash)] |= bits(hash); }
  bool may_contain(uint64_t hash) const { return (words_[index(hash)] & bits(hash)) == bits(hash); }

 private:
  // The word comes from the high bits of hash * gamma, the two bits from hash bits 32..43 (the table's
  // slots use the low bits).
  size_t index(uint64_t hash) const { return shift_ == 64 ? 0 : static_cast<size_t>((hash * kGoldenGamma) >> shift_); }
  static uint64_t bits(uint64_t hash) { return (uint64_t{1} << ((hash >> 32) & 63)) | (uint64_t{1} << ((hash >> 38) & 63)); }

  int shift_;
  std::vector<uint64_t> words_;
};

// The build side's distinct keys in an open-addressing table with linear probing from the hash's low
// bits, and each key's rows in build order. A slot holds the key itself when it is one integer word
// (one memory access per probe), else the full hash, compared before the keys.
class BuildTable {
 public:
  BuildTable(const Side& build, bool words) : build_(build), words_(words), filter_(build.table->num_rows) {
    const int64_t rows = build.table->num_rows;
    size_t capacity = 64;
    // at most 3/4 full: the table stays small enough for the cache, probe runs stay short
    while (capacity * 3 < static_cast<size_t>(rows) * 4) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    group_of_.assign(static_cast<size_t>(rows), kNoGroup);
    insert_rows();
    index_rows();
  }

  void prefetch(uint64_t hash) const { __builtin_prefetch(&slots_[hash & mask_]); }
  bool may_contain(uint64_t hash) const { return filter_.may_contain(hash); }

  // The group of probe row `row` of `batch` (its hash and, for word keys, its key), or kNoGroup.
  uint32_t find(uint64_t hash, uint64_t word, const Side& probe, size_t batch, int64_t row) const {
    size_t index = hash & mask_;
    if (words_) {
      while (true) {
        const Slot& slot = slots_[index];
        if (slot.group == 0) return kNoGroup;
        if (slot.word == word) return slot.group - 1;
        index = (index + 1) & mask_;
      }
    }
    while (true) {
      const Slot& slot = slots_[index];
      if (slot.group == 0) return kNoGroup;
      if (slot.word == hash && same_keys(probe, batch, row, group_rows_[group_start(slot.group - 1)])) return slot.group - 1;
      index = (index + 1) & mask_;
    }
  }

  size_t groups() const { return group_count_; }
  uint32_t group_of(int64_t row) const { return group_of_[static_cast<size_t>(row)]; }
  // Where a group's rows (references) start and end in rows(); with unique keys group g is row g.
  int64_t group_start(uint32_t group) const { return unique_ ? group : group_start_[group]; }
  int64_t group_end(uint32_t group) const { return unique_ ? group + 1 : group_start_[group + 1]; }
  const int64_t* rows() const { return group_rows_.data(); }

 private:
  struct Slot {
    uint64_t word = 0;   // the key (word keys) or the full hash
    uint32_t group = 0;  // group + 1; 0 marks an empty slot
  };

  bool same_keys(const Side& side, size_t batch, int64_t row, int64_t ref) const {
    const uint32_t other_batch = batch_of_ref(ref);
    const int64_t other_row = row_of_ref(ref);
    for (size_t k = 0; k < side.keys.size(); ++k) {
      if (!values_equal(side.key(batch, k), row, build_.key(other_batch, k), other_row)) return false;
    }
    return true;
  }

  uint32_t find_or_insert(uint64_t hash, uint64_t word, size_t batch, int64_t row) {
    size_t index = hash & mask_;
    const uint64_t stored = words_ ? word : hash;
    while (true) {
      Slot& slot = slots_[index];
      if (slot.group == 0) {
        if (group_count_ >= kNoGroup - 1) throw InvalidArgument("a join's build side has more than 2^32 - 2 distinct keys");
        slot.word = stored;
        slot.group = static_cast<uint32_t>(++group_count_);
        first_rows_.push_back(row_ref(batch, row));
        return slot.group - 1;
      }
      if (slot.word == stored && (words_ || same_keys(build_, batch, row, first_rows_[slot.group - 1]))) return slot.group - 1;
      index = (index + 1) & mask_;
    }
  }

  void insert_rows() {
    if (build_.never_matches()) return;
    const TableView& table = *build_.table;
    const NullKeys null_keys(build_);
    std::vector<uint64_t> hashes(kBlockRows);
    std::vector<uint64_t> words(kBlockRows, 0);
    for (size_t b = 0; b < table.batches.size(); ++b) {
      const int64_t start = table.starts[b];
      for (int64_t begin = 0; begin < table.batches[b].num_rows; begin += kBlockRows) {
        const int64_t end = std::min(begin + kBlockRows, table.batches[b].num_rows);
        build_.hashers[b]->hash(begin, end, hashes.data());
        if (words_) load_words(build_.key(b, 0), begin, end, words.data());
        for (int64_t i = 0; i < end - begin; ++i) prefetch(hashes[static_cast<size_t>(i)]);
        for (int64_t row = begin; row < end; ++row) {
          if (null_keys.any(b) && null_keys(b, row)) continue;
          const size_t i = static_cast<size_t>(row - begin);
          filter_.add(hashes[i]);
          group_of_[static_cast<size_t>(start + row)] = find_or_insert(hashes[i], words[i], b, row);
        }
      }
    }
  }

  // Each group's rows, grouped by a stable counting sort (rows keep build order within a group). When
  // every key is unique and no key is NULL, group g is row g and no index is needed.
  void index_rows() {
    unique_ = group_count_ == group_of_.size();
    if (unique_) {
      group_rows_ = std::move(first_rows_);
      return;
    }
    group_start_.assign(group_count_ + 1, 0);
    for (uint32_t group : group_of_) {
      if (group != kNoGroup) ++group_start_[group + 1];
    }
    for (size_t g = 0; g < group_count_; ++g) group_start_[g + 1] += group_start_[g];
    group_rows_.resize(static_cast<size_t>(group_start_.back()));
    std::vector<int64_t> next(group_start_.begin(), group_start_.end() - 1);
    const TableView& table = *build_.table;
    for (size_t b = 0; b < table.batches.size(); ++b) {
      for (int64_t row = 0; row < table.batches[b].num_rows; ++row) {
        const uint32_t group = group_of_[static_cast<size_t>(table.starts[b] + row)];
        if (group != kNoGroup) group_rows_[static_cast<size_t>(next[group]++)] = row_ref(b, row);
      }
    }
  }

  const Side& build_;
  const bool words_;
  KeyFilter filter_;
  std::vector<Slot> slots_;
  size_t mask_;
  size_t group_count_ = 0;
  bool unique_ = false;
  std::vector<uint32_t> group_of_;    // [build row]: its group, kNoGroup for a NULL key
  std::vector<int64_t> first_rows_;   // [group]: its first row (reference), while inserting
  std::vector<int64_t> group_start_;  // [group]: where its rows start in group_rows_ (keys not unique)
  std::vector<int64_t> group_rows_;   // row references, by group
};

// The rows one side contributes to the output: row rows[i] of batch source[i] (of batch `only` for
// every row if it is set), or NULLs where rows[i] is negative.
struct Picks {
  int64_t only = -1;
  std::vector<uint32_t> source;
  std::vector<int64_t> rows;

  void clear(int64_t batch) {
    only = batch;
    source.clear();
    rows.clear();
  }
  void add(uint32_t batch, int64_t row) {
    if (only < 0) source.push_back(batch);
    rows.push_back(row);
  }
  void add_ref(int64_t ref) { add(batch_of_ref(ref), row_of_ref(ref)); }
  void add_null() { add(0, -1); }
  size_t source_of(int64_t i) const { return only >= 0 ? static_cast<size_t>(only) : source[static_cast<size_t>(i)]; }
};

// Calls visit(probe row, group) for every row of probe batch `b` (group kNoGroup: no match).
template <typename Visit>
void probe_batch(const Side& probe, const BuildTable& table, bool words, size_t b, Visit visit) {
  const int64_t rows = probe.table->batches[b].num_rows;
  if (probe.never_matches() || table.groups() == 0) {
    for (int64_t row = 0; row < rows; ++row) visit(row, kNoGroup);
    return;
  }
  const NullKeys null_keys(probe);
  uint64_t hashes[kBlockRows];
  uint64_t key_words[kBlockRows] = {};
  bool passed[kBlockRows];
  for (int64_t begin = 0; begin < rows; begin += kBlockRows) {
    const int64_t end = std::min(begin + kBlockRows, rows);
    probe.hashers[b]->hash(begin, end, hashes);
    if (words) load_words(probe.key(b, 0), begin, end, key_words);
    for (int64_t i = 0; i < end - begin; ++i) {
      passed[i] = table.may_contain(hashes[i]);
      if (passed[i]) table.prefetch(hashes[i]);
    }
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row - begin;
      if (!passed[i] || (null_keys.any(b) && null_keys(b, row))) {
        visit(row, kNoGroup);
        continue;
      }
      visit(row, table.find(hashes[i], key_words[i], probe, b, row));
    }
  }
}

// One output column: the same column of every batch of a side, picked row by row.
struct OutputColumn {
  std::vector<const ColumnView*> sources;
  const Picks* picks;
};

// Output row ranges [bounds[i], bounds[i + 1]) in which no 32-bit-offset string column exceeds 2 GiB.
std::vector<int64_t> piece_bounds(const std::vector<OutputColumn>& columns, int64_t count) {
  std::vector<const OutputColumn*> binary;
  for (const OutputColumn& column : columns) {
    if (column.sources.front()->layout == Layout::kBinary) binary.push_back(&column);
  }
  auto size_of = [](const OutputColumn& column, int64_t i) {
    const int64_t row = column.picks->rows[static_cast<size_t>(i)];
    return row < 0 ? 0 : value_size(*column.sources[column.picks->source_of(i)], row);
  };
  bool fits = true;
  for (const OutputColumn* column : binary) {
    int64_t total = 0;
    for (int64_t i = 0; i < count && total <= kMaxBinaryBytes; ++i) total += size_of(*column, i);
    fits = fits && total <= kMaxBinaryBytes;
  }
  std::vector<int64_t> bounds{0};
  if (!fits) {
    std::vector<int64_t> bytes(binary.size(), 0);
    for (int64_t i = 0; i < count; ++i) {
      bool cut = false;
      for (size_t c = 0; c < binary.size(); ++c) cut = cut || bytes[c] + size_of(*binary[c], i) > kMaxBinaryBytes;
      if (cut && i > bounds.back()) {
        bounds.push_back(i);
        std::fill(bytes.begin(), bytes.end(), 0);
      }
      for (size_t c = 0; c < binary.size(); ++c) bytes[c] += size_of(*binary[c], i);
    }
  }
  bounds.push_back(count);
  return bounds;
}

// Appends the batches of the picked rows to `batches`.
void assemble(const std::vector<OutputColumn>& columns, int64_t count, std::vector<OutputArray>* batches) {
  const std::vector<int64_t> bounds = piece_bounds(columns, count);
  for (size_t p = 0; p + 1 < bounds.size(); ++p) {
    const int64_t begin = bounds[p];
    const int64_t rows = bounds[p + 1] - begin;
    std::vector<OutputArray> arrays;
    for (const OutputColumn& column : columns) {
      if (column.sources.front()->null_type) {
        OutputArray nulls;
        nulls.length = rows;
        nulls.null_count = rows;
        arrays.push_back(std::move(nulls));
        continue;
      }
      const Picks& picks = *column.picks;
      const bool large = column.sources.front()->layout == Layout::kLargeBinary;  // the output keeps the input's type
      if (picks.only >= 0) {
        arrays.push_back(gather_rows({column.sources[static_cast<size_t>(picks.only)]}, nullptr, picks.rows.data() + begin, rows, large));
      } else {
        arrays.push_back(gather_rows(column.sources, picks.source.data() + begin, picks.rows.data() + begin, rows, large));
      }
    }
    batches->push_back(make_struct(rows, std::move(arrays)));
  }
}

Side make_side(const TableView& table, const std::vector<std::string>& keys, const char* role) {
  Side side{&table, resolve_keys(table.first(), keys), {}};
  for (const BatchView& batch : table.batches) {
    for (const ColumnView& column : batch.columns) {
      if (!column.null_type) require_supported(column, role);
    }
  }
  if (!side.never_matches()) side.hashers = make_hashers(table, side.keys, kJoinHashSeed, role);
  return side;
}

}  // namespace

std::vector<OutputArray> hash_join(const TableView& left, const std::vector<std::string>& left_keys,
                                   const TableView& right, const std::vector<std::string>& right_keys, JoinKind kind,
                                   bool build_right) {
  if (left_keys.size() != right_keys.size()) {
    throw InvalidArgument("a join needs as many left keys as right keys (" + std::to_string(left_keys.size()) + " and " +
                          std::to_string(right_keys.size()) + ")");
  }
  Side left_side = make_side(left, left_keys, "left join");
  Side right_side = make_side(right, right_keys, "right join");
  for (size_t k = 0; k < left_side.keys.size(); ++k) {
    const ColumnView& a = left_side.key(0, k);
    const ColumnView& b = right_side.key(0, k);
    if (!a.null_type && !b.null_type && !same_key_type(a, b)) {
      throw InvalidArgument("join keys '" + a.name + "' and '" + b.name + "' have different types (" + a.format + ", " +
                            b.format + ")");
    }
  }
  const Side& build = build_right ? right_side : left_side;
  const Side& probe = build_right ? left_side : right_side;
  const bool words = word_key(build, probe);
  const BuildTable table(build, words);

  const bool filtering = kind == JoinKind::kSemi || kind == JoinKind::kAnti;
  const bool keep_probe = kind == JoinKind::kFull || (kind == JoinKind::kLeft && build_right) ||
                          (kind == JoinKind::kRight && !build_right);
  const bool keep_build = kind == JoinKind::kFull || (kind == JoinKind::kLeft && !build_right) ||
                          (kind == JoinKind::kRight && build_right);
  // Pairs and probe rows are emitted one probe batch at a time: the picks stay small and are reused,
  // and the probe side's columns are gathered from one source.
  Picks probe_picks, build_picks;
  std::vector<OutputColumn> columns;
  auto add_columns = [&](const TableView& side, const Picks& picks) {
    for (int c = 0; c < side.num_columns(); ++c) {
      OutputColumn column{{}, &picks};
      for (const BatchView& batch : side.batches) column.sources.push_back(&batch.columns[static_cast<size_t>(c)]);
      columns.push_back(std::move(column));
    }
  };
  add_columns(left, build_right ? probe_picks : build_picks);
  if (!filtering) add_columns(right, build_right ? build_picks : probe_picks);
  std::vector<OutputArray> batches;
  auto flush = [&]() {
    const size_t count = (build_right ? probe_picks : build_picks).rows.size();
    if (count > 0) assemble(columns, static_cast<int64_t>(count), &batches);
  };

  std::vector<uint8_t> matched(table.groups(), 0);  // groups that met a probe row
  const int64_t* build_rows = table.rows();
  for (size_t b = 0; b < probe.table->batches.size(); ++b) {
    const uint32_t batch = static_cast<uint32_t>(b);
    probe_picks.clear(batch);
    build_picks.clear(-1);
    probe_batch(probe, table, words, b, [&](int64_t row, uint32_t group) {
      if (filtering) {
        if (!build_right) {
          if (group != kNoGroup) matched[group] = 1;
        } else if ((group != kNoGroup) == (kind == JoinKind::kSemi)) {
          probe_picks.add(batch, row);
        }
        return;
      }
      if (group == kNoGroup) {
        if (keep_probe) {
          probe_picks.add(batch, row);
          build_picks.add_null();
        }
        return;
      }
      if (keep_build) matched[group] = 1;
      for (int64_t i = table.group_start(group); i < table.group_end(group); ++i) {
        probe_picks.add(batch, row);
        build_picks.add_ref(build_rows[i]);
      }
    });
    if (!filtering || build_right) flush();
  }

  // Build rows in build order: those of a semi or anti join built on the left, unmatched ones of an
  // outer join.
  const TableView& build_input = *build.table;
  auto each_build_row = [&](auto body) {
    for (size_t b = 0; b < build_input.batches.size(); ++b) {
      for (int64_t row = 0; row < build_input.batches[b].num_rows; ++row) {
        body(static_cast<uint32_t>(b), row, table.group_of(build_input.starts[b] + row));
      }
    }
  };
  probe_picks.clear(0);
  build_picks.clear(-1);
  if (filtering && !build_right) {
    each_build_row([&](uint32_t b, int64_t row, uint32_t group) {
      if ((group != kNoGroup && matched[group]) == (kind == JoinKind::kSemi)) build_picks.add(b, row);
    });
  }
  if (keep_build) {
    each_build_row([&](uint32_t b, int64_t row, uint32_t group) {
      if (group == kNoGroup || !matched[group]) {
        probe_picks.add_null();
        build_picks.add(b, row);
      }
    });
  }
  flush();
  return batches;
}

}  // namespace sabot
