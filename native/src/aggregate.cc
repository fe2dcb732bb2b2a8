#include "aggregate.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <type_traits>

#include "errors.h"
#include "hash.h"
#include "partition.h"

namespace sabot {
namespace {

using int128 = __int128;

constexpr int128 power_of_ten_128(int exponent) {
  int128 value = 1;
  for (int i = 0; i < exponent; ++i) value *= 10;
  return value;
}

// 10^38 - 1: the largest magnitude of a decimal128(38, s) value.
constexpr int128 kMaxDecimal38 = power_of_ten_128(38) - 1;

// ---------------------------------------------------------------------------------------------
// Types: which columns each function reads.

bool is_integer_format(const std::string& format) {
  return format.size() == 1 && std::string("cCsSiIlL").find(format[0]) != std::string::npos;
}

bool is_float_layout(Layout layout) { return layout == Layout::kFloat32 || layout == Layout::kFloat64; }

// Values min and max can order: integer layouts (temporal types included), floats, decimal128, bool
// and string/binary.
bool is_orderable_flat(const ColumnView& column) {
  switch (column.layout) {
    case Layout::kBool:
    case Layout::kSignedInt:
    case Layout::kUnsignedInt:
    case Layout::kFloat32:
    case Layout::kFloat64:
    case Layout::kBinary:
    case Layout::kLargeBinary:
      return true;
    case Layout::kFixedBytes:
      return column.is_decimal128();
    default:
      return false;
  }
}

std::string decimal_format(int scale) { return "d:38," + std::to_string(scale); }

// ---------------------------------------------------------------------------------------------
// The plan: primitive accumulations (the states) and result columns built from them.

enum class Primitive { kCount, kCountAll, kSum, kMin, kMax };
enum class SumKind { kInt, kFloat, kDecimal };

// The state column of a primitive: shared by every aggregation that needs it, named after what it
// holds. The sum's kind is part of the name because an integer sum's state (128 bits, stored as
// decimal128(38, 0)) and a decimal(p, 0) sum's state have the same type but different results.
std::string state_name(Primitive kind, SumKind sum_kind, const std::string& column) {
  switch (kind) {
    case Primitive::kCount: return "__count(" + column + ")";
    case Primitive::kCountAll: return "__count(*)";
    case Primitive::kSum:
      switch (sum_kind) {
        case SumKind::kInt: return "__sum.int(" + column + ")";
        case SumKind::kFloat: return "__sum.float(" + column + ")";
        case SumKind::kDecimal: return "__sum.decimal(" + column + ")";
      }
      break;
    case Primitive::kMin: return "__min(" + column + ")";
    case Primitive::kMax: return "__max(" + column + ")";
  }
  return "";
}

struct PrimitiveOp {
  Primitive kind;
  int input = -1;  // column read (-1: count_all, which reads none)
  SumKind sum_kind = SumKind::kInt;
  int scale = 0;       // decimal sums
  std::string column;  // the aggregation's input column, for messages
  std::string state;   // the state column's name
};

enum class ResultKind { kState, kCount, kSum, kMean, kExtreme };

struct ResultPlan {
  std::string name;
  ResultKind kind;
  int primitive;
  int count = -1;  // kMean: the primitive holding the count to divide by
};

struct Plan {
  std::vector<int> key_columns;
  std::vector<PrimitiveOp> primitives;
  std::vector<ResultPlan> results;
};

const char* const kFunctions = "count, count_all, sum, min, max or mean";

class PlanBuilder {
 public:
  explicit PlanBuilder(const BatchView& input) : input_(input) {}

  // kPartial and kComplete: a primitive over an input column.
  int input_primitive(Primitive kind, const AggregateSpec& spec) {
    PrimitiveOp op{kind};
    op.column = spec.column;
    if (kind == Primitive::kCountAll) {
      if (!spec.column.empty()) input_.column_index(spec.column, "aggregation input");  // must exist
      op.column = "*";
    } else {
      op.input = input_.column_index(spec.column, "aggregation input");
      const ColumnView& column = input_.columns[static_cast<size_t>(op.input)];
      check_input_type(kind, spec.function, column, &op);
    }
    op.state = state_name(kind, op.sum_kind, op.column);
    return add(op);
  }

  // kFinal: a primitive merging the state column the partial stage named.
  int state_primitive(Primitive kind, const AggregateSpec& spec) {
    PrimitiveOp op{kind};
    op.column = kind == Primitive::kCountAll ? "*" : spec.column;
    if (kind == Primitive::kSum) {
      for (SumKind sum_kind : {SumKind::kInt, SumKind::kFloat, SumKind::kDecimal}) {
        if (find(state_name(kind, sum_kind, op.column)) >= 0) op.sum_kind = sum_kind;
      }
    }
    op.state = state_name(kind, op.sum_kind, op.column);
    op.input = find(op.state);
    if (op.input < 0) {
      throw InvalidArgument("partial state column '" + op.state + "' for " + spec.function + " of '" + spec.column +
                            "' (output '" + spec.output_name +
                            "') is missing: aggregate_final takes what aggregate_partial returned for the same "
                            "aggregations");
    }
    const ColumnView& column = input_.columns[static_cast<size_t>(op.input)];
    const bool count = kind == Primitive::kCount || kind == Primitive::kCountAll;
    bool expected = true;
    if (count) {
      expected = column.format == "l";
    } else if (kind == Primitive::kSum) {
      expected = op.sum_kind == SumKind::kFloat ? column.format == "g"
                                                : column.is_decimal128() && column.decimal_precision == 38;
      op.scale = column.decimal_scale;
      if (op.sum_kind == SumKind::kInt) expected = expected && op.scale == 0;
    } else {
      expected = is_orderable_flat(column);
    }
    if (!expected) {
      throw InvalidArgument("partial state column '" + op.state + "' has an unexpected type (format '" +
                            column.format + "')");
    }
    return add(op);
  }

  void result(const std::string& name, ResultKind kind, int primitive, int count = -1) {
    plan_.results.push_back({name, kind, primitive, count});
  }

  Plan& plan() { return plan_; }

