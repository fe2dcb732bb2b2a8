#include "aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <type_traits>

#include "errors.h"
#include "hash.h"
#include "partition.h"

namespace sabot {
namespace {

// ---------------------------------------------------------------------------------------------
// The plan: primitive accumulations over input columns, and result columns built from them.

enum class Primitive { kCount, kSum, kMin, kMax };

struct PrimitiveOp {
  Primitive kind;
  int input;  // column index in the input batch
};

struct ResultPlan {
  std::string name;
  int primitive;
  int divisor = -1;  // mean: primitive holding the count to divide by
};

struct Plan {
  std::vector<int> key_columns;
  std::vector<PrimitiveOp> primitives;
  std::vector<ResultPlan> results;
};

bool is_numeric(const ColumnView& column) {
  switch (column.layout) {
    case Layout::kSignedInt:
    case Layout::kUnsignedInt:
    case Layout::kFloat32:
    case Layout::kFloat64:
      return true;
    default:
      return false;
  }
}

int add_primitive(const BatchView& input, Plan* plan, Primitive kind, const std::string& column,
                  const std::string& function, const char* role) {
  const int index = input.column_index(column, role);
  const ColumnView& view = input.columns[static_cast<size_t>(index)];
  require_supported(view, role);
  if (kind != Primitive::kCount && !is_numeric(view)) {
    throw UnsupportedType(function + " of column '" + column + "' is not supported for its type (format '" +
                          view.format + "'): expected an integer or floating-point column");
  }
  // sum and mean of one column share their sum (and count and mean their count).
  for (size_t i = 0; i < plan->primitives.size(); ++i) {
    if (plan->primitives[i].kind == kind && plan->primitives[i].input == index) return static_cast<int>(i);
  }
  plan->primitives.push_back({kind, index});
  return static_cast<int>(plan->primitives.size()) - 1;
}

Plan make_plan(const BatchView& input, const std::vector<std::string>& keys,
               const std::vector<AggregateSpec>& aggregations, AggregateStage stage) {
  Plan plan;
  plan.key_columns = resolve_keys(input, keys);
  for (int key : plan.key_columns) require_supported(input.columns[static_cast<size_t>(key)], "key");
  std::set<std::string> names(keys.begin(), keys.end());
  if (names.size() != keys.size()) throw InvalidArgument("keys name the same column twice");

  auto add_result = [&](const std::string& name, int primitive, int divisor) {
    if (!names.insert(name).second) {
      throw InvalidArgument("output column '" + name + "' is produced twice (or is also a key)");
    }
    plan.results.push_back({name, primitive, divisor});
  };
  for (const AggregateSpec& spec : aggregations) {
    const std::string& f = spec.function;
    if (f != "count" && f != "sum" && f != "min" && f != "max" && f != "mean") {
      throw InvalidArgument("unknown aggregate function '" + f + "' for output '" + spec.output_name +
                            "' (expected count, sum, min, max or mean)");
    }
    if (spec.output_name.empty()) throw InvalidArgument("aggregation of '" + spec.column + "' has an empty output name");
    const std::string& as = spec.output_name;
    if (stage == AggregateStage::kFinal) {
      // Partial states are merged: counts and sums add up, mins and maxes reduce.
      const char* role = "partial state";
      if (f == "count") {
        add_result(as, add_primitive(input, &plan, Primitive::kSum, as + "__count", f, role), -1);
      } else if (f == "sum") {
        add_result(as, add_primitive(input, &plan, Primitive::kSum, as + "__sum", f, role), -1);
      } else if (f == "min") {
        add_result(as, add_primitive(input, &plan, Primitive::kMin, as + "__min", f, role), -1);
      } else if (f == "max") {
        add_result(as, add_primitive(input, &plan, Primitive::kMax, as + "__max", f, role), -1);
      } else {
        const int sum = add_primitive(input, &plan, Primitive::kSum, as + "__sum", f, role);
        add_result(as, sum, add_primitive(input, &plan, Primitive::kSum, as + "__count", f, role));
      }
      continue;
    }
    const char* role = "aggregation input";
    const bool partial = stage == AggregateStage::kPartial;
    if (f == "count") {
      add_result(partial ? as + "__count" : as, add_primitive(input, &plan, Primitive::kCount, spec.column, f, role), -1);
    } else if (f == "sum") {
      add_result(partial ? as + "__sum" : as, add_primitive(input, &plan, Primitive::kSum, spec.column, f, role), -1);
    } else if (f == "min") {
      add_result(partial ? as + "__min" : as, add_primitive(input, &plan, Primitive::kMin, spec.column, f, role), -1);
    } else if (f == "max") {
      add_result(partial ? as + "__max" : as, add_primitive(input, &plan, Primitive::kMax, spec.column, f, role), -1);
    } else {
      const int sum = add_primitive(input, &plan, Primitive::kSum, spec.column, f, role);
      const int count = add_primitive(input, &plan, Primitive::kCount, spec.column, f, role);
      if (partial) {
        add_result(as + "__sum", sum, -1);
        add_result(as + "__count", count, -1);
      } else {
        add_result(as, sum, count);
      }
    }
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Accumulators: one per primitive per hash table, indexed by group id.

class Accumulator {
 public:
  virtual ~Accumulator() = default;
  virtual std::unique_ptr<Accumulator> make_empty() const = 0;
  virtual void resize(size_t groups) = 0;
  // Adds rows [begin, end) of `column`; group_ids[i] is the group of row begin + i.
  virtual void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) = 0;
  // Folds group g of `other` into group group_map[g] of this one.
  virtual void merge_from(const Accumulator& other, const uint32_t* group_map) = 0;
  virtual OutputArray finish() const = 0;
  virtual bool has_value(size_t group) const = 0;
  virtual double value_as_double(size_t group) const = 0;
};

// Runs `body` with the null check resolved at compile time.
template <typename Body>
void for_each_valid_row(const ColumnView& column, int64_t begin, int64_t end, Body body) {
  if (column.has_nulls) {
    for (int64_t row = begin; row < end; ++row) {
      if (bit_is_set(column.validity, column.offset + row)) body(row);
    }
  } else {
    for (int64_t row = begin; row < end; ++row) body(row);
  }
}

OutputArray values_with_presence(std::shared_ptr<uint8_t> values, const std::vector<uint8_t>& present) {
  OutputArray out;
  out.length = static_cast<int64_t>(present.size());
  auto validity = allocate_buffer((out.length + 7) / 8);
  std::memset(validity.get(), 0, static_cast<size_t>((out.length + 7) / 8));
  int64_t nulls = 0;
  for (int64_t g = 0; g < out.length; ++g) {
    if (present[g]) {
      validity.get()[g >> 3] |= static_cast<uint8_t>(1u << (g & 7));
    } else {
      ++nulls;
    }
  }
  out.null_count = nulls;
  out.buffers = {nulls > 0 ? std::move(validity) : nullptr, std::move(values)};
  return out;
}

class CountAccumulator final : public Accumulator {
 public:
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<CountAccumulator>(); }
  void resize(size_t groups) override { counts_.resize(groups, 0); }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    int64_t* counts = counts_.data();
    for_each_valid_row(column, begin, end, [&](int64_t row) { ++counts[group_ids[row - begin]]; });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const CountAccumulator&>(other).counts_;
    for (size_t g = 0; g < source.size(); ++g) counts_[group_map[g]] += source[g];
  }
  OutputArray finish() const override {
    OutputArray out;
    out.length = static_cast<int64_t>(counts_.size());
    auto values = allocate_buffer(out.length * 8);
    std::memcpy(values.get(), counts_.data(), counts_.size() * 8);
    out.buffers = {nullptr, std::move(values)};
    return out;
  }
  bool has_value(size_t) const override { return true; }
  double value_as_double(size_t group) const override { return static_cast<double>(counts_[group]); }

