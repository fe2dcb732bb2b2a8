#include "decimal.h"

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "errors.h"

namespace sabot {
namespace {

using Int128 = __int128;

constexpr int kMaxPrecision = 38;

Int128 power_of_ten(int exponent) {
  Int128 value = 1;
  for (int i = 0; i < exponent; ++i) value *= 10;
  return value;
}

Int128 from_words(uint64_t low, int64_t high) {
  return static_cast<Int128>((static_cast<unsigned __int128>(static_cast<uint64_t>(high)) << 64) | low);
}

Int128 load_decimal(const ColumnView& column, int64_t row) {
  const uint8_t* address = column.values + 16 * (column.offset + row);
  return from_words(load_unaligned<uint64_t>(address), load_unaligned<int64_t>(address + 8));
}

void store_decimal(uint8_t* address, Int128 value) {
  const auto bits = static_cast<unsigned __int128>(value);
  const uint64_t low = static_cast<uint64_t>(bits);
  const uint64_t high = static_cast<uint64_t>(bits >> 64);
  std::memcpy(address, &low, 8);
  std::memcpy(address + 8, &high, 8);
}

bool fits_int64(Int128 value) { return value >= INT64_MIN && value <= INT64_MAX; }

// x * y, exact; false when it does not fit in 128 bits. Values of at most 18 digits (most decimals)
// take one 64 x 64 -> 128-bit multiply, which cannot overflow; only larger ones need the checked one.
bool multiply_exact(Int128 x, Int128 y, Int128* result) {
  if (fits_int64(x) && fits_int64(y)) {
    *result = static_cast<Int128>(static_cast<int64_t>(x)) * static_cast<int64_t>(y);
    return true;
  }
  return !__builtin_mul_overflow(x, y, result);
}

void check_operand(const DecimalOperand& operand, int64_t length) {
  if (operand.column == nullptr) return;
  if (!operand.column->is_decimal128()) throw UnsupportedType("decimal arithmetic: column " + operand.column->name + " is not decimal128");
  if (operand.column->length != length) throw InvalidArgument("decimal arithmetic: operands of different lengths");
}

}  // namespace

OutputArray decimal_arithmetic(DecimalOp op, const DecimalOperand& a, const DecimalOperand& b, int64_t length, int precision,
                               int scale) {
  check_operand(a, length);
  check_operand(b, length);
  if (precision < 1 || precision > kMaxPrecision || scale < 0 || scale > precision) {
    throw InvalidArgument("decimal arithmetic: result type decimal128(" + std::to_string(precision) + ", " + std::to_string(scale) +
                          ") is not valid");
  }
  const bool multiply = op == DecimalOp::kMultiply;
  const bool scale_ok = multiply ? scale == a.scale + b.scale : scale == std::max(a.scale, b.scale);
  if (!scale_ok) throw InvalidArgument("decimal arithmetic: the result scale is not the exact one");
  // + and -: both operands at the result's scale
  const Int128 a_factor = multiply ? 1 : power_of_ten(scale - a.scale);
  const Int128 b_factor = multiply ? 1 : power_of_ten(scale - b.scale);
  const Int128 limit = power_of_ten(precision);
  const Int128 a_constant = from_words(a.constant_low, a.constant_high);
  const Int128 b_constant = from_words(b.constant_low, b.constant_high);

  OutputArray out;
  out.length = length;
  auto values = allocate_buffer(16 * length);
  std::vector<uint8_t> valid(static_cast<size_t>(length), 1);
  bool overflow = false;
  for (int64_t row = 0; row < length; ++row) {
    const bool row_valid = (a.column ? a.column->is_valid(row) : !a.constant_null) && (b.column ? b.column->is_valid(row) : !b.constant_null);
    Int128 result = 0;
    if (row_valid) {
      Int128 x = a.column ? load_decimal(*a.column, row) : a_constant;
      Int128 y = b.column ? load_decimal(*b.column, row) : b_constant;
      if (multiply) {
        overflow |= !multiply_exact(x, y, &result);
      } else {
        if (a_factor != 1) overflow |= !multiply_exact(x, a_factor, &x);
        if (b_factor != 1) overflow |= !multiply_exact(y, b_factor, &y);
        overflow |= op == DecimalOp::kAdd ? __builtin_add_overflow(x, y, &result) : __builtin_sub_overflow(x, y, &result);
      }
      overflow |= result >= limit || result <= -limit;
    } else {
      valid[static_cast<size_t>(row)] = 0;
    }
    store_decimal(values.get() + 16 * row, result);
  }
  if (overflow) {
    throw Overflow("overflow: a result does not fit in decimal128(" + std::to_string(precision) + ", " + std::to_string(scale) + ")");
  }
  out.buffers.push_back(nullptr);
  set_validity_from_bytes(&out, valid.data(), length);
  out.buffers.push_back(std::move(values));
  return out;
}

}  // namespace sabot
