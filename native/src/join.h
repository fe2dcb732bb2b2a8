// Hash equi-join of two tables, with SQL's key semantics: a row with a NULL in any key column never
// matches; floats compare as grouping does (-0.0 = 0.0, NaN = NaN); dictionary keys compare by their
// decoded values; string keys equal their large_string form (hash.h's values_equal).
//
// One side is the build side (its rows go into a hash table of its distinct keys, each with the list of
// its rows); the other side is probed against it row by row. Which side builds does not change the rows
// of the result, only their order: the caller builds on the smaller side.
//
// Output rows (left columns, then right columns; semi and anti joins give left columns only):
//   kInner  every matching pair
//   kLeft   every matching pair, and each left row without a match, with NULLs for the right columns
//   kRight  likewise for right rows
//   kFull   both
//   kSemi   each left row with at least one match, once
//   kAnti   each left row without a match (rows with a NULL key included)
// Pairs come in probe order (and, for one probe row, in build order); unmatched build rows, and the
// rows of a semi or anti join built on the left, come in build order after them.
#pragma once

#include <string>
#include <vector>

#include "arrow_data.h"

namespace sabot {

enum class JoinKind { kInner, kLeft, kRight, kFull, kSemi, kAnti };

// The result as struct arrays with the columns described above; more than one only where a string
// column with 32-bit offsets would exceed 2 GiB in one array. Key columns must have the same type on
// both sides (string and large_string count as one); every column of a dictionary type must have one
// dictionary across the chunks of its table. Throws InvalidArgument for keys that do not pair up and
// UnsupportedType for columns it cannot read or carry (nested and view types).
std::vector<OutputArray> hash_join(const TableView& left, const std::vector<std::string>& left_keys,
                                   const TableView& right, const std::vector<std::string>& right_keys, JoinKind kind,
                                   bool build_right);

}  // namespace sabot