 private:
  std::vector<int64_t> counts_;
};

// Sums In values into Total (int64 with overflow checks, or double).
template <typename In, typename Total>
class SumAccumulator final : public Accumulator {
 public:
  explicit SumAccumulator(std::string column_name) : column_name_(std::move(column_name)) {}
  std::unique_ptr<Accumulator> make_empty() const override {
    return std::make_unique<SumAccumulator>(column_name_);
  }
  void resize(size_t groups) override {
    sums_.resize(groups, 0);
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(In));
    Total* sums = sums_.data();
    uint8_t* present = present_.data();
    for_each_valid_row(column, begin, end, [&](int64_t row) {
      const uint32_t g = group_ids[row - begin];
      add(sums[g], load_unaligned<In>(values + row * static_cast<int64_t>(sizeof(In))));
      present[g] = 1;
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const SumAccumulator&>(other);
    for (size_t g = 0; g < source.sums_.size(); ++g) {
      if (!source.present_[g]) continue;
      add(sums_[group_map[g]], source.sums_[g]);
      present_[group_map[g]] = 1;
    }
  }
  OutputArray finish() const override {
    auto values = allocate_buffer(static_cast<int64_t>(sums_.size()) * 8);
    std::memcpy(values.get(), sums_.data(), sums_.size() * 8);
    return values_with_presence(std::move(values), present_);
  }
  bool has_value(size_t group) const override { return present_[group] != 0; }
  double value_as_double(size_t group) const override { return static_cast<double>(sums_[group]); }

 private:
  template <typename Value>
  void add(Total& total, Value value) const {
    if constexpr (std::is_floating_point<Total>::value) {
      total += static_cast<Total>(value);
    } else {
      if constexpr (std::is_same<Value, uint64_t>::value) {
        if (value > static_cast<uint64_t>(INT64_MAX)) overflow();
      }
      if (__builtin_add_overflow(total, static_cast<int64_t>(value), &total)) overflow();
    }
  }
  [[noreturn]] void overflow() const {
    throw Overflow("sum of column '" + column_name_ + "' overflows int64");
  }

  std::string column_name_;
  std::vector<Total> sums_;
  std::vector<uint8_t> present_;
};

// Min or max of T values; NaN values are skipped like nulls.
template <typename T, bool kIsMin>
class ExtremeAccumulator final : public Accumulator {
 public:
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<ExtremeAccumulator>(); }
  void resize(size_t groups) override {
    values_.resize(groups, T{});
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(T));
    for_each_valid_row(column, begin, end, [&](int64_t row) {
      offer(group_ids[row - begin], load_unaligned<T>(values + row * static_cast<int64_t>(sizeof(T))));
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const ExtremeAccumulator&>(other);
    for (size_t g = 0; g < source.values_.size(); ++g) {
      if (source.present_[g]) offer(group_map[g], source.values_[g]);
    }
  }
  OutputArray finish() const override {
    auto values = allocate_buffer(static_cast<int64_t>(values_.size() * sizeof(T)));
    std::memcpy(values.get(), values_.data(), values_.size() * sizeof(T));
    return values_with_presence(std::move(values), present_);
  }
  bool has_value(size_t group) const override { return present_[group] != 0; }
  double value_as_double(size_t group) const override { return static_cast<double>(values_[group]); }

 private:
  void offer(uint32_t g, T value) {
    if constexpr (std::is_floating_point<T>::value) {
      if (value != value) return;
    }
    if (!present_[g] || (kIsMin ? value < values_[g] : value > values_[g])) {
      values_[g] = value;
      present_[g] = 1;
    }
  }

  std::vector<T> values_;
  std::vector<uint8_t> present_;
};

// Calls make(T{}) with T the C++ type of a numeric column.
template <typename Make>
std::unique_ptr<Accumulator> with_numeric_type(const ColumnView& column, Make make) {
  switch (column.layout) {
    case Layout::kSignedInt:
      switch (column.byte_width) {
        case 1: return make(int8_t{});
        case 2: return make(int16_t{});
        case 4: return make(int32_t{});
        default: return make(int64_t{});
      }
    case Layout::kUnsignedInt:
      switch (column.byte_width) {
        case 1: return make(uint8_t{});
        case 2: return make(uint16_t{});
        case 4: return make(uint32_t{});
        default: return make(uint64_t{});
      }
    case Layout::kFloat32: return make(float{});
    default: return make(double{});
  }
}

std::unique_ptr<Accumulator> make_accumulator(const PrimitiveOp& op, const ColumnView& column) {
  switch (op.kind) {
    case Primitive::kCount:
      return std::make_unique<CountAccumulator>();
    case Primitive::kSum:
      return with_numeric_type(column, [&](auto type) -> std::unique_ptr<Accumulator> {
        using T = decltype(type);
        using Total = typename std::conditional<std::is_floating_point<T>::value, double, int64_t>::type;
        return std::make_unique<SumAccumulator<T, Total>>(column.name);
      });
    case Primitive::kMin:
      return with_numeric_type(column, [](auto type) -> std::unique_ptr<Accumulator> {
        return std::make_unique<ExtremeAccumulator<decltype(type), true>>();
      });
    case Primitive::kMax:
      return with_numeric_type(column, [](auto type) -> std::unique_ptr<Accumulator> {
        return std::make_unique<ExtremeAccumulator<decltype(type), false>>();
      });
  }
  return nullptr;
}

using Accumulators = std::vector<std::unique_ptr<Accumulator>>;

Accumulators empty_copies(const Accumulators& prototypes) {
  Accumulators copies;
  for (const auto& prototype : prototypes) copies.push_back(prototype->make_empty());
  return copies;
}

// ---------------------------------------------------------------------------------------------
// Key equality consistent with the hash: nulls equal nulls, floats compare normalized (-0.0 == 0.0,
// NaN == NaN), dictionary values compare decoded.

bool values_equal(const ColumnView& column, int64_t a, int64_t b) {
  const bool valid_a = column.is_valid(a);
  const bool valid_b = column.is_valid(b);
  if (!valid_a || !valid_b) return valid_a == valid_b;
  switch (column.layout) {
    case Layout::kBool:
      return bit_is_set(column.values, column.offset + a) == bit_is_set(column.values, column.offset + b);
    case Layout::kFloat32:
      return normalized_double_bits(load_unaligned<float>(column.values + (column.offset + a) * 4)) ==
             normalized_double_bits(load_unaligned<float>(column.values + (column.offset + b) * 4));
    case Layout::kFloat64:
      return normalized_double_bits(load_unaligned<double>(column.values + (column.offset + a) * 8)) ==
             normalized_double_bits(load_unaligned<double>(column.values + (column.offset + b) * 8));
    case Layout::kBinary:
    case Layout::kLargeBinary: {
      const int64_t begin_a = column.value_begin(a);
      const int64_t begin_b = column.value_begin(b);
      const int64_t size = column.value_end(a) - begin_a;
      return size == column.value_end(b) - begin_b &&
             std::memcmp(column.values + begin_a, column.values + begin_b, static_cast<size_t>(size)) == 0;
    }
    case Layout::kDictionary: {
      const int64_t index_a = column.dictionary_index(a);
      const int64_t index_b = column.dictionary_index(b);
      return index_a == index_b || values_equal(*column.dictionary, index_a, index_b);
    }
    default: {
      const int64_t width = column.byte_width;
      return std::memcmp(column.values + (column.offset + a) * width, column.values + (column.offset + b) * width,
                         static_cast<size_t>(width)) == 0;
    }
  }
}

struct GenericKeyEqual {
  std::vector<const ColumnView*> keys;
  bool operator()(int64_t a, int64_t b) const {
    for (const ColumnView* key : keys) {
      if (!values_equal(*key, a, b)) return false;
    }
    return true;
  }
};

// The common case, one integer key without nulls: compare the words directly.
template <typename Word>
struct WordKeyEqual {
  const uint8_t* values;  // already advanced by the column offset
  bool operator()(int64_t a, int64_t b) const {
    return load_unaligned<Word>(values + a * static_cast<int64_t>(sizeof(Word))) ==
           load_unaligned<Word>(values + b * static_cast<int64_t>(sizeof(Word)));
  }
};

// ---------------------------------------------------------------------------------------------
// Open-addressing hash table from key to dense group id. Each slot packs the hash's high 32 bits
// (a cheap filter before comparing keys) with group id + 1 (0 marks an empty slot); probing starts at
// the hash's low bits, independent of the high bits the radix partitioning used.

class GroupTable {
 public:
  explicit GroupTable(size_t expected_groups) {
    size_t capacity = 64;
    while (capacity < expected_groups * 2) capacity *= 2;
    slots_.assign(capacity, 0);
    mask_ = capacity - 1;
  }