 private:
  int find(const std::string& name) const {
    for (size_t i = 0; i < input_.columns.size(); ++i) {
      if (input_.columns[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }

  void check_input_type(Primitive kind, const std::string& function, const ColumnView& column, PrimitiveOp* op) {
    auto unsupported = [&](const char* expected) {
      throw UnsupportedType(function + " of column '" + column.name + "' is not supported for its type (format '" +
                            column.format + "'): expected " + expected);
    };
    switch (kind) {
      case Primitive::kCount:
        if (!validity_readable(column) && !column.null_type) {
          unsupported("a column with a validity bitmap (not a union or run-end encoded)");
        }
        return;
      case Primitive::kSum:
        if (is_integer_format(column.format)) {
          op->sum_kind = SumKind::kInt;
        } else if (is_float_layout(column.layout)) {
          op->sum_kind = SumKind::kFloat;
        } else if (column.is_decimal128()) {
          op->sum_kind = SumKind::kDecimal;
          op->scale = column.decimal_scale;
        } else {
          unsupported("an integer, floating-point or decimal128 column");
        }
        return;
      case Primitive::kMin:
      case Primitive::kMax: {
        require_supported(column, "aggregation input");
        const ColumnView& values = column.layout == Layout::kDictionary ? *column.dictionary : column;
        if (!is_orderable_flat(values)) {
          unsupported("integers, floats, decimal128, temporal types, bool, strings or binary (or a dictionary of them)");
        }
        return;
      }
      case Primitive::kCountAll:
        return;
    }
  }

  int add(const PrimitiveOp& op) {
    // sum and mean of one column share their sum, count and mean their count, count_all one count.
    for (size_t i = 0; i < plan_.primitives.size(); ++i) {
      if (plan_.primitives[i].state == op.state) return static_cast<int>(i);
    }
    plan_.primitives.push_back(op);
    return static_cast<int>(plan_.primitives.size()) - 1;
  }

  const BatchView& input_;
  Plan plan_;
};

Plan make_plan(const BatchView& input, const std::vector<std::string>& keys,
               const std::vector<AggregateSpec>& aggregations, AggregateStage stage) {
  PlanBuilder builder(input);
  Plan& plan = builder.plan();
  plan.key_columns = resolve_keys(input, keys);
  for (int key : plan.key_columns) require_supported(input.columns[static_cast<size_t>(key)], "key");
  std::set<std::string> names(keys.begin(), keys.end());
  if (names.size() != keys.size()) throw InvalidArgument("keys name the same column twice");
  if (aggregations.empty()) throw InvalidArgument("aggregations must hold at least one aggregation");

  const bool final_stage = stage == AggregateStage::kFinal;
  std::set<std::string> outputs;
  for (const AggregateSpec& spec : aggregations) {
    const std::string& f = spec.function;
    Primitive kind;
    if (f == "count") {
      kind = Primitive::kCount;
    } else if (f == "count_all") {
      kind = Primitive::kCountAll;
    } else if (f == "sum" || f == "mean") {
      kind = Primitive::kSum;
    } else if (f == "min") {
      kind = Primitive::kMin;
    } else if (f == "max") {
      kind = Primitive::kMax;
    } else {
      throw InvalidArgument("unknown aggregate function '" + f + "' for output '" + spec.output_name + "' (expected " +
                            kFunctions + ")");
    }
    if (spec.output_name.empty()) throw InvalidArgument("aggregation of '" + spec.column + "' has an empty output name");
    if (names.count(spec.output_name) != 0 || !outputs.insert(spec.output_name).second) {
      throw InvalidArgument("output column '" + spec.output_name + "' is produced twice (or is also a key)");
    }
    auto primitive = [&](Primitive k) {
      return final_stage ? builder.state_primitive(k, spec) : builder.input_primitive(k, spec);
    };
    const int first = primitive(kind);
    if (stage == AggregateStage::kPartial) {
      if (f == "mean") primitive(Primitive::kCount);
      continue;
    }
    if (f == "mean") {
      builder.result(spec.output_name, ResultKind::kMean, first, primitive(Primitive::kCount));
    } else if (kind == Primitive::kCount || kind == Primitive::kCountAll) {
      builder.result(spec.output_name, ResultKind::kCount, first);
    } else if (kind == Primitive::kSum) {
      builder.result(spec.output_name, ResultKind::kSum, first);
    } else {
      builder.result(spec.output_name, ResultKind::kExtreme, first);
    }
  }
  if (stage == AggregateStage::kPartial) {
    for (size_t i = 0; i < plan.primitives.size(); ++i) {
      const std::string& state = plan.primitives[i].state;
      if (names.count(state) != 0) throw InvalidArgument("key column '" + state + "' has the name of a state column");
      builder.result(state, ResultKind::kState, static_cast<int>(i));
    }
  }
  return std::move(plan);
}

// ---------------------------------------------------------------------------------------------
// Accumulators: one per primitive per hash table, indexed by group id.

class Accumulator {
 public:
  virtual ~Accumulator() = default;
  virtual std::unique_ptr<Accumulator> make_empty() const = 0;
  virtual void resize(size_t groups) = 0;
  // Adds rows [begin, end) of `column` (rows of that view); group_ids[i] is the group of row begin + i.
  // These are all the rows the table's groups were assigned from, so every group receives a row: an
  // accumulator may mark all its groups as having a value when the column has no nulls.
  virtual void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) = 0;
  // Folds group g of `other` into group group_map[g] of this one.
  virtual void merge_from(const Accumulator& other, const uint32_t* group_map) = 0;
  // The state (the partial stage's column) of groups [begin, end).
  virtual OutputArray state(size_t begin, size_t end) const = 0;
  // The final value of groups [begin, end): the state, except for sums (range checks, int64).
  virtual OutputArray result(size_t begin, size_t end) const { return state(begin, end); }
  // mean: the sum and the count as doubles.
  virtual bool has_value(size_t) const { return true; }
  virtual double value_as_double(size_t) const { return 0.0; }
  // Outputs with 32-bit string offsets report each group's bytes, so the result can be split into
  // arrays of at most 2 GiB.
  virtual bool limited_output() const { return false; }
  virtual int64_t output_bytes(size_t) const { return 0; }
};

using Accumulators = std::vector<std::unique_ptr<Accumulator>>;

Accumulators empty_copies(const Accumulators& prototypes) {
  Accumulators copies;
  for (const auto& prototype : prototypes) copies.push_back(prototype->make_empty());
  return copies;
}

// Runs `body(row, i)` for the valid rows of [begin, end) (i = row - begin), the null check resolved
// once.
template <typename Body>
void for_each_valid_row(const ColumnView& column, int64_t begin, int64_t end, Body body) {
  if (column.has_nulls) {
    for (int64_t row = begin; row < end; ++row) {
      if (bit_is_set(column.validity, column.offset + row)) body(row, row - begin);
    }
  } else {
    for (int64_t row = begin; row < end; ++row) body(row, row - begin);
  }
}

template <typename T>
OutputArray fixed_output(const std::vector<T>& values, const std::vector<uint8_t>* present, size_t begin, size_t end) {
  OutputArray out;
  out.length = static_cast<int64_t>(end - begin);
  auto buffer = allocate_buffer(out.length * static_cast<int64_t>(sizeof(T)));
  if (end > begin) std::memcpy(buffer.get(), values.data() + begin, (end - begin) * sizeof(T));
  out.buffers = {nullptr, std::move(buffer)};
  if (present != nullptr) set_validity_from_bytes(&out, present->data() + begin, out.length);
  return out;
}

// With few groups, consecutive rows mostly update the same few slots, and each update waits for the
// previous store to that slot; kLanes independent copies of the slots (row i updates copy i % kLanes)
// break that chain. Used up to kLaneGroups groups, where the copies stay small.
constexpr int kLanes = 4;
constexpr size_t kLaneGroups = 64;

enum class CountMode { kValues, kRows, kStates };

// kValues counts a column's non-null values, kRows counts rows, kStates adds up count states.
template <CountMode kMode>
class CountAccumulator final : public Accumulator {
 public:
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<CountAccumulator>(); }
  void resize(size_t groups) override { counts_.resize(groups, 0); }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    int64_t* counts = counts_.data();
    if constexpr (kMode == CountMode::kStates) {
      const uint8_t* values = column.values + column.offset * 8;
      for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
        counts[group_ids[i]] += load_unaligned<int64_t>(values + row * 8);
      });
    } else if (kMode == CountMode::kValues && column.layout == Layout::kDictionary && column.dictionary->has_nulls) {
      // an index to a null dictionary entry is a null value
      const ColumnView& dictionary = *column.dictionary;
      for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
        if (dictionary.is_valid(column.dictionary_index(row))) ++counts[group_ids[i]];
      });
    } else if (kMode == CountMode::kRows || !column.has_nulls) {
      if (kMode == CountMode::kValues && column.null_type) return;
      if (counts_.size() <= kLaneGroups) {
        count_in_lanes(end - begin, group_ids);
        return;
      }
      for (int64_t i = 0; i < end - begin; ++i) ++counts[group_ids[i]];
    } else {
      for_each_valid_row(column, begin, end, [&](int64_t, int64_t i) { ++counts[group_ids[i]]; });
    }
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const CountAccumulator&>(other).counts_;
    for (size_t g = 0; g < source.size(); ++g) counts_[group_map[g]] += source[g];
  }
  OutputArray state(size_t begin, size_t end) const override { return fixed_output(counts_, nullptr, begin, end); }
  double value_as_double(size_t group) const override { return static_cast<double>(counts_[group]); }

 private:
  void count_in_lanes(int64_t rows, const uint32_t* group_ids) {
    int64_t lanes[kLanes][kLaneGroups] = {};
    int64_t i = 0;
    for (; i + kLanes <= rows; i += kLanes) {
      for (int lane = 0; lane < kLanes; ++lane) ++lanes[lane][group_ids[i + lane]];
    }
    for (; i < rows; ++i) ++lanes[0][group_ids[i]];
    for (size_t g = 0; g < counts_.size(); ++g) {
      for (int lane = 0; lane < kLanes; ++lane) counts_[g] += lanes[lane][g];
    }
  }

  std::vector<int64_t> counts_;
};

struct SumInfo {
  SumKind kind;
  int scale;
  std::string column;
};

[[noreturn]] void sum_overflow(const SumInfo& info) {
  if (info.kind == SumKind::kDecimal) {
    throw Overflow("sum of column '" + info.column + "' overflows decimal128(38, " + std::to_string(info.scale) +
                   "): more than 38 digits");
  }
  throw Overflow("sum of column '" + info.column + "' overflows int64");
}

double power_of_ten(int exponent) {
  double value = 1.0;
  for (int i = 0; i < exponent; ++i) value *= 10.0;
  return value;
}

