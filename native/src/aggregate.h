// Hash group-by aggregation with a partial -> merge -> final form.
//
// Semantics follow pyarrow.Table.group_by: count counts non-null values; sum, min, max and mean skip
// nulls and give null for a group without any non-null value; null keys form one group; integer sums
// are int64 (overflow raises Overflow), float sums float64; mean is float64.
//
// Stages:
//   kComplete  input rows -> final values                      (one-shot aggregate)
//   kPartial   input rows -> state columns per aggregation:
//                count -> <as>__count; sum -> <as>__sum; min -> <as>__min; max -> <as>__max;
//                mean -> <as>__sum and <as>__count
//              Key columns keep their names, so partial results can be hash-partitioned on the keys,
//              shuffled, concatenated and merged.
//   kFinal     concatenated partial rows -> final values (counts and sums are summed, min of mins,
//              max of maxes, mean = summed sums / summed counts).
//
// Execution: the rows of a sample decide between two strategies. Few groups: every morsel builds its
// own small hash table (cache resident) and the per-morsel tables are merged. Many groups: rows are
// first radix-partitioned by the high bits of their hash (partition.h), so each partition's groups
// are disjoint and its table fits in cache; partitions are aggregated in parallel and concatenated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arrow_data.h"
#include "executor.h"

namespace sabot {

enum class AggregateStage { kPartial, kFinal, kComplete };

struct AggregateSpec {
  std::string column;       // input column (kComplete, kPartial); unused by kFinal
  std::string function;     // count, sum, min, max or mean
  std::string output_name;  // final column name and prefix of the state columns
};

// How the Python layer types a result column: like input column `type_of_input`, or, when that is
// -1, the primitive `format` ("l" int64 or "g" float64).
struct ResultColumn {
  std::string name;
  int type_of_input = -1;
  std::string format;
};

struct AggregateResult {
  OutputArray batch;  // a struct array: key columns first, then results in aggregation order
  std::vector<ResultColumn> columns;
};

AggregateResult aggregate(const BatchView& input, const std::vector<std::string>& keys,
                          const std::vector<AggregateSpec>& aggregations, AggregateStage stage,
                          MorselExecutor* executor, int64_t morsel_bytes);

}  // namespace sabot