  template <typename Equal>
  uint32_t find_or_insert(uint64_t hash, int64_t row, const Equal& equal) {
    const uint64_t tag = hash & kTagMask;
    size_t index = hash & mask_;
    while (true) {
      const uint64_t slot = slots_[index];
      if (slot == 0) return insert(index, tag, hash, row);
      if ((slot & kTagMask) == tag) {
        const uint32_t group = static_cast<uint32_t>(slot) - 1;
        if (equal(row, group_rows_[group])) return group;
      }
      index = (index + 1) & mask_;
    }
  }

  size_t size() const { return group_rows_.size(); }
  const std::vector<int64_t>& group_rows() const { return group_rows_; }
  const std::vector<uint64_t>& group_hashes() const { return group_hashes_; }

 private:
  static constexpr uint64_t kTagMask = 0xFFFFFFFF00000000ULL;

  uint32_t insert(size_t index, uint64_t tag, uint64_t hash, int64_t row) {
    const uint32_t group = static_cast<uint32_t>(group_rows_.size());
    if (group == UINT32_MAX - 1) throw InvalidArgument("more than 2^32 - 2 groups");
    slots_[index] = tag | (group + 1);
    group_rows_.push_back(row);
    group_hashes_.push_back(hash);
    if (group_rows_.size() * 2 > slots_.size()) grow();
    return group;
  }