// Sums In values (any integer width, float, double, or 128-bit decimals and states) into Total
// (int128: exact; double). Only 128-bit inputs can overflow a 128-bit total (fewer than 2^32 rows of
// 64-bit values stay below 2^96), so only those pay for an overflow check.
template <typename In, typename Total>
class SumAccumulator final : public Accumulator {
 public:
  explicit SumAccumulator(std::shared_ptr<const SumInfo> info) : info_(std::move(info)) {}
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<SumAccumulator>(info_); }
  void resize(size_t groups) override {
    sums_.resize(groups, 0);
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(In));
    Total* sums = sums_.data();
    if (!column.has_nulls) {
      if (sums_.size() <= kLaneGroups) {
        sum_in_lanes(values, begin, end, group_ids);
      } else {
        for (int64_t row = begin; row < end; ++row) {
          add(sums[group_ids[row - begin]], load_unaligned<In>(values + row * static_cast<int64_t>(sizeof(In))));
        }
      }
      std::fill(present_.begin(), present_.end(), 1);
      return;
    }
    uint8_t* present = present_.data();
    for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
      const uint32_t g = group_ids[i];
      add(sums[g], load_unaligned<In>(values + row * static_cast<int64_t>(sizeof(In))));
      present[g] = 1;
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const SumAccumulator&>(other);
    for (size_t g = 0; g < source.sums_.size(); ++g) {
      if (!source.present_[g]) continue;
      add_total(sums_[group_map[g]], source.sums_[g]);
      present_[group_map[g]] = 1;
    }
  }
  OutputArray state(size_t begin, size_t end) const override {
    if (info_->kind == SumKind::kDecimal) check_decimal(begin, end);
    return fixed_output(sums_, &present_, begin, end);
  }
  OutputArray result(size_t begin, size_t end) const override {
    if constexpr (std::is_same<Total, int128>::value) {
      if (info_->kind == SumKind::kInt) {
        std::vector<int64_t> narrowed(end - begin);
        for (size_t g = begin; g < end; ++g) {
          if (present_[g] && (sums_[g] > INT64_MAX || sums_[g] < INT64_MIN)) sum_overflow(*info_);
          narrowed[g - begin] = static_cast<int64_t>(sums_[g]);
        }
        std::vector<uint8_t> present(present_.begin() + static_cast<ptrdiff_t>(begin),
                                     present_.begin() + static_cast<ptrdiff_t>(end));
        return fixed_output(narrowed, &present, 0, end - begin);
      }
    }
    return state(begin, end);
  }
  bool has_value(size_t group) const override { return present_[group] != 0; }
  double value_as_double(size_t group) const override {
    const double value = static_cast<double>(sums_[group]);
    return info_->kind == SumKind::kDecimal ? value / power_of_ten(info_->scale) : value;
  }

 private:
  void add(Total& total, In value) const {
    if constexpr (std::is_same<In, int128>::value) {
      if (__builtin_add_overflow(total, value, &total)) sum_overflow(*info_);
    } else {
      total += static_cast<Total>(value);
    }
  }
  void sum_in_lanes(const uint8_t* values, int64_t begin, int64_t end, const uint32_t* group_ids) {
    Total lanes[kLanes][kLaneGroups] = {};
    int64_t row = begin;
    for (; row + kLanes <= end; row += kLanes) {
      for (int lane = 0; lane < kLanes; ++lane) {
        add(lanes[lane][group_ids[row + lane - begin]],
            load_unaligned<In>(values + (row + lane) * static_cast<int64_t>(sizeof(In))));
      }
    }
    for (; row < end; ++row) {
      add(lanes[0][group_ids[row - begin]], load_unaligned<In>(values + row * static_cast<int64_t>(sizeof(In))));
    }
    for (size_t g = 0; g < sums_.size(); ++g) {
      for (int lane = 0; lane < kLanes; ++lane) add_total(sums_[g], lanes[lane][g]);
    }
  }
  // Adds partial totals: 128-bit ones with an overflow check.
  void add_total(Total& total, Total value) const {
    if constexpr (std::is_same<Total, int128>::value) {
      if (__builtin_add_overflow(total, value, &total)) sum_overflow(*info_);
    } else {
      total += value;
    }
  }
  void check_decimal(size_t begin, size_t end) const {
    if constexpr (std::is_same<Total, int128>::value) {
      for (size_t g = begin; g < end; ++g) {
        if (present_[g] && (sums_[g] > kMaxDecimal38 || sums_[g] < -kMaxDecimal38)) sum_overflow(*info_);
      }
    }
  }

  std::shared_ptr<const SumInfo> info_;
  std::vector<Total> sums_;
  std::vector<uint8_t> present_;
};

// The order of min and max: numeric for integers and decimals, and for floats SQL's total order in
// which NaN is greater than every other value (so min skips NaN unless all values are NaN, and max is
// NaN as soon as one value is). Returns the value to keep of the current one and a new one.
template <typename T, bool kIsMin>
inline T pick(T current, T value) {
  if constexpr (std::is_floating_point<T>::value) {
    if constexpr (kIsMin) {
      return (value < current || current != current) ? value : current;
    } else {
      return (value > current || value != value) ? value : current;
    }
  } else {
    if constexpr (kIsMin) {
      return value < current ? value : current;
    } else {
      return value > current ? value : current;
    }
  }
}

// The start value of min or max: the order's greatest (min) or least (max) element, so the first
// value always replaces it and the loop needs no "is this the first value" test.
template <typename T, bool kIsMin>
T identity() {
  if constexpr (std::is_floating_point<T>::value) {
    return kIsMin ? std::numeric_limits<T>::quiet_NaN() : -std::numeric_limits<T>::infinity();
  } else if constexpr (std::is_same<T, int128>::value) {
    const int128 max = static_cast<int128>((static_cast<unsigned __int128>(1) << 127) - 1);
    return kIsMin ? max : -max - 1;
  } else {
    return kIsMin ? std::numeric_limits<T>::max() : std::numeric_limits<T>::lowest();
  }
}

// Min or max of fixed-width values: integers of every width (and the temporal types stored as
// integers), float, double and 128-bit decimals.
template <typename T, bool kIsMin>
class ExtremeAccumulator final : public Accumulator {
 public:
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<ExtremeAccumulator>(); }
  void resize(size_t groups) override {
    values_.resize(groups, identity<T, kIsMin>());
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    const uint8_t* values = column.values + column.offset * static_cast<int64_t>(sizeof(T));
    T* best = values_.data();
    if (!column.has_nulls) {
      for (int64_t row = begin; row < end; ++row) {
        T& slot = best[group_ids[row - begin]];
        slot = pick<T, kIsMin>(slot, load_unaligned<T>(values + row * static_cast<int64_t>(sizeof(T))));
      }
      std::fill(present_.begin(), present_.end(), 1);
      return;
    }
    for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
      T& slot = best[group_ids[i]];
      slot = pick<T, kIsMin>(slot, load_unaligned<T>(values + row * static_cast<int64_t>(sizeof(T))));
      present_[group_ids[i]] = 1;
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const ExtremeAccumulator&>(other);
    for (size_t g = 0; g < source.values_.size(); ++g) {
      if (!source.present_[g]) continue;
      values_[group_map[g]] = pick<T, kIsMin>(values_[group_map[g]], source.values_[g]);
      present_[group_map[g]] = 1;
    }
  }
  OutputArray state(size_t begin, size_t end) const override { return fixed_output(values_, &present_, begin, end); }

 private:
  std::vector<T> values_;
  std::vector<uint8_t> present_;
};

// Min (logical and) or max (logical or) of bool values.
template <bool kIsMin>
class BoolExtremeAccumulator final : public Accumulator {
 public:
  std::unique_ptr<Accumulator> make_empty() const override { return std::make_unique<BoolExtremeAccumulator>(); }
  void resize(size_t groups) override {
    values_.resize(groups, kIsMin ? 1 : 0);
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
      const uint8_t bit = bit_is_set(column.values, column.offset + row) ? 1 : 0;
      uint8_t& slot = values_[group_ids[i]];
      slot = kIsMin ? (slot & bit) : (slot | bit);
      present_[group_ids[i]] = 1;
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const BoolExtremeAccumulator&>(other);
    for (size_t g = 0; g < source.values_.size(); ++g) {
      if (!source.present_[g]) continue;
      uint8_t& slot = values_[group_map[g]];
      slot = kIsMin ? (slot & source.values_[g]) : (slot | source.values_[g]);
      present_[group_map[g]] = 1;
    }
  }
  OutputArray state(size_t begin, size_t end) const override {
    OutputArray out;
    out.length = static_cast<int64_t>(end - begin);
    auto bits = allocate_buffer((out.length + 7) / 8);
    std::memset(bits.get(), 0, static_cast<size_t>((out.length + 7) / 8));
    for (size_t g = begin; g < end; ++g) {
      if (values_[g] && present_[g]) bits.get()[(g - begin) >> 3] |= static_cast<uint8_t>(1u << ((g - begin) & 7));
    }
    out.buffers = {nullptr, std::move(bits)};
    set_validity_from_bytes(&out, present_.data() + begin, out.length);
    return out;
  }

 private:
  std::vector<uint8_t> values_;
  std::vector<uint8_t> present_;
};

// Unsigned lexicographic byte order, a shorter prefix first (what memcmp-based SQL engines use).
inline int compare_bytes(const uint8_t* a, size_t a_size, const uint8_t* b, size_t b_size) {
  const int prefix = std::memcmp(a, b, std::min(a_size, b_size));
  if (prefix != 0) return prefix;
  return a_size < b_size ? -1 : (a_size > b_size ? 1 : 0);
}

