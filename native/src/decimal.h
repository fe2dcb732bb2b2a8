// Exact SQL +, - and * of decimal128 values, computed on the unscaled integers in 128 bits.
// An operand is a decimal128 column or a constant, each with its scale. The result has the given
// precision and scale: for + and - the scale of the operand with more decimals (the other is
// rescaled), for * the sum of both scales (the exact product); other scales throw InvalidArgument.
// A row that is NULL in either operand is NULL; a result whose magnitude reaches 10^precision (or
// does not fit in 128 bits on the way) throws Overflow.
#pragma once

#include <cstdint>

#include "arrow_data.h"

namespace sabot {

enum class DecimalOp : int { kAdd = 0, kSubtract = 1, kMultiply = 2 };

struct DecimalOperand {
  const ColumnView* column = nullptr;  // null: the constant
  uint64_t constant_low = 0;           // the constant's unscaled value, two's complement
  int64_t constant_high = 0;
  bool constant_null = false;
  int scale = 0;
};

OutputArray decimal_arithmetic(DecimalOp op, const DecimalOperand& a, const DecimalOperand& b, int64_t length, int precision,
                               int scale);

}  // namespace sabot