  void grow() {
    std::vector<uint64_t> slots(slots_.size() * 2, 0);
    const size_t mask = slots.size() - 1;
    for (uint64_t slot : slots_) {
      if (slot == 0) continue;
      size_t index = group_hashes_[static_cast<uint32_t>(slot) - 1] & mask;
      while (slots[index] != 0) index = (index + 1) & mask;
      slots[index] = slot;
    }
    slots_.swap(slots);
    mask_ = mask;
  }

  std::vector<uint64_t> slots_;
  size_t mask_;
  std::vector<int64_t> group_rows_;
  std::vector<uint64_t> group_hashes_;
};

// Calls body(equal) with the fastest equality functor for these key columns.
template <typename Body>
void with_key_equal(const std::vector<const ColumnView*>& keys, Body body) {
  if (keys.size() == 1 && !keys[0]->has_nulls &&
      (keys[0]->layout == Layout::kSignedInt || keys[0]->layout == Layout::kUnsignedInt)) {
    const ColumnView& key = *keys[0];
    const uint8_t* values = key.values + key.offset * key.byte_width;
    if (key.byte_width == 8) return body(WordKeyEqual<uint64_t>{values});
    if (key.byte_width == 4) return body(WordKeyEqual<uint32_t>{values});
  }
  body(GenericKeyEqual{keys});
}

void assign_groups(GroupTable& table, const std::vector<const ColumnView*>& keys, const uint64_t* hashes,
                   int64_t begin, int64_t end, uint32_t* group_ids) {
  with_key_equal(keys, [&](const auto& equal) {
    for (int64_t row = begin; row < end; ++row) {
      group_ids[row - begin] = table.find_or_insert(hashes[row - begin], row, equal);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Strategies. Both produce the groups' representative input rows and one accumulator per primitive.

struct Grouped {
  std::vector<int64_t> group_rows;  // a row of the input holding each group's key
  Accumulators accumulators;
};

std::vector<const ColumnView*> key_views(const BatchView& input, const Plan& plan) {
  std::vector<const ColumnView*> keys;
  for (int key : plan.key_columns) keys.push_back(&input.columns[static_cast<size_t>(key)]);
  return keys;
}

// Distinct keys in the first rows: decides between the strategies.
size_t sample_groups(const BatchView& input, const Plan& plan, const KeyHasher& hasher, int64_t sample_rows) {
  std::vector<uint64_t> hashes(static_cast<size_t>(sample_rows));
  std::vector<uint32_t> group_ids(static_cast<size_t>(sample_rows));
  hasher.hash(0, sample_rows, hashes.data());
  GroupTable table(1024);
  assign_groups(table, key_views(input, plan), hashes.data(), 0, sample_rows, group_ids.data());
  return table.size();
}

Grouped aggregate_by_morsels(const BatchView& input, const Plan& plan, const KeyHasher& hasher,
                             const Accumulators& prototypes, const KernelRunner& runner, double row_bytes) {
  struct Local {
    std::unique_ptr<GroupTable> table;
    Accumulators accumulators;
  };
  const std::vector<MorselRange> morsels = runner.split(input.num_rows, row_bytes);
  const std::vector<const ColumnView*> keys = key_views(input, plan);
  std::vector<Local> locals(morsels.size());
  runner.run(morsels.size(), [&](size_t m) {
    const MorselRange& morsel = morsels[m];
    std::vector<uint64_t> hashes(static_cast<size_t>(morsel.length));
    std::vector<uint32_t> group_ids(static_cast<size_t>(morsel.length));
    hasher.hash(morsel.offset, morsel.offset + morsel.length, hashes.data());
    Local& local = locals[m];
    local.table = std::make_unique<GroupTable>(1024);
    assign_groups(*local.table, keys, hashes.data(), morsel.offset, morsel.offset + morsel.length,
                  group_ids.data());
    local.accumulators = empty_copies(prototypes);
    for (size_t i = 0; i < plan.primitives.size(); ++i) {
      local.accumulators[i]->resize(local.table->size());
      local.accumulators[i]->update(input.columns[static_cast<size_t>(plan.primitives[i].input)], morsel.offset,
                                    morsel.offset + morsel.length, group_ids.data());
    }
  });
  // Merging in morsel order keeps groups in order of first appearance.
  GroupTable table(1024);
  Grouped grouped;
  grouped.accumulators = empty_copies(prototypes);
  std::vector<uint32_t> group_map;
  with_key_equal(keys, [&](const auto& equal) {
    for (Local& local : locals) {
      const size_t groups = local.table->size();
      group_map.resize(groups);
      for (size_t g = 0; g < groups; ++g) {
        group_map[g] = table.find_or_insert(local.table->group_hashes()[g], local.table->group_rows()[g], equal);
      }
      for (size_t i = 0; i < prototypes.size(); ++i) {
        grouped.accumulators[i]->resize(table.size());
        grouped.accumulators[i]->merge_from(*local.accumulators[i], group_map.data());
      }
      local = Local{};  // free the morsel's table early
    }
  });
  grouped.group_rows = table.group_rows();
  return grouped;
}

Grouped aggregate_by_radix(const BatchView& input, const Plan& plan, const KeyHasher& hasher,
                           const Accumulators& prototypes, const KernelRunner& runner, double row_bytes,
                           uint32_t radix_partitions) {
  const int64_t rows = input.num_rows;
  if (rows >= static_cast<int64_t>(UINT32_MAX)) throw InvalidArgument("aggregate supports < 2^32 rows per call");
  // Carry the key and input columns, each row's hash and its row number through the partitioning.
  std::vector<int> carried = plan.key_columns;
  for (const PrimitiveOp& op : plan.primitives) {
    if (std::find(carried.begin(), carried.end(), op.input) == carried.end()) carried.push_back(op.input);
  }
  // Row hashes are recomputed per partition from the scattered keys (cheaper than scattering 8 more
  // bytes per row to every partition), except for dictionary keys, whose hasher precomputes the hashes
  // of the whole dictionary: those carry their hashes through the scatter.
  bool carry_hashes = false;
  for (int key : plan.key_columns) {
    carry_hashes = carry_hashes || input.columns[static_cast<size_t>(key)].layout == Layout::kDictionary;
  }
  std::vector<uint64_t> hashes(carry_hashes ? static_cast<size_t>(rows) : 0);
  const PartitionLayout layout = plan_partitions(
      rows, radix_partitions, runner.split(rows, row_bytes + 12),
      [&](int64_t begin, int64_t end, uint64_t* out) { hasher.hash(begin, end, out); },
      carry_hashes ? hashes.data() : nullptr, runner);
  std::vector<uint32_t> row_numbers(static_cast<size_t>(rows));
  runner.run(layout.morsels.size(), [&](size_t m) {
    const MorselRange& morsel = layout.morsels[m];
    for (int64_t row = morsel.offset; row < morsel.offset + morsel.length; ++row) row_numbers[row] = static_cast<uint32_t>(row);
  });
  ColumnView hash_column;
  hash_column.name = "<hash>";
  hash_column.layout = Layout::kUnsignedInt;
  hash_column.byte_width = 8;
  hash_column.values = reinterpret_cast<const uint8_t*>(hashes.data());
  ColumnView row_column = hash_column;
  row_column.name = "<row>";
  row_column.byte_width = 4;
  row_column.values = reinterpret_cast<const uint8_t*>(row_numbers.data());

  std::vector<const ColumnView*> to_scatter;
  for (int column : carried) to_scatter.push_back(&input.columns[static_cast<size_t>(column)]);
  if (carry_hashes) to_scatter.push_back(&hash_column);
  to_scatter.push_back(&row_column);
  std::vector<std::vector<OutputArray>> scattered = scatter_columns(to_scatter, layout, runner);  // [column][partition]
  const std::vector<OutputArray> part_rows = std::move(scattered.back());
  scattered.pop_back();
  std::vector<OutputArray> part_hashes;
  if (carry_hashes) {
    part_hashes = std::move(scattered.back());
    scattered.pop_back();
  }
  std::vector<uint64_t>().swap(hashes);
  std::vector<uint32_t>().swap(row_numbers);

  struct Part {
    std::vector<int64_t> group_rows;  // input rows
    Accumulators accumulators;
  };
  std::vector<Part> parts(radix_partitions);
  auto carried_index = [&](int column) {
    return static_cast<size_t>(std::find(carried.begin(), carried.end(), column) - carried.begin());
  };
  runner.run(radix_partitions, [&](size_t p) {
    const int64_t part_rows_count = layout.partition_rows[p];
    std::vector<ColumnView> views;
    for (size_t c = 0; c < carried.size(); ++c) {
      views.push_back(view_output(std::make_shared<OutputArray>(std::move(scattered[c][p])),
                                  input.columns[static_cast<size_t>(carried[c])]));
    }
    std::vector<const ColumnView*> keys;
    for (int key : plan.key_columns) keys.push_back(&views[carried_index(key)]);
    std::vector<uint64_t> recomputed;
    const uint64_t* hashes_of_part = nullptr;
    if (carry_hashes) {
      hashes_of_part = reinterpret_cast<const uint64_t*>(part_hashes[p].buffers[1].get());
    } else {
      BatchView part_view;
      part_view.num_rows = part_rows_count;
      std::vector<int> key_indices;
      for (int key : plan.key_columns) {
        key_indices.push_back(static_cast<int>(part_view.columns.size()));
        part_view.columns.push_back(views[carried_index(key)]);
      }
      recomputed.resize(static_cast<size_t>(part_rows_count));
      KeyHasher(part_view, key_indices, kDefaultHashSeed).hash(0, part_rows_count, recomputed.data());
      hashes_of_part = recomputed.data();
    }
    const uint32_t* rows_of_part = reinterpret_cast<const uint32_t*>(part_rows[p].buffers[1].get());

    GroupTable table(static_cast<size_t>(part_rows_count / 8 + 1));
    std::vector<uint32_t> group_ids(static_cast<size_t>(part_rows_count));
    assign_groups(table, keys, hashes_of_part, 0, part_rows_count, group_ids.data());
    Part& part = parts[p];
    part.accumulators = empty_copies(prototypes);
    for (size_t i = 0; i < plan.primitives.size(); ++i) {
      part.accumulators[i]->resize(table.size());
      part.accumulators[i]->update(views[carried_index(plan.primitives[i].input)], 0, part_rows_count,
                                   group_ids.data());
    }
    for (int64_t local_row : table.group_rows()) part.group_rows.push_back(rows_of_part[local_row]);
  });

  // Partitions hold disjoint groups: concatenate them, each into its own range of group ids.
  std::vector<size_t> group_base(radix_partitions + 1, 0);
  for (uint32_t p = 0; p < radix_partitions; ++p) group_base[p + 1] = group_base[p] + parts[p].group_rows.size();
  Grouped grouped;
  grouped.accumulators = empty_copies(prototypes);
  for (auto& accumulator : grouped.accumulators) accumulator->resize(group_base[radix_partitions]);
  grouped.group_rows.resize(group_base[radix_partitions]);
  runner.run(radix_partitions, [&](size_t p) {
    const size_t groups = parts[p].group_rows.size();
    std::vector<uint32_t> group_map(groups);
    for (size_t g = 0; g < groups; ++g) {
      group_map[g] = static_cast<uint32_t>(group_base[p] + g);
      grouped.group_rows[group_base[p] + g] = parts[p].group_rows[g];
    }
    for (size_t i = 0; i < prototypes.size(); ++i) {
      grouped.accumulators[i]->merge_from(*parts[p].accumulators[i], group_map.data());
    }
    parts[p] = Part{};
  });
  return grouped;
}

OutputArray divide(const Accumulator& sums, const Accumulator& counts, size_t groups) {
  auto values = allocate_buffer(static_cast<int64_t>(groups) * 8);
  std::vector<uint8_t> present(groups, 0);
  double* means = reinterpret_cast<double*>(values.get());
  for (size_t g = 0; g < groups; ++g) {
    const double count = counts.value_as_double(g);
    present[g] = sums.has_value(g) && count > 0;
    means[g] = present[g] ? sums.value_as_double(g) / count : 0.0;
  }
  return values_with_presence(std::move(values), present);
}

// Groups per radix partition the strategy aims for: the partition's table and accumulators then stay
// in the per-core caches.
constexpr double kGroupsPerRadixPartition = 4096;
constexpr uint32_t kMaxRadixPartitions = 256;
constexpr int64_t kSampleRows = 1 << 16;
// Below this many distinct keys in the sample, per-morsel tables are small and merging them is cheap.
constexpr size_t kMorselStrategyMaxGroups = 4096;

}  // namespace

AggregateResult aggregate(const BatchView& input, const std::vector<std::string>& keys,
                          const std::vector<AggregateSpec>& aggregations, AggregateStage stage,
                          MorselExecutor* executor, int64_t morsel_bytes) {
  const Plan plan = make_plan(input, keys, aggregations, stage);
  const KernelRunner runner(executor, morsel_bytes);
  const KeyHasher hasher(input, plan.key_columns, kDefaultHashSeed);
  Accumulators prototypes;
  std::vector<int> used_columns = plan.key_columns;
  for (const PrimitiveOp& op : plan.primitives) {
    prototypes.push_back(make_accumulator(op, input.columns[static_cast<size_t>(op.input)]));
    used_columns.push_back(op.input);
  }
  const double row_bytes = estimated_row_bytes(input, used_columns);

  const int64_t sample_rows = std::min(input.num_rows, kSampleRows);
  const size_t sampled_groups = sample_groups(input, plan, hasher, sample_rows);
  Grouped grouped;
  if (sampled_groups <= kMorselStrategyMaxGroups) {
    grouped = aggregate_by_morsels(input, plan, hasher, prototypes, runner, row_bytes);
  } else {
    // Extrapolate the sample's distinct ratio to the whole input (an overestimate when keys repeat
    // beyond the sample, which only costs a few more, smaller partitions).
    const double estimated_groups = static_cast<double>(sampled_groups) * input.num_rows / sample_rows;
    uint32_t radix_partitions = 16;
    while (radix_partitions < kMaxRadixPartitions && radix_partitions * kGroupsPerRadixPartition < estimated_groups) {
      radix_partitions *= 2;
    }
    grouped = aggregate_by_radix(input, plan, hasher, prototypes, runner, row_bytes, radix_partitions);
  }

  const size_t groups = grouped.group_rows.size();
  AggregateResult result;
  std::vector<OutputArray> columns;
  for (size_t k = 0; k < plan.key_columns.size(); ++k) {
    const int key = plan.key_columns[k];
    columns.push_back(gather_column(input.columns[static_cast<size_t>(key)], grouped.group_rows.data(),
                                    static_cast<int64_t>(groups)));
    result.columns.push_back({keys[k], key, ""});
  }
  for (const ResultPlan& output : plan.results) {
    const PrimitiveOp& op = plan.primitives[static_cast<size_t>(output.primitive)];
    const Accumulator& accumulator = *grouped.accumulators[static_cast<size_t>(output.primitive)];
    if (output.divisor >= 0) {
      columns.push_back(divide(accumulator, *grouped.accumulators[static_cast<size_t>(output.divisor)], groups));
      result.columns.push_back({output.name, -1, "g"});
      continue;
    }
    columns.push_back(accumulator.finish());
    if (op.kind == Primitive::kMin || op.kind == Primitive::kMax) {
      result.columns.push_back({output.name, op.input, ""});
    } else if (op.kind == Primitive::kSum) {
      const Layout layout = input.columns[static_cast<size_t>(op.input)].layout;
      const bool floating = layout == Layout::kFloat32 || layout == Layout::kFloat64;
      result.columns.push_back({output.name, -1, floating ? "g" : "l"});
    } else {
      result.columns.push_back({output.name, -1, "l"});
    }
  }
  result.batch = make_struct(static_cast<int64_t>(groups), std::move(columns));
  return result;
}

}  // namespace sabot