// Builds a string/binary array from std::string values with presence (null where absent).
OutputArray binary_output(const std::vector<std::string>& values, const std::vector<uint8_t>& present, size_t begin,
                          size_t end, bool large, const std::string& name) {
  OutputArray out;
  out.length = static_cast<int64_t>(end - begin);
  int64_t total = 0;
  for (size_t g = begin; g < end; ++g) total += static_cast<int64_t>(values[g].size());
  if (!large && total > kMaxBinaryBytes) {
    throw Overflow("column '" + name + "' needs more than 2 GiB of string data in one array; use large_string");
  }
  auto offsets = allocate_buffer((out.length + 1) * (large ? 8 : 4));
  auto data = allocate_buffer(total);
  int64_t position = 0;
  for (size_t g = begin; g <= end; ++g) {
    if (large) {
      reinterpret_cast<int64_t*>(offsets.get())[g - begin] = position;
    } else {
      reinterpret_cast<int32_t*>(offsets.get())[g - begin] = static_cast<int32_t>(position);
    }
    if (g == end) break;
    std::memcpy(data.get() + position, values[g].data(), values[g].size());
    position += static_cast<int64_t>(values[g].size());
  }
  out.buffers = {nullptr, std::move(offsets), std::move(data)};
  set_validity_from_bytes(&out, present.data() + begin, out.length);
  return out;
}

// Min or max of string/binary values. Each group keeps a copy of its current extreme, so accumulators
// outlive the (partition) arrays they read.
template <bool kIsMin>
class BinaryExtremeAccumulator final : public Accumulator {
 public:
  BinaryExtremeAccumulator(bool large_output, std::string name) : large_(large_output), name_(std::move(name)) {}
  std::unique_ptr<Accumulator> make_empty() const override {
    return std::make_unique<BinaryExtremeAccumulator>(large_, name_);
  }
  void resize(size_t groups) override {
    values_.resize(groups);
    present_.resize(groups, 0);
  }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
      const int64_t start = column.value_begin(row);
      offer(group_ids[i], column.values + start, static_cast<size_t>(column.value_end(row) - start));
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const BinaryExtremeAccumulator&>(other);
    for (size_t g = 0; g < source.values_.size(); ++g) {
      if (!source.present_[g]) continue;
      const std::string& value = source.values_[g];
      offer(group_map[g], reinterpret_cast<const uint8_t*>(value.data()), value.size());
    }
  }
  OutputArray state(size_t begin, size_t end) const override {
    return binary_output(values_, present_, begin, end, large_, name_);
  }
  bool limited_output() const override { return !large_; }
  int64_t output_bytes(size_t group) const override { return static_cast<int64_t>(values_[group].size()); }

 private:
  void offer(uint32_t g, const uint8_t* data, size_t size) {
    std::string& current = values_[g];
    if (present_[g]) {
      const int order = compare_bytes(data, size, reinterpret_cast<const uint8_t*>(current.data()), current.size());
      if (kIsMin ? order >= 0 : order <= 0) return;
    }
    current.assign(reinterpret_cast<const char*>(data), size);
    present_[g] = 1;
  }

  bool large_;
  std::string name_;
  std::vector<std::string> values_;
  std::vector<uint8_t> present_;
};

// Three-way comparison of two entries of a flat column in min/max order (see pick).
int compare_values(const ColumnView& column, int64_t a, int64_t b) {
  auto three_way = [](auto x, auto y) { return x < y ? -1 : (y < x ? 1 : 0); };
  const int64_t width = column.byte_width;
  const uint8_t* at_a = column.values + (column.offset + a) * width;
  const uint8_t* at_b = column.values + (column.offset + b) * width;
  switch (column.layout) {
    case Layout::kBool:
      return three_way(bit_is_set(column.values, column.offset + a), bit_is_set(column.values, column.offset + b));
    case Layout::kSignedInt:
      switch (width) {
        case 1: return three_way(load_unaligned<int8_t>(at_a), load_unaligned<int8_t>(at_b));
        case 2: return three_way(load_unaligned<int16_t>(at_a), load_unaligned<int16_t>(at_b));
        case 4: return three_way(load_unaligned<int32_t>(at_a), load_unaligned<int32_t>(at_b));
        default: return three_way(load_unaligned<int64_t>(at_a), load_unaligned<int64_t>(at_b));
      }
    case Layout::kUnsignedInt:
      switch (width) {
        case 1: return three_way(load_unaligned<uint8_t>(at_a), load_unaligned<uint8_t>(at_b));
        case 2: return three_way(load_unaligned<uint16_t>(at_a), load_unaligned<uint16_t>(at_b));
        case 4: return three_way(load_unaligned<uint32_t>(at_a), load_unaligned<uint32_t>(at_b));
        default: return three_way(load_unaligned<uint64_t>(at_a), load_unaligned<uint64_t>(at_b));
      }
    case Layout::kFloat32:
    case Layout::kFloat64: {
      const double x = column.layout == Layout::kFloat32 ? load_unaligned<float>(at_a) : load_unaligned<double>(at_a);
      const double y = column.layout == Layout::kFloat32 ? load_unaligned<float>(at_b) : load_unaligned<double>(at_b);
      if (x != x || y != y) return three_way(x != x, y != y);  // NaN is the greatest value
      return three_way(x, y);
    }
    case Layout::kFixedBytes:
      return three_way(load_unaligned<int128>(at_a), load_unaligned<int128>(at_b));
    case Layout::kBinary:
    case Layout::kLargeBinary: {
      const int64_t begin_a = column.value_begin(a);
      const int64_t begin_b = column.value_begin(b);
      return compare_bytes(column.values + begin_a, static_cast<size_t>(column.value_end(a) - begin_a),
                           column.values + begin_b, static_cast<size_t>(column.value_end(b) - begin_b));
    }
    default:
      return 0;
  }
}

// The dictionary of a dictionary column in min/max order: rank[index] orders the entries (null
// entries get kNoRank), index_of_rank inverts it.
struct DictionaryOrder {
  static constexpr uint32_t kNoRank = UINT32_MAX;
  ColumnView dictionary;
  std::vector<uint32_t> rank;
  std::vector<int64_t> index_of_rank;

  explicit DictionaryOrder(const ColumnView& values) : dictionary(values) {
    const int64_t size = values.length;
    if (size >= static_cast<int64_t>(kNoRank)) throw InvalidArgument("dictionary of '" + values.name + "' is too large");
    std::vector<int64_t> order;
    for (int64_t i = 0; i < size; ++i) {
      if (values.is_valid(i)) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return compare_values(values, a, b) < 0; });
    rank.assign(static_cast<size_t>(size), kNoRank);
    for (size_t r = 0; r < order.size(); ++r) rank[static_cast<size_t>(order[r])] = static_cast<uint32_t>(r);
    index_of_rank = std::move(order);
  }
};

// Min or max of a dictionary column by decoded value: ranks are compared, and the result holds the
// dictionary's values (its value type).
template <bool kIsMin>
class DictionaryExtremeAccumulator final : public Accumulator {
 public:
  explicit DictionaryExtremeAccumulator(std::shared_ptr<const DictionaryOrder> order) : order_(std::move(order)) {}
  std::unique_ptr<Accumulator> make_empty() const override {
    return std::make_unique<DictionaryExtremeAccumulator>(order_);
  }
  void resize(size_t groups) override { best_.resize(groups, DictionaryOrder::kNoRank); }
  void update(const ColumnView& column, int64_t begin, int64_t end, const uint32_t* group_ids) override {
    const uint32_t* rank = order_->rank.data();
    for_each_valid_row(column, begin, end, [&](int64_t row, int64_t i) {
      offer(group_ids[i], rank[column.dictionary_index(row)]);
    });
  }
  void merge_from(const Accumulator& other, const uint32_t* group_map) override {
    const auto& source = static_cast<const DictionaryExtremeAccumulator&>(other);
    for (size_t g = 0; g < source.best_.size(); ++g) offer(group_map[g], source.best_[g]);
  }
  OutputArray state(size_t begin, size_t end) const override {
    std::vector<int64_t> rows(end - begin);
    for (size_t g = begin; g < end; ++g) {
      rows[g - begin] = best_[g] == DictionaryOrder::kNoRank ? -1 : order_->index_of_rank[best_[g]];
    }
    const ColumnView& values = order_->dictionary;
    return gather_rows({&values}, nullptr, rows.data(), static_cast<int64_t>(rows.size()),
                       values.layout == Layout::kLargeBinary);
  }
  bool limited_output() const override { return order_->dictionary.layout == Layout::kBinary; }
  int64_t output_bytes(size_t group) const override {
    if (best_[group] == DictionaryOrder::kNoRank) return 0;
    return value_size(order_->dictionary, order_->index_of_rank[best_[group]]);
  }

 private:
  void offer(uint32_t g, uint32_t rank) {
    if (rank == DictionaryOrder::kNoRank) return;  // a null dictionary entry is a null value
    uint32_t& best = best_[g];
    if (best == DictionaryOrder::kNoRank || (kIsMin ? rank < best : rank > best)) best = rank;
  }

  std::shared_ptr<const DictionaryOrder> order_;
  std::vector<uint32_t> best_;
};

