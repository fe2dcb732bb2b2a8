// Hash group-by aggregation with a partial -> merge -> final form.
//
// Semantics are SQL's (duckdb is the reference in the tests):
//   count(v)     non-null values of v, any column type (0 for a group without any)
//   count_all    rows, nulls included (count(*)); its column is "" (none) or any existing column
//   sum(v)       integers (signed or unsigned, any width) -> int64, Overflow if the total does not fit;
//                floats -> float64; decimal128(p, s) -> decimal128(38, s), summed exactly in 128 bits,
//                Overflow beyond 38 digits
//   mean(v)      float64: integers and decimals are summed exactly in 128 bits, then divided
//   min/max(v)   integers, floats, decimal128, temporal types, bool, string/binary (unsigned byte
//                order, output keeps the input type), dictionaries (decoded values; output is the
//                dictionary's value type)
// Nulls are skipped; a group without a non-null value gives null for sum, mean, min and max. Floats
// follow SQL: NaN is greater than every other value, so max of a group holding a NaN is NaN and min
// ignores NaN unless every non-null value is NaN; sum and mean propagate NaN. Keys: null keys form
// one group, -0.0 groups with 0.0 and all NaNs form one group (the hash's equality, hash.h).
//
// Stages:
//   kComplete  input rows -> final values                          (one-shot aggregate)
//   kPartial   input rows -> the key columns (names kept) and one state column per primitive state.
//              Aggregations share states: sum(v) and mean(v) share one sum of v, count(v) and mean(v)
//              one count of v, every count_all one row count; each shared state appears once. The
//              state columns' names and types are this file's business (state_name in aggregate.cc)
//              and derive from the input's schema alone, so the partial schema of an empty input is
//              the schema of every partial.
//   kFinal     concatenated partial rows (the batches of every producer) -> final values: counts and
//              sums add up, mins and maxes reduce, mean = summed sum / summed count.
//
// Execution: the rows of a sample decide between two strategies. Few groups: every morsel builds its
// own small hash table (cache resident) and the per-morsel tables are merged. Many groups: rows are
// first radix-partitioned by the high bits of their hash (partition.h), so each partition's groups
// are disjoint and its table fits in cache; partitions are aggregated in parallel and concatenated.
// Keys are hashed with kAggregateHashSeed, not the exchange's seed (hash.h says why).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

enum class AggregateStage { kPartial, kFinal, kComplete };

struct AggregateSpec {
  std::string column;       // input column; kFinal uses it to find the column's states
  std::string function;     // count, count_all, sum, min, max or mean
  std::string output_name;  // the final column's name
};

// How the Python layer types a result column: like input column `type_of_input` (its dictionary's
// value type if `dictionary_value`), or, when that is -1, by `format`: "l" int64, "g" float64 or
// "d:38,S" decimal128(38, S).
struct ResultColumn {
  std::string name;
  int type_of_input = -1;
  bool dictionary_value = false;
  std::string format;
};

// What the execution did (for tests and diagnostics; never affects results).
struct AggregateStats {
  std::string strategy;                 // "morsel" (per-morsel tables) or "radix"
  uint32_t radix_partitions = 0;        // radix: partitions the rows were split into
  uint32_t radix_partitions_used = 0;   // radix: partitions that received at least one row
  int64_t groups = 0;
};

struct AggregateResult {
  // Struct arrays: key columns first, then results in aggregation order (kPartial: the states). More
  // than one only when a string column with 32-bit offsets would exceed 2 GiB in one array.
  std::vector<OutputArray> batches;
  std::vector<ResultColumn> columns;
  AggregateStats stats;
};

AggregateResult aggregate(const TableView& input, const std::vector<std::string>& keys,
                          const std::vector<AggregateSpec>& aggregations, AggregateStage stage,
                          MorselExecutor* executor, int64_t morsel_bytes);

}  // namespace sabot