// Calls make(T{}) with the C++ type of a fixed-width column's values.
template <typename Make>
std::unique_ptr<Accumulator> with_value_type(const ColumnView& column, Make make) {
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
    case Layout::kFloat64: return make(double{});
    default: return make(int128{});  // decimal128
  }
}

template <bool kIsMin>
std::unique_ptr<Accumulator> make_extreme(const ColumnView& column) {
  if (column.layout == Layout::kDictionary) {
    return std::make_unique<DictionaryExtremeAccumulator<kIsMin>>(std::make_shared<DictionaryOrder>(*column.dictionary));
  }
  if (column.layout == Layout::kBool) return std::make_unique<BoolExtremeAccumulator<kIsMin>>();
  if (column.is_var_binary()) {
    return std::make_unique<BinaryExtremeAccumulator<kIsMin>>(column.layout == Layout::kLargeBinary, column.name);
  }
  return with_value_type(column, [](auto type) -> std::unique_ptr<Accumulator> {
    return std::make_unique<ExtremeAccumulator<decltype(type), kIsMin>>();
  });
}

std::unique_ptr<Accumulator> make_accumulator(const PrimitiveOp& op, const BatchView& input, AggregateStage stage) {
  const bool final_stage = stage == AggregateStage::kFinal;
  const ColumnView* column = op.input >= 0 ? &input.columns[static_cast<size_t>(op.input)] : nullptr;
  switch (op.kind) {
    case Primitive::kCount:
      if (final_stage) return std::make_unique<CountAccumulator<CountMode::kStates>>();
      return std::make_unique<CountAccumulator<CountMode::kValues>>();
    case Primitive::kCountAll:
      if (final_stage) return std::make_unique<CountAccumulator<CountMode::kStates>>();
      return std::make_unique<CountAccumulator<CountMode::kRows>>();
    case Primitive::kSum: {
      auto info = std::make_shared<const SumInfo>(SumInfo{op.sum_kind, op.scale, op.column});
      if (op.sum_kind == SumKind::kFloat) {
        if (column->layout == Layout::kFloat32) return std::make_unique<SumAccumulator<float, double>>(info);
        return std::make_unique<SumAccumulator<double, double>>(info);
      }
      return with_value_type(*column, [&](auto type) -> std::unique_ptr<Accumulator> {
        using In = decltype(type);
        if constexpr (std::is_floating_point<In>::value) {
          return nullptr;  // not reached: float sums are handled above
        } else {
          return std::make_unique<SumAccumulator<In, int128>>(info);
        }
      });
    }
    case Primitive::kMin:
      return make_extreme<true>(*column);
    case Primitive::kMax:
      return make_extreme<false>(*column);
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Open-addressing hash table from key to dense group id. Each slot packs the hash's high 32 bits
// (a cheap filter before comparing keys) with group id + 1 (0 marks an empty slot); probing starts at
// the hash's low bits, independent of the high bits the radix partitioning used. A group is
// represented by one row holding its key (`group_rows`), compared through an Equal functor.

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

// Rows of one set of key views compared through values_equal.
struct GenericKeyEqual {
  std::vector<const ColumnView*> keys;
  bool operator()(int64_t a, int64_t b) const {
    for (const ColumnView* key : keys) {
      if (!values_equal(*key, a, *key, b)) return false;
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

// Short keys compare byte by byte inline (a memcmp call costs more than comparing a few bytes).
inline bool same_bytes(const uint8_t* a, const uint8_t* b, int64_t size) {
  if (size > 16) return std::memcmp(a, b, static_cast<size_t>(size)) == 0;
  for (int64_t i = 0; i < size; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// String keys without nulls: compare lengths, then bytes.
template <typename Offset>
struct BinaryKeysEqual {
  struct Key {
    const uint8_t* offsets;  // advanced by the column offset
    const uint8_t* values;
  };
  std::vector<Key> keys;
  bool operator()(int64_t a, int64_t b) const {
    for (const Key& key : keys) {
      const Offset begin_a = load_unaligned<Offset>(key.offsets + a * static_cast<int64_t>(sizeof(Offset)));
      const Offset end_a = load_unaligned<Offset>(key.offsets + (a + 1) * static_cast<int64_t>(sizeof(Offset)));
      const Offset begin_b = load_unaligned<Offset>(key.offsets + b * static_cast<int64_t>(sizeof(Offset)));
      const Offset end_b = load_unaligned<Offset>(key.offsets + (b + 1) * static_cast<int64_t>(sizeof(Offset)));
      if (end_a - begin_a != end_b - begin_b || !same_bytes(key.values + begin_a, key.values + begin_b, end_a - begin_a)) {
        return false;
      }
    }
    return true;
  }
};

// Calls body(equal) with the fastest equality functor for rows of these key views.
template <typename Body>
void with_key_equal(const std::vector<const ColumnView*>& keys, Body body) {
  if (keys.size() == 1 && !keys[0]->has_nulls &&
      (keys[0]->layout == Layout::kSignedInt || keys[0]->layout == Layout::kUnsignedInt)) {
    const ColumnView& key = *keys[0];
    const uint8_t* values = key.values + key.offset * key.byte_width;
    switch (key.byte_width) {
      case 1: return body(WordKeyEqual<uint8_t>{values});
      case 2: return body(WordKeyEqual<uint16_t>{values});
      case 4: return body(WordKeyEqual<uint32_t>{values});
      case 8: return body(WordKeyEqual<uint64_t>{values});
      default: break;
    }
  }
  bool binary = true;
  bool large = true;
  for (const ColumnView* key : keys) {
    binary = binary && key->layout == Layout::kBinary && !key->has_nulls;
    large = large && key->layout == Layout::kLargeBinary && !key->has_nulls;
  }
  if (binary || large) {
    const int64_t width = binary ? 4 : 8;
    std::vector<typename BinaryKeysEqual<int32_t>::Key> views;
    for (const ColumnView* key : keys) views.push_back({key->offsets + key->offset * width, key->values});
    if (binary) return body(BinaryKeysEqual<int32_t>{views});
    std::vector<typename BinaryKeysEqual<int64_t>::Key> large_views;
    for (const auto& view : views) large_views.push_back({view.offsets, view.values});
    return body(BinaryKeysEqual<int64_t>{large_views});
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

// Rows of a table named by batch and row: (batch << 40) | row, so one batch's row ids are its row
// numbers and a row id decodes without a search.
constexpr int kBatchShift = 40;
inline int64_t row_id(size_t batch, int64_t row) { return (static_cast<int64_t>(batch) << kBatchShift) | row; }
inline size_t batch_of_id(int64_t id) { return static_cast<size_t>(id >> kBatchShift); }
inline int64_t row_of_id(int64_t id) { return id & ((int64_t{1} << kBatchShift) - 1); }

// Keys of rows in different batches of a table, named by row_id.
struct TableKeyEqual {
  const TableView* table;
  const std::vector<int>* key_columns;
  bool operator()(int64_t a, int64_t b) const {
    const BatchView& batch_a = table->batches[batch_of_id(a)];
    const BatchView& batch_b = table->batches[batch_of_id(b)];
    for (int key : *key_columns) {
      if (!values_equal(batch_a.columns[static_cast<size_t>(key)], row_of_id(a), batch_b.columns[static_cast<size_t>(key)],
                        row_of_id(b))) {
        return false;
      }
    }
    return true;
  }
};

template <typename Body>
void with_table_key_equal(const TableView& table, const std::vector<int>& key_columns, Body body) {
  if (table.batches.size() == 1) {
    std::vector<const ColumnView*> keys;
    for (int key : key_columns) keys.push_back(&table.first().columns[static_cast<size_t>(key)]);
    return with_key_equal(keys, body);
  }
  body(TableKeyEqual{&table, &key_columns});
}

// ---------------------------------------------------------------------------------------------
// Strategies. Both produce one accumulator per primitive and, for each group, where its key values
// are: row rows[g] of sources source_of[g] of key_sources[k].

using Hashers = std::vector<std::unique_ptr<KeyHasher>>;

struct Grouped {
  Accumulators accumulators;
  std::vector<std::vector<const ColumnView*>> key_sources;  // [key][source]
  std::vector<uint32_t> source_of;
  std::vector<int64_t> rows;
  std::vector<std::vector<ColumnView>> partition_keys;  // radix: the partitions' key views (sources)
  AggregateStats stats;
};

std::vector<const ColumnView*> key_views(const BatchView& batch, const Plan& plan) {
  std::vector<const ColumnView*> keys;
  for (int key : plan.key_columns) keys.push_back(&batch.columns[static_cast<size_t>(key)]);
  return keys;
}

// The column a primitive reads in `batch` (count_all reads none: any view serves).
const ColumnView& primitive_column(const BatchView& batch, const Plan& plan, const PrimitiveOp& op) {
  return batch.columns[static_cast<size_t>(op.input >= 0 ? op.input : plan.key_columns.front())];
}

// Distinct keys in the first rows: decides between the strategies.
size_t sample_groups(const TableView& input, const Plan& plan, const Hashers& hashers, int64_t sample_rows) {
  GroupTable table(1024);
  std::unique_ptr<uint64_t[]> hashes(new uint64_t[static_cast<size_t>(std::max<int64_t>(sample_rows, 1))]);
  with_table_key_equal(input, plan.key_columns, [&](const auto& equal) {
    int64_t taken = 0;
    for (size_t b = 0; b < input.batches.size() && taken < sample_rows; ++b) {
      const int64_t rows = std::min(input.batches[b].num_rows, sample_rows - taken);
      hashers[b]->hash(0, rows, hashes.get());
      for (int64_t row = 0; row < rows; ++row) table.find_or_insert(hashes[row], row_id(b, row), equal);
      taken += rows;
    }
  });
  return table.size();
}

// Per-thread scratch for morsel-sized arrays, kept between morsels and calls, so a morsel neither
// allocates nor zero-fills its hashes and group ids (which are fully written before they are read).
// Each use names its own Tag, so two uses never share a buffer.
template <typename Tag, typename T>
T* scratch(size_t count) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}
struct GroupIdsScratch;
struct HashesScratch;
struct DirectMapScratch;

// Groups of one morsel: the first row of each (in order of appearance) and its hash.
struct MorselGroups {
  std::vector<int64_t> rows;
  std::vector<uint64_t> hashes;
};

// Key ranges up to this size are grouped through a direct-mapped array (16 KiB of group ids).
constexpr uint64_t kDirectRange = 4096;

// Assigns group ids through the direct map: slot = value - low (null_slot for a null), ids in order of
// first appearance; first_row[g] records each group's first row. Returns the number of groups.
template <typename T, bool kNulls>
uint32_t direct_map_rows(const ColumnView& key, T low, int64_t begin, int64_t end, uint32_t* __restrict group_of,
                         size_t null_slot, uint32_t* __restrict group_ids, int64_t* __restrict first_row) {
  using Unsigned = typename std::make_unsigned<T>::type;
  const uint8_t* values = key.values + key.offset * static_cast<int64_t>(sizeof(T));
  uint32_t groups = 0;
  for (int64_t row = begin; row < end; ++row) {
    size_t slot = static_cast<size_t>(static_cast<Unsigned>(load_unaligned<T>(values + row * static_cast<int64_t>(sizeof(T)))) -
                                      static_cast<Unsigned>(low));
    if constexpr (kNulls) slot = bit_is_set(key.validity, key.offset + row) ? slot : null_slot;
    uint32_t group = group_of[slot];
    if (__builtin_expect(group == UINT32_MAX, 0)) {
      group = groups++;
      group_of[slot] = group;
      first_row[group] = row;
    }
    group_ids[row - begin] = group;
  }
  return groups;
}

// One integer key whose values in rows [begin, end) span fewer than kDirectRange values: the value
// minus the smallest one indexes the group directly, without hashing or probing (what duckdb calls
// perfect hash aggregation). Returns false, doing nothing, for a wider range.
template <typename T>
bool group_directly(const ColumnView& key, const KeyHasher& hasher, int64_t begin, int64_t end,
                    uint32_t* group_ids, MorselGroups* groups) {
  const uint8_t* values = key.values + key.offset * static_cast<int64_t>(sizeof(T));
  T low = std::numeric_limits<T>::max();
  T high = std::numeric_limits<T>::lowest();
  int64_t row = begin;
  if (!key.has_nulls) {
    // Four independent minimums and maximums: one chain of compare-and-select per value would be
    // bound by its latency.
    T lows[4] = {low, low, low, low};
    T highs[4] = {high, high, high, high};
    for (; row + 4 <= end; row += 4) {
      for (int lane = 0; lane < 4; ++lane) {
        const T value = load_unaligned<T>(values + (row + lane) * static_cast<int64_t>(sizeof(T)));
        lows[lane] = value < lows[lane] ? value : lows[lane];
        highs[lane] = value > highs[lane] ? value : highs[lane];
      }
    }
    for (int lane = 0; lane < 4; ++lane) {
      low = std::min(low, lows[lane]);
      high = std::max(high, highs[lane]);
    }
  }
  for_each_valid_row(key, row, end, [&](int64_t at, int64_t) {
    const T value = load_unaligned<T>(values + at * static_cast<int64_t>(sizeof(T)));
    low = value < low ? value : low;
    high = value > high ? value : high;
  });
  using Unsigned = typename std::make_unsigned<T>::type;
  const uint64_t range = low > high ? 0 : static_cast<uint64_t>(static_cast<Unsigned>(high) - static_cast<Unsigned>(low));
  if (range >= kDirectRange) return false;
  const size_t null_slot = static_cast<size_t>(range) + 1;
  uint32_t* group_of = scratch<DirectMapScratch, uint32_t>(null_slot + 1);  // the last slot is the null key's
  int64_t* first_row = scratch<DirectMapScratch, int64_t>(null_slot + 1);
  std::fill(group_of, group_of + null_slot + 1, UINT32_MAX);
  const uint32_t count = key.has_nulls
                             ? direct_map_rows<T, true>(key, low, begin, end, group_of, null_slot, group_ids, first_row)
                             : direct_map_rows<T, false>(key, low, begin, end, group_of, null_slot, group_ids, first_row);
  groups->rows.assign(first_row, first_row + count);
  for (int64_t row : groups->rows) groups->hashes.push_back(hasher.hash_one(row));
  return true;
}

bool try_group_directly(const ColumnView& key, const KeyHasher& hasher, int64_t begin, int64_t end,
                        uint32_t* group_ids, MorselGroups* groups) {
  if (key.layout == Layout::kSignedInt) {
    switch (key.byte_width) {
      case 1: return group_directly<int8_t>(key, hasher, begin, end, group_ids, groups);
      case 2: return group_directly<int16_t>(key, hasher, begin, end, group_ids, groups);
      case 4: return group_directly<int32_t>(key, hasher, begin, end, group_ids, groups);
      default: return group_directly<int64_t>(key, hasher, begin, end, group_ids, groups);
    }
  }
  if (key.layout == Layout::kUnsignedInt) {
    switch (key.byte_width) {
      case 1: return group_directly<uint8_t>(key, hasher, begin, end, group_ids, groups);
      case 2: return group_directly<uint16_t>(key, hasher, begin, end, group_ids, groups);
      case 4: return group_directly<uint32_t>(key, hasher, begin, end, group_ids, groups);
      default: return group_directly<uint64_t>(key, hasher, begin, end, group_ids, groups);
    }
  }
  return false;
}

Grouped aggregate_by_morsels(const TableView& input, const Plan& plan, const Hashers& hashers,
                             const Accumulators& prototypes, const KernelRunner& runner, double row_bytes) {
  struct Local {
    MorselGroups groups;
    Accumulators accumulators;
    size_t batch = 0;
  };
  const std::vector<MorselRange> morsels = runner.split_batches(input.starts, row_bytes);
  std::vector<Local> locals(morsels.size());
  runner.run(morsels.size(), [&](size_t m) {
    const MorselRange& morsel = morsels[m];
    const BatchView& batch = input.batches[morsel.batch];
    const int64_t begin = morsel.offset - input.starts[morsel.batch];
    const int64_t end = begin + morsel.length;
    const std::vector<const ColumnView*> keys = key_views(batch, plan);
    const KeyHasher& hasher = *hashers[morsel.batch];
    uint32_t* group_ids = scratch<GroupIdsScratch, uint32_t>(static_cast<size_t>(morsel.length));
    Local& local = locals[m];
    local.batch = morsel.batch;
    if (keys.size() != 1 || !try_group_directly(*keys[0], hasher, begin, end, group_ids, &local.groups)) {
      uint64_t* hashes = scratch<HashesScratch, uint64_t>(static_cast<size_t>(morsel.length));
      hasher.hash(begin, end, hashes);
      GroupTable table(1024);
      assign_groups(table, keys, hashes, begin, end, group_ids);
      local.groups.rows = table.group_rows();
      local.groups.hashes = table.group_hashes();
    }
    local.accumulators = empty_copies(prototypes);
    for (size_t i = 0; i < plan.primitives.size(); ++i) {
      local.accumulators[i]->resize(local.groups.rows.size());
      local.accumulators[i]->update(primitive_column(batch, plan, plan.primitives[i]), begin, end, group_ids);
    }
  });
  // Merging in morsel order keeps groups in order of first appearance.
  GroupTable table(1024);
  Grouped grouped;
  grouped.accumulators = empty_copies(prototypes);
  std::vector<uint32_t> group_map;
  with_table_key_equal(input, plan.key_columns, [&](const auto& equal) {
    for (Local& local : locals) {
      const size_t groups = local.groups.rows.size();
      group_map.resize(groups);
      for (size_t g = 0; g < groups; ++g) {
        group_map[g] = table.find_or_insert(local.groups.hashes[g], row_id(local.batch, local.groups.rows[g]), equal);
      }
      for (size_t i = 0; i < prototypes.size(); ++i) {
        grouped.accumulators[i]->resize(table.size());
        grouped.accumulators[i]->merge_from(*local.accumulators[i], group_map.data());
      }
      local = Local{};  // free the morsel's groups early
    }
  });
  for (size_t k = 0; k < plan.key_columns.size(); ++k) {
    std::vector<const ColumnView*> sources;
    for (const BatchView& batch : input.batches) sources.push_back(&batch.columns[static_cast<size_t>(plan.key_columns[k])]);
    grouped.key_sources.push_back(std::move(sources));
  }
  for (int64_t id : table.group_rows()) {
    grouped.source_of.push_back(static_cast<uint32_t>(batch_of_id(id)));
    grouped.rows.push_back(row_of_id(id));
  }
  grouped.stats.strategy = "morsel";
  return grouped;
}

Grouped aggregate_by_radix(const TableView& input, const Plan& plan, const Hashers& hashers,
                           const Accumulators& prototypes, const KernelRunner& runner, double row_bytes,
                           uint32_t radix_partitions) {
  const int64_t rows = input.num_rows;
  // Carry the key and input columns through the partitioning.
  std::vector<int> carried = plan.key_columns;
  for (const PrimitiveOp& op : plan.primitives) {
    if (op.input >= 0 && std::find(carried.begin(), carried.end(), op.input) == carried.end()) carried.push_back(op.input);
  }
  // Row hashes are recomputed per partition from the scattered keys (cheaper than scattering 8 more
  // bytes per row to every partition) for fixed-width keys. Dictionary keys (whose hasher precomputes
  // the hashes of the whole dictionary) and string keys (hashing their bytes again cost as much as the
  // first pass: 10-15 % of a group-by on TPC-H Q10's seven keys) carry their hashes through the scatter.
  bool carry_hashes = false;
  for (int key : plan.key_columns) {
    const ColumnView& column = input.first().columns[static_cast<size_t>(key)];
    carry_hashes = carry_hashes || column.layout == Layout::kDictionary || column.is_var_binary();
  }
  std::unique_ptr<uint64_t[]> hashes(carry_hashes ? new uint64_t[static_cast<size_t>(rows)] : nullptr);
  const PartitionLayout layout = plan_partitions(
      radix_partitions, runner.split_batches(input.starts, row_bytes + 8), input.starts,
      [&](const MorselRange& morsel, uint64_t* out) {
        const int64_t begin = morsel.offset - input.starts[morsel.batch];
        hashers[morsel.batch]->hash(begin, begin + morsel.length, out);
      },
      hashes.get(), runner);

  std::vector<ScatterSources> to_scatter;
  for (int column : carried) {
    ScatterSources sources;
    for (const BatchView& batch : input.batches) sources.push_back(&batch.columns[static_cast<size_t>(column)]);
    to_scatter.push_back(std::move(sources));
  }
  std::vector<ColumnView> hash_columns(input.batches.size());  // batch b's rows of `hashes`
  if (carry_hashes) {
    ScatterSources sources;
    for (size_t b = 0; b < input.batches.size(); ++b) {
      ColumnView& view = hash_columns[b];
      view.name = "<hash>";
      view.format = "L";
      view.layout = Layout::kUnsignedInt;
      view.byte_width = 8;
      view.length = input.batches[b].num_rows;
      view.values = reinterpret_cast<const uint8_t*>(hashes.get() + input.starts[b]);
      sources.push_back(&view);
    }
    to_scatter.push_back(std::move(sources));
  }
  std::vector<ScatteredColumn> scattered = scatter_columns(to_scatter, layout, runner, true);
  std::vector<OutputArray> part_hashes;
  if (carry_hashes) {
    part_hashes = std::move(scattered.back().parts);
    scattered.pop_back();
  }
  hashes.reset();

  struct Part {
    std::vector<int64_t> group_rows;  // rows of the partition
    Accumulators accumulators;
  };
  std::vector<Part> parts(radix_partitions);
  Grouped grouped;
  grouped.partition_keys.resize(radix_partitions);
  auto carried_index = [&](int column) {
    return static_cast<size_t>(std::find(carried.begin(), carried.end(), column) - carried.begin());
  };
  runner.run(radix_partitions, [&](size_t p) {
    const int64_t part_rows = layout.partition_rows[p];
    BatchView part;  // the carried columns of this partition, in `carried` order
    part.num_rows = part_rows;
    for (size_t c = 0; c < carried.size(); ++c) {
      part.columns.push_back(view_output(std::make_shared<OutputArray>(std::move(scattered[c].parts[p])),
                                         input.first().columns[static_cast<size_t>(carried[c])], scattered[c].layout));
    }
    std::vector<int> key_indices;
    for (int key : plan.key_columns) key_indices.push_back(static_cast<int>(carried_index(key)));
    std::unique_ptr<uint64_t[]> recomputed;
    const uint64_t* hashes_of_part = nullptr;
    if (carry_hashes) {
      hashes_of_part = reinterpret_cast<const uint64_t*>(part_hashes[p].buffers[1].get());
    } else {
      recomputed.reset(new uint64_t[static_cast<size_t>(std::max<int64_t>(part_rows, 1))]);
      KeyHasher(part, key_indices, kAggregateHashSeed).hash(0, part_rows, recomputed.get());
      hashes_of_part = recomputed.get();
    }
    std::vector<const ColumnView*> keys;
    for (int index : key_indices) keys.push_back(&part.columns[static_cast<size_t>(index)]);
    GroupTable table(static_cast<size_t>(part_rows / 8 + 1));
    std::unique_ptr<uint32_t[]> group_ids(new uint32_t[static_cast<size_t>(std::max<int64_t>(part_rows, 1))]);
    assign_groups(table, keys, hashes_of_part, 0, part_rows, group_ids.get());
    Part& result = parts[p];
    result.accumulators = empty_copies(prototypes);
    for (size_t i = 0; i < plan.primitives.size(); ++i) {
      const PrimitiveOp& op = plan.primitives[i];
      const ColumnView& column = *(op.input >= 0 ? &part.columns[carried_index(op.input)] : keys.front());
      result.accumulators[i]->resize(table.size());
      result.accumulators[i]->update(column, 0, part_rows, group_ids.get());
    }
    result.group_rows = table.group_rows();
    for (int index : key_indices) grouped.partition_keys[p].push_back(part.columns[static_cast<size_t>(index)]);
    if (carry_hashes) part_hashes[p] = OutputArray{};
  });

  // Partitions hold disjoint groups: concatenate them, each into its own range of group ids.
  std::vector<size_t> group_base(radix_partitions + 1, 0);
  for (uint32_t p = 0; p < radix_partitions; ++p) group_base[p + 1] = group_base[p] + parts[p].group_rows.size();
  const size_t groups = group_base[radix_partitions];
  grouped.accumulators = empty_copies(prototypes);
  for (auto& accumulator : grouped.accumulators) accumulator->resize(groups);
  grouped.source_of.resize(groups);
  grouped.rows.resize(groups);
  runner.run(radix_partitions, [&](size_t p) {
    const size_t count = parts[p].group_rows.size();
    std::vector<uint32_t> group_map(count);
    for (size_t g = 0; g < count; ++g) {
      group_map[g] = static_cast<uint32_t>(group_base[p] + g);
      grouped.source_of[group_base[p] + g] = static_cast<uint32_t>(p);
      grouped.rows[group_base[p] + g] = parts[p].group_rows[g];
    }
    for (size_t i = 0; i < prototypes.size(); ++i) {
      grouped.accumulators[i]->merge_from(*parts[p].accumulators[i], group_map.data());
    }
    parts[p] = Part{};
  });
  grouped.key_sources.resize(plan.key_columns.size());
  for (uint32_t p = 0; p < radix_partitions; ++p) {
    for (size_t k = 0; k < plan.key_columns.size(); ++k) grouped.key_sources[k].push_back(&grouped.partition_keys[p][k]);
  }
  grouped.stats.strategy = "radix";
  grouped.stats.radix_partitions = radix_partitions;
  for (int64_t count : layout.partition_rows) grouped.stats.radix_partitions_used += count > 0 ? 1 : 0;
  return grouped;
}

// ---------------------------------------------------------------------------------------------
// The result: key columns gathered from where the groups' rows are, then one column per result.

OutputArray divide(const Accumulator& sums, const Accumulator& counts, size_t begin, size_t end) {
  std::vector<double> means(end - begin, 0.0);
  std::vector<uint8_t> present(end - begin, 0);
  for (size_t g = begin; g < end; ++g) {
    const double count = counts.value_as_double(g);
    present[g - begin] = sums.has_value(g) && count > 0;
    if (present[g - begin]) means[g - begin] = sums.value_as_double(g) / count;
  }
  return fixed_output(means, &present, 0, end - begin);
}

// Group ranges whose 32-bit-offset string outputs each fit one array (normally one range).
std::vector<size_t> piece_bounds(const TableView& input, const Plan& plan, const Grouped& grouped, size_t groups) {
  std::vector<int> limited_keys;
  for (size_t k = 0; k < plan.key_columns.size(); ++k) {
    if (input.first().columns[static_cast<size_t>(plan.key_columns[k])].layout == Layout::kBinary) {
      limited_keys.push_back(static_cast<int>(k));
    }
  }
  std::vector<const Accumulator*> limited_results;
  for (const auto& accumulator : grouped.accumulators) {
    if (accumulator->limited_output()) limited_results.push_back(accumulator.get());
  }
  std::vector<size_t> bounds{0};
  if (!limited_keys.empty() || !limited_results.empty()) {
    std::vector<int64_t> bytes(limited_keys.size() + limited_results.size(), 0);
    for (size_t g = 0; g < groups; ++g) {
      std::vector<int64_t> sizes;
      for (int k : limited_keys) {
        const ColumnView& source = *grouped.key_sources[static_cast<size_t>(k)][grouped.source_of[g]];
        sizes.push_back(source.is_valid(grouped.rows[g]) ? value_size(source, grouped.rows[g]) : 0);
      }
      for (const Accumulator* accumulator : limited_results) sizes.push_back(accumulator->output_bytes(g));
      bool fits = true;
      for (size_t c = 0; c < sizes.size(); ++c) fits = fits && bytes[c] + sizes[c] <= kMaxBinaryBytes;
      if (!fits) {
        bounds.push_back(g);
        std::fill(bytes.begin(), bytes.end(), 0);
      }
      for (size_t c = 0; c < sizes.size(); ++c) bytes[c] += sizes[c];
    }
  }
  bounds.push_back(groups);
  return bounds;
}

AggregateResult assemble(const TableView& input, const std::vector<std::string>& keys, const Plan& plan,
                         Grouped& grouped) {
  const BatchView& schema = input.first();
  const size_t groups = grouped.rows.size();
  AggregateResult result;
  for (size_t k = 0; k < plan.key_columns.size(); ++k) result.columns.push_back({keys[k], plan.key_columns[k], false, ""});
  for (const ResultPlan& output : plan.results) {
    const PrimitiveOp& op = plan.primitives[static_cast<size_t>(output.primitive)];
    ResultColumn column{output.name, -1, false, ""};
    switch (output.kind) {
      case ResultKind::kCount:
      case ResultKind::kMean:
        column.format = output.kind == ResultKind::kCount ? "l" : "g";
        break;
      case ResultKind::kState:
      case ResultKind::kSum:
        if (op.kind == Primitive::kCount || op.kind == Primitive::kCountAll) {
          column.format = "l";
        } else if (op.kind == Primitive::kSum) {
          const bool state = output.kind == ResultKind::kState;
          column.format = op.sum_kind == SumKind::kFloat  ? "g"
                          : op.sum_kind == SumKind::kInt ? (state ? decimal_format(0) : "l")
                                                          : decimal_format(op.scale);
        } else {
          column.type_of_input = op.input;
          column.dictionary_value = schema.columns[static_cast<size_t>(op.input)].layout == Layout::kDictionary;
        }
        break;
      case ResultKind::kExtreme:
        column.type_of_input = op.input;
        column.dictionary_value = schema.columns[static_cast<size_t>(op.input)].layout == Layout::kDictionary;
        break;
    }
    result.columns.push_back(column);
  }

  const std::vector<size_t> bounds = piece_bounds(input, plan, grouped, groups);
  for (size_t piece = 0; piece + 1 < bounds.size(); ++piece) {
    const size_t begin = bounds[piece];
    const size_t end = bounds[piece + 1];
    const int64_t count = static_cast<int64_t>(end - begin);
    std::vector<OutputArray> columns;
    for (size_t k = 0; k < plan.key_columns.size(); ++k) {
      const bool large = schema.columns[static_cast<size_t>(plan.key_columns[k])].layout == Layout::kLargeBinary;
      columns.push_back(gather_rows(grouped.key_sources[k], grouped.source_of.data() + begin, grouped.rows.data() + begin,
                                    count, large));
    }
    for (const ResultPlan& output : plan.results) {
      const Accumulator& accumulator = *grouped.accumulators[static_cast<size_t>(output.primitive)];
      switch (output.kind) {
        case ResultKind::kState: columns.push_back(accumulator.state(begin, end)); break;
        case ResultKind::kMean:
          columns.push_back(divide(accumulator, *grouped.accumulators[static_cast<size_t>(output.count)], begin, end));
          break;
        default: columns.push_back(accumulator.result(begin, end)); break;
      }
    }
    result.batches.push_back(make_struct(count, std::move(columns)));
  }
  result.stats = grouped.stats;
  result.stats.groups = static_cast<int64_t>(groups);
  return result;
}

// count(v) of a column whose values no kernel reads (nested, view types, null type): a bool view
// with v's validity, which every strategy can carry and count. `buffers` keeps zero bitmaps alive.
ColumnView count_proxy(const ColumnView& column, std::vector<std::shared_ptr<uint8_t>>* buffers) {
  ColumnView proxy = column;
  proxy.layout = Layout::kBool;
  proxy.format = "b";
  proxy.byte_width = 0;
  proxy.dictionary.reset();
  proxy.dictionary_array = nullptr;
  if (column.null_type || !column.has_nulls) {
    const int64_t bytes = (column.offset + column.length + 7) / 8;
    buffers->push_back(allocate_buffer(bytes));
    std::memset(buffers->back().get(), 0, static_cast<size_t>(bytes));
    proxy.values = buffers->back().get();
    if (column.null_type) {  // every row is null
      proxy.has_nulls = true;
      proxy.validity = proxy.values;
    }
  } else {
    proxy.values = column.validity;
  }
  proxy.null_type = false;
  return proxy;
}

// Groups per radix partition the strategy aims for: the partition's table and accumulators then stay
// in the per-core caches.
constexpr double kGroupsPerRadixPartition = 4096;
constexpr uint32_t kMinRadixPartitions = 16;
constexpr uint32_t kMaxRadixPartitions = 256;
constexpr int64_t kSampleRows = 1 << 16;
// Below this many distinct keys in the sample, per-morsel tables are small and merging them is cheap.
constexpr size_t kMorselStrategyMaxGroups = 4096;

}  // namespace

AggregateResult aggregate(const TableView& table, const std::vector<std::string>& keys,
                          const std::vector<AggregateSpec>& aggregations, AggregateStage stage,
                          MorselExecutor* executor, int64_t morsel_bytes) {
  const Plan plan = make_plan(table.first(), keys, aggregations, stage);
  TableView proxied;
  std::vector<std::shared_ptr<uint8_t>> proxy_buffers;
  for (const PrimitiveOp& op : plan.primitives) {
    if (op.kind != Primitive::kCount || table.first().columns[static_cast<size_t>(op.input)].layout != Layout::kUnsupported) {
      continue;
    }
    if (proxied.batches.empty()) proxied = table;
    for (BatchView& batch : proxied.batches) {
      ColumnView& column = batch.columns[static_cast<size_t>(op.input)];
      column = count_proxy(column, &proxy_buffers);
    }
  }
  const TableView& input = proxied.batches.empty() ? table : proxied;
  const BatchView& schema = input.first();
  if (input.num_rows >= static_cast<int64_t>(UINT32_MAX)) {
    throw InvalidArgument("aggregate supports fewer than 2^32 rows per call, got " + std::to_string(input.num_rows));
  }
  const KernelRunner runner(executor, morsel_bytes);
  std::vector<int> used_columns = plan.key_columns;
  Accumulators prototypes;
  for (const PrimitiveOp& op : plan.primitives) {
    prototypes.push_back(make_accumulator(op, schema, stage));
    if (op.input >= 0) used_columns.push_back(op.input);
  }
  for (int column : used_columns) input.require_one_dictionary(column);
  const Hashers hashers = make_hashers(input, plan.key_columns, kAggregateHashSeed);
  const double row_bytes = estimated_row_bytes(input, used_columns);

  const int64_t sample_rows = std::min(input.num_rows, kSampleRows);
  const size_t sampled_groups = sample_groups(input, plan, hashers, sample_rows);
  Grouped grouped;
  if (sampled_groups <= kMorselStrategyMaxGroups) {
    grouped = aggregate_by_morsels(input, plan, hashers, prototypes, runner, row_bytes);
  } else {
    // Extrapolate the sample's distinct ratio to the whole input (an overestimate when keys repeat
    // beyond the sample, which only costs a few more, smaller partitions).
    const double estimated_groups = static_cast<double>(sampled_groups) * input.num_rows / sample_rows;
    uint32_t radix_partitions = kMinRadixPartitions;
    while (radix_partitions < kMaxRadixPartitions && radix_partitions * kGroupsPerRadixPartition < estimated_groups) {
      radix_partitions *= 2;
    }
    grouped = aggregate_by_radix(input, plan, hashers, prototypes, runner, row_bytes, radix_partitions);
  }
  return assemble(input, keys, plan, grouped);
}

}  // namespace sabot
